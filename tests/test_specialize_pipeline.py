"""`sera specialize` end to end with a scripted teacher and the tiny student on a real repository."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GIT_IDENTITY, git, tool_call
from sera.agent.workcopy import snapshot_commit
from sera.config import load_settings
from tiny_models import build_tiny_model
from sera.paths import RunInUse
from sera.specialize.run import new_run, resume_run, run_stages, start_run

CALC = 'def add(a, b):\n    """Return the sum of a and b."""\n    return a - b\n\n\ndef scale(values, factor):\n    return [v * factor for v in values]\n'

T1 = [tool_call("str_replace_editor", command="view", path="calc.py"),
      "add subtracts.\n" + tool_call("str_replace_editor", command="str_replace", path="calc.py",
                                     old_str="return a - b", new_str="return a + b"),
      tool_call("submit"), tool_call("submit")]
ISSUE = "add(2, 3) returns -1 instead of 5.\n\nExpected: 5."
T2 = [tool_call("str_replace_editor", command="str_replace", path="calc.py",
                old_str="return a - b", new_str="return a + b  # the sum"),
      tool_call("submit"), tool_call("submit")]


def teacher_script(path: Path, t1=T1) -> str:
    # The first match wins, and the reviewer's and issue writer's prompts quote rollout 1.
    path.write_text(json.dumps({"conversations": [
        {"when": "Answer yes or no.", "replies": ["Yes, the change fixes add."]},
        {"when": "You write issue reports", "replies": [ISSUE]},
        {"when": "add(2, 3) returns -1", "replies": T2},
        {"when": "Something may be wrong around", "replies": t1}]}))
    return f"scripted:{path}"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A repository with two functions and a short history of small commits."""
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "calc.py").write_text(CALC.replace("    return a - b\n", "    return a-b\n"))
    git(root, "add", "-A")
    commit(root, "calc: add and scale", day=1)
    (root / "calc.py").write_text(CALC)
    commit(root, "Format add() the way the rest of the file is formatted", day=2)
    (root / "calc.py").write_text(CALC.replace("v * factor", "factor * v"))
    commit(root, "scale: multiply factor first, as the docs describe it", day=3)
    return root


def commit(root: Path, message: str, day: int) -> None:
    """Commit everything with a committer date `day` days into 2024 (history is split by date)."""
    date = f"2024-01-{day:02d}T12:00:00Z"
    subprocess.run(["git", "commit", "-qam", message], cwd=root, check=True,
                   env={**os.environ, **GIT_IDENTITY, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date})


def flags(tmp_path: Path, **extra) -> dict:
    return {"model.spec": f"transformers:{build_tiny_model(tmp_path / 'tiny')}",
            "specialize.teacher": teacher_script(tmp_path / "teacher.json"),
            "specialize.functions": 2, "specialize.concurrency": 1, "model.max_tokens": 256,
            "agent.max_steps": 6, "specialize.context_tokens": 8192, "train.epochs": 2,
            "train.max_steps": 4, **extra}


def start(project: Path, tmp_path: Path, **extra):
    settings = load_settings(project, flags(tmp_path, **extra))
    # The reranker stage has tests of its own (test_rerank_stage.py); here it would only add time.
    run = new_run(project, settings, snapshot_commit(project),
                  {"no_reranker": True})
    run.say = lambda message: None
    return run


