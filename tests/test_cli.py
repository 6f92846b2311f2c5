"""The `sera` command as a user runs it: a real process, real repository, real git."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import FIX_SCRIPT_REPLIES, GIT_IDENTITY, git, user_state, write_script

SERA = [sys.executable, "-m", "sera.cli"]


def sera(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SERA, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **GIT_IDENTITY, **(env or {})})


def test_help_and_version_do_not_load_heavy_libraries():
    code = ("import sys, sera.cli; sera.cli.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'transformers', 'xllamacpp', 'peft', 'rich', "
            "'textual', 'pygls') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    version = subprocess.run([*SERA, "--version"], capture_output=True, text=True)
    assert re.fullmatch(r"sera 0\.\d+\.\d+(\+[0-9a-f]{12}(\.dirty)?)?\n", version.stdout)


def test_the_front_ends_take_the_scaffold_flag(tmp_path):
    for front_end in ("lsp", "tui"):
        out = sera(tmp_path, front_end, "--help")
        assert out.returncode == 0 and "--scaffold {auto,agent,guided}" in out.stdout
    outside = sera(tmp_path, "tui")  # the TUI needs a repository; the language server does not
    assert outside.returncode == 1 and "run sera inside a git repository" in outside.stderr


def test_solve_apply_undo_through_the_cli(repo, tmp_path):
    spec = write_script(tmp_path / "s.json", FIX_SCRIPT_REPLIES)
    before = user_state(repo)
    out = sera(repo, "solve", "--model", spec, "-n", "1", "add is wrong")
    assert out.returncode == 0, out.stderr
    assert "+    return a + b" in out.stdout
    assert "candidates are ordered by filters and votes" in out.stdout and "saved in" in out.stdout
    assert user_state(repo) == before
    runs = sera(repo, "runs")
    assert "1 candidates (1 with changes)" in runs.stdout
    applied = sera(repo, "apply")
    assert applied.returncode == 0 and "calc.py" in applied.stdout
    assert "return a + b" in (repo / "calc.py").read_text()
    assert sera(repo, "undo").returncode == 0
    assert user_state(repo) == before


def test_errors_are_one_line_and_say_what_to_do(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    out = sera(plain, "solve", "x")
    assert out.returncode == 1 and "not a git repository" in out.stderr
    assert out.stderr.count("\n") == 1

    git(plain, "init", "-q")
    out = sera(plain, "solve", "x")
    assert out.returncode == 1 and "no commits" in out.stderr and "git commit" in out.stderr


def test_bad_input_leaves_nothing_behind(repo, tmp_path):
    before = user_state(repo)
    cases = [
        (["solve", "   "], "task is empty"),
        (["solve", "--model", "llamacpp:/nowhere/model.gguf", "x"], "/nowhere/model.gguf"),
        (["solve", "--model", "nosuch:thing", "x"], "valid backends"),
        (["solve", "--model", "openai:http://127.0.0.1:9/v1#m", "x"], "cannot reach"),
        (["solve", "--adapter", "nope", "--model", "scripted:/dev/null", "x"], "adapter 'nope' not found in"),
        (["apply", "nosuchrun"], "no solve runs"),
        (["undo"], "nothing to undo"),
        (["solve", "--max-steps", "0", "x"], "agent.max_steps = 0 (flag --max-steps) must be at least 1"),
        (["solve", "--candidates", "-2", "x"], "solve.candidates = -2"),
        (["specialize", ".", "--recall-threshold", "1.5"], "between 0 and 1"),
        (["eval", "bogusrun"], "run `sera specialize .` first"),
        (["specialize", ".", "--resume", "bogus"], "sera specialize ."),
        (["solve", "--model", "openai:http://127.0.0.1:9/v1#m", "x"], "or fix the spec that names it"),
    ]
    for args, message in cases:
        out = sera(repo, *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert out.stderr.splitlines()[-1].startswith("sera: error:"), out.stderr
    assert user_state(repo) == before
    assert not (repo / ".sera" / "runs").exists() or not any((repo / ".sera" / "runs").iterdir())
    assert git(repo, "worktree", "list").count("\n") == 1


def test_the_repository_may_follow_the_command(repo, tmp_path):
    out = sera(tmp_path, "runs", "-C", str(repo))
    assert out.returncode == 0 and "no runs yet" in out.stdout
    out = sera(tmp_path, "-C", str(tmp_path / "nowhere"), "config", "-C", str(repo))
    assert out.returncode == 0  # given after the command, it wins


def test_config_shows_sources(repo):
    (repo / ".sera").mkdir(exist_ok=True)
    (repo / ".sera" / "config.toml").write_text('[solve]\ncandidates = 5\n')
    out = sera(repo, "config", env={"SERA_AGENT_MAX_STEPS": "9"})
    assert "solve.candidates = 5  [.sera/config.toml]" in out.stdout
    assert "agent.max_steps = 9  [env SERA_AGENT_MAX_STEPS]" in out.stdout
    assert "model.spec = 'embedded'  [default]" in out.stdout
    (repo / ".sera" / "config.toml").write_text('[solve]\ncandidatez = 5\n')
    out = sera(repo, "config")
    assert out.returncode == 1 and "unknown setting solve.candidatez" in out.stderr


def test_training_knobs_are_settings_like_any_other(repo):
    """One settings system: LoRA, reranker and policy training show in `sera config` with their
    source; a field that follows another setting is refused with the one to set."""
    (repo / ".sera").mkdir(exist_ok=True)
    (repo / ".sera" / "config.toml").write_text(
        '[train]\nepochs = 1\ntarget_modules = ["q_proj", "v_proj"]\n[rerank_train]\nlr = 0.001\n')
    out = sera(repo, "config", env={"SERA_POLICY_NUM_GENERATIONS": "6"})
    assert "train.epochs = 1  [.sera/config.toml]" in out.stdout
    assert "train.target_modules = ['q_proj', 'v_proj']  [.sera/config.toml]" in out.stdout
    assert "rerank_train.lr = 0.001  [.sera/config.toml]" in out.stdout
    assert "policy.num_generations = 6  [env SERA_POLICY_NUM_GENERATIONS]" in out.stdout
    assert "train.rank = 8  [default]" in out.stdout
    assert "train.max_tokens" not in out.stdout and "policy.steps" not in out.stdout
    (repo / ".sera" / "config.toml").write_text('[train]\nmax_tokens = 100\n')
    out = sera(repo, "config")
    assert out.returncode == 1
    assert "train.max_tokens in .sera/config.toml is not a setting of its own: it follows " \
           "specialize.context_tokens; set that instead" in out.stderr
    (repo / ".sera" / "config.toml").write_text('[train]\nrank = 0\n')
    out = sera(repo, "config")
    assert out.returncode == 1
    assert "setting train.rank = 0 (.sera/config.toml) must be at least 1" in out.stderr


def test_ctrl_c_removes_work_copies_and_keeps_the_run(repo, tmp_path):
    import signal
    import time

    from conftest import tool_call
    spec = write_script(tmp_path / "s.json", [tool_call("bash", command="sleep 61.25")] * 3)
    # preexec: a suite started in the background hands SIGINT down ignored; a terminal does not
    proc = subprocess.Popen([*SERA, "solve", "--model", spec, "-n", "1", "wait"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **GIT_IDENTITY},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while git(repo, "worktree", "list").count("\n") < 2 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # let the agent reach its `sleep`
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in stderr
    assert git(repo, "worktree", "list").count("\n") == 1
    orphans = subprocess.run(["pgrep", "-f", "sleep 61.25"], capture_output=True, text=True)
    assert orphans.stdout == "", "the agent's command outlived the interrupt"
    run_dir = next((repo / ".sera" / "runs").iterdir())
    manifest = (run_dir / "manifest.json").read_text()
    assert '"status": "interrupted"' in manifest
    trajectory = (run_dir / "candidates" / "0.json").read_text()
    assert '"status": "interrupted"' in trajectory


def test_guided_solve_reports_where_it_looked(repo, tmp_path):
    fix = ("calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n")
    spec = write_script(tmp_path / "g.json", [fix])
    out = sera(repo, "solve", "--model", spec, "--scaffold", "guided", "-n", "1",
               "add(2, 3) returns -1 instead of 5")
    assert out.returncode == 0, out.stderr
    assert "=== candidate 0: submitted" in out.stdout and "+    return a + b" in out.stdout
    assert "looked at calc.py:1 add (" in out.stdout


def test_a_local_model_loads_without_a_progress_bar_of_its_own(repo, tmp_path):
    """sera shows its own progress; the libraries' loading bars would garble a log or the TUI."""
    from tiny_models import build_tiny_gguf, build_tiny_model
    folder = build_tiny_model(tmp_path / "tiny")
    for model in (f"transformers:{folder}", f"transformers:{build_tiny_gguf(folder)}"):
        # a fresh cache: the GGUF is de-quantized, which transformers shows with a bar of its own
        out = sera(repo, "solve", "--model", model, "-n", "1", "--max-steps", "1", "fix add",
                   env={"SERA_CACHE_DIR": str(tmp_path / "cache")})
        assert "candidate" in out.stdout + out.stderr, out.stderr
        assert "Loading weights" not in out.stderr and "it/s" not in out.stderr
        assert "de-quantizing" not in out.stderr