def test_svg_run_produces_the_expected_data_and_adapter(project, tmp_path):
    run = start(project, tmp_path)
    try:
        run_stages(run)
    finally:
        run.close()
    records = [json.loads(p.read_text()) for p in sorted((run.dir / "rollouts").glob("*.json"))]
    statuses = sorted(r["status"] for r in records)
    assert statuses == ["accepted", "duplicate_p1"]
    accepted = next(r for r in records if r["status"] == "accepted")
    assert accepted["recall"] == 0.5  # P2 keeps "-return a - b" but writes its own "+" line
    assert accepted["issue"] == ISSUE
    assert accepted["attempts"][0]["self_check"] is True
    assert "+    return a + b" in accepted["p1"] and "# the sum" in accepted["p2"]

    history = json.loads((run.dir / "history" / "tasks.json").read_text())
    assert [t["message"].split("\n")[0] for t in history["train"]] == [
        "Format add() the way the rest of the file is formatted"]
    assert [t["message"].split("\n")[0] for t in history["heldout"]] == [
        "scale: multiply factor first, as the docs describe it"]

    rows = [json.loads(line) for line in (run.dir / "dataset.jsonl").read_text().splitlines()]
    meta = [json.loads(line) for line in (run.dir / "dataset-meta.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert sorted((m["source"], m["role"]) for m in meta) == [
        ("history", None), ("svg", "t1"), ("svg", "t2")]
    assert all(m["truncation_ratio"] == 1.0 for m in meta)
    assert all(row["messages"][0]["role"] == "system" for row in rows)

    stats = run.stage("train")["stats"]
    assert stats["heldout_rows"] == 1 and stats["heldout_nll_adapter"] is not None
    card = json.loads((Path(stats["adapter"]) / "card.json").read_text())
    assert card["svg"]["accepted"] == 1 and card["heldout"]["rows"] == 1
    assert card["accept_rate"] == 0.5 and card["student"] == run.settings.model.spec
    assert (Path(stats["adapter"]) / "loss.png").is_file()
    report = json.loads((run.dir / "report.json").read_text())
    assert report["cost"]["accepted"] == 1 and report["cost"]["functions"] == 2
    assert run.manifest["status"] == "done"
    assert_solve_uses_the_new_adapter(project, run.settings.model.spec, stats["adapter"])


def assert_solve_uses_the_new_adapter(project: Path, spec: str, adapter: str) -> None:
    from sera.agent.solve import solve
    from sera.agent.trajectory import Trajectory
    from sera.models.registry import load_model
    settings = load_settings(project, {"model.spec": spec, "agent.max_steps": 1,
                                       "solve.candidates": 1, "model.max_tokens": 16})
    model = load_model(spec, settings.model)
    try:
        result = solve(project, "make add return the sum", settings, model)
    finally:
        model.close()
    trajectory = Trajectory.load(result.candidates[0].trajectory)
    assert trajectory.meta["adapter"] == adapter and trajectory.steps == 1


def test_a_no_train_run_goes_without_training_from_any_front_end(project, tmp_path):
    """The rule lives in the run, not in the CLI: the language server and the TUI resume runs
    with a plain run_stages(run), and a run started with --no-train must still not train."""
    run = start(project, tmp_path)
    run.manifest["options"]["no_train"] = True
    try:
        run_stages(run)
    finally:
        run.close()
    assert [run.stage(n)["status"] for n in ("train", "reranker", "policy")] == ["pending"] * 3
    assert run.manifest["status"] == "done" and run.stage("report")["status"] == "done"
    assert not list((project / ".sera" / "adapters").glob("*"))


def test_truncation_cuts_the_longest_trajectory_and_the_threshold_drops_it(project, tmp_path):
    from sera.specialize.student import student_folder, token_counter
    run = start(project, tmp_path)
    run_stages(run, skip=("train",))
    count = token_counter(student_folder(run.settings.model.spec))
    rows = [json.loads(line)["messages"] for line in (run.dir / "dataset.jsonl").read_text().splitlines()]
    sizes = sorted(sum(count(m["content"]) + 8 for m in row) for row in rows)
    # A context one token short of the longest row: that row is cut after an earlier assistant turn.
    run.settings.specialize.context_tokens = sizes[-1] - 1
    run.settings.specialize.truncation_threshold = 0.0
    run_stages(run, only="dataset")
    ratios = sorted(json.loads(line)["truncation_ratio"]
                    for line in (run.dir / "dataset-meta.jsonl").read_text().splitlines())
    assert ratios[:2] == [1.0, 1.0] or ratios[1:] == [1.0, 1.0]
    cut = min(ratios)
    assert 0 < cut < 1
    run.settings.specialize.truncation_threshold = 0.95  # SERA's default drops the cut row
    run_stages(run, only="dataset")
    assert run.stage("dataset")["stats"]["kept"] == 2
    assert run.stage("dataset")["stats"]["truncated_too_much"] == 1
    run.close()


def test_resume_after_kill_finishes_without_repeating_finished_functions(project, tmp_path):
    slow_t1 = [tool_call("bash", command="sleep 1.5")] + T1
    spec = teacher_script(tmp_path / "slow.json", t1=slow_t1)
    args = ["--model", f"transformers:{build_tiny_model(tmp_path / 'tiny')}", "--teacher", spec,
            "--functions", "2", "--concurrency", "1", "--max-steps", "7", "--no-train"]
    env = {**os.environ, **GIT_IDENTITY, "SERA_SPECIALIZE_HISTORY_TASKS": "0"}
    cmd = [sys.executable, "-m", "sera.cli", "specialize", str(project)]
    proc = subprocess.Popen(cmd + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    records = project / ".sera" / "runs"
    deadline = time.time() + 120
    while not list(records.glob("*/rollouts/00000.json")) and time.time() < deadline:
        time.sleep(0.1)
    first = next(records.glob("*/rollouts/00000.json"))
    before = first.read_bytes()
    os.kill(proc.pid, signal.SIGKILL)  # mid-way through the second function
    proc.wait()
    assert not (first.parent / "00001.json").exists()
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert first.read_bytes() == before  # the finished function was not redone
    statuses = sorted(json.loads(p.read_text())["status"] for p in first.parent.glob("*.json"))
    assert statuses == ["accepted", "duplicate_p1"]
    manifest = json.loads((first.parent.parent / "manifest.json").read_text())
    assert manifest["stages"]["dataset"]["status"] == "done"
    # started with --no-train, resumed without it: still no training, no reranker
    assert [manifest["stages"][n]["status"] for n in ("train", "reranker", "policy")] == [
        "pending"] * 3 and manifest["status"] == "done"
    assert git(project, "worktree", "list").count("\n") == 1  # the killed run's copy was cleaned


def test_a_run_that_keeps_nothing_ends_with_the_reason_and_no_adapter(project, tmp_path):
    script = tmp_path / "no.json"
    script.write_text(json.dumps({"conversations": [
        {"when": "Answer yes or no.", "replies": ["No."]},
        {"when": "Something may be wrong around", "replies": T1}]}))
    run = start(project, tmp_path, **{"specialize.teacher": f"scripted:{script}",
                                      "specialize.history_tasks": 0})
    run_stages(run)
    run.close()
    assert run.stage("rollouts")["stats"]["no_valid_rollout1"] == 2
    assert "no adapter was trained" in run.stage("train")["stats"]["skipped"]
    assert run.manifest["status"] == "done"
    assert not (project / ".sera" / "adapters").exists()


def test_a_run_another_process_is_running_is_not_resumed_twice(project, tmp_path):
    run = start(project, tmp_path)  # holds the run, as the process running it does
    with pytest.raises(RunInUse, match=f"specialize run {run.id} is running in another sera"):
        resume_run(project, run.id)
    with pytest.raises(RunInUse):
        resume_run(project, None)  # the newest unfinished run is that one
    run.close()  # it ended (or was killed: the kernel releases the lock)
    resumed = resume_run(project, None)
    assert resumed.id == run.id
    resumed.close()


def test_functions_that_failed_are_tried_again_on_resume(project, tmp_path):
    run = start(project, tmp_path)
    run_stages(run, only="functions")
    run_stages(run, only="history")
    (run.dir / "rollouts").mkdir()
    failed = {"status": "failed", "reason": "cannot reach the teacher", "p1": None}
    (run.dir / "rollouts" / "00000.json").write_text(json.dumps(failed))
    run_stages(run, only="rollouts")
    run.close()
    redone = json.loads((run.dir / "rollouts" / "00000.json").read_text())
    assert redone["status"] in ("accepted", "duplicate_p1")


def test_concurrent_rollouts_and_money_in_the_report(project, tmp_path):
    run = start(project, tmp_path, **{"specialize.concurrency": 2, "specialize.history_tasks": 0,
                                      "specialize.price_per_million_in": 1.0,
                                      "specialize.price_per_million_out": 2.0})
    run_stages(run, skip=("train",))
    run.close()
    records = [json.loads(p.read_text()) for p in (run.dir / "rollouts").glob("*.json")]
    assert sorted(r["status"] for r in records) == ["accepted", "duplicate_p1"]
    cost = json.loads((run.dir / "report.json").read_text())["cost"]
    tokens_in = sum(r["tokens_in"] for r in records)
    tokens_out = sum(r["tokens_out"] for r in records)
    assert cost["money"] == round((tokens_in * 1.0 + tokens_out * 2.0) / 1e6, 4)
    assert cost["money_per_accepted"] == cost["money"]


def test_a_preset_sets_training_settings_and_says_so_and_older_runs_keep_theirs(project):
    run = start_run(project, "demo", {"specialize.functions": 1}, {})
    try:
        assert run.settings.train.epochs == 1 and run.settings.sources["train.epochs"] == "preset demo"
        assert run.settings.specialize.functions == 1  # an explicit flag wins over the preset
        assert run.manifest["settings"]["train.epochs"] == 1
        # a run from before training knobs were settings kept them as options
        for key in [k for k in run.manifest["settings"] if k.startswith("train.")]:
            del run.manifest["settings"][key]
        run.manifest["options"]["train"] = {"epochs": 3, "lr": 0.001}
        run.save()
    finally:
        run.close()
    resumed = resume_run(project, run.id)
    try:
        assert resumed.settings.train.epochs == 3 and resumed.settings.train.lr == 0.001
    finally:
        resumed.close()

