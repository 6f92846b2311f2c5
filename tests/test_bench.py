"""`sera bench` end to end: a repository with a few commits that change code and tests, a scripted
model (one candidate fixes, the other does not), the tests run for real in work copies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import git, tool_call, user_state
from sera.build import build_id
from sera.cli import main
from sera.config import load_settings
from sera.paths import RunInUse, claim_run
from sera.errors import SeraError
from sera.specialize.bench import (bootstrap_interval, find_bench, format_report, new_bench,
                                   parse_config, read_scores, run_bench, training_snapshot)
from sera.specialize.bench_tasks import failure_summary, read_junit

CALC = '''def add(a, b):
    return a - b


def scale(values, factor):
    return [v * factor for v in values]
'''
TESTS = '''from calc import scale


def test_scale():
    assert scale([1, 2], 3) == [3, 6]
'''
ADD_TEST = '''

def test_add():
    from calc import add
    assert add(2, 3) == 5
'''
FIX_ADD = "Fix add: it returned the difference instead of the sum"
NEGATE = "Add negate, which returns the value with its sign flipped"
PARSE = "Add parse_number, which reads a number from text"
PYTEST = f"{sys.executable} -m pytest -x -q"


def commit(root: Path, message: str, files: dict[str, str]) -> str:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD").strip()


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """Three tasks: a fix with a new test (test-verified), a change without tests (line recall),
    a change whose new test needs a module that is not installed (broken here); then a release
    commit, which is no task."""
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(root, "Initial version of the calculator", {"calc.py": CALC, "tests/test_calc.py": TESTS})
    commit(root, FIX_ADD, {"calc.py": CALC.replace("a - b", "a + b"),
                           "tests/test_calc.py": TESTS + ADD_TEST})
    fixed = CALC.replace("a - b", "a + b")
    commit(root, NEGATE, {"calc.py": fixed + "\n\ndef negate(x):\n    return -x\n"})
    commit(root, PARSE, {"calc.py": fixed + "\n\ndef negate(x):\n    return -x\n\n\n"
                                            "def parse_number(text):\n    return float(text)\n",
                         "tests/test_parse.py": "import not_installed_anywhere\n\n\n"
                                                "def test_parse():\n    assert True\n"})
    commit(root, "Release 1.0.0", {"calc.py": (root / "calc.py").read_text() + "\n__version__ = '1.0.0'\n"})
    return root


def script(tmp_path: Path) -> str:
    """Per task: FIX_ADD is fixed by the first candidate to run and broken by the other (mkdir
    is atomic: one of them wins, whichever runs first), whose patch does not parse, so that the
    ranking puts the fix first whatever the order; NEGATE is done exactly as the commit did;
    PARSE is left alone."""
    mark = tmp_path / "first-candidate"
    fix = (f"mkdir {mark} 2>/dev/null && sed -i 's/a - b/a + b/' calc.py "
           f"|| sed -i 's/a - b/a +/' calc.py")
    negate = "printf '\\n\\ndef negate(x):\\n    return -x\\n' >> calc.py"
    submit = [tool_call("submit"), tool_call("submit")]
    data = {"conversations": [
        {"when": FIX_ADD, "replies": [tool_call("bash", command=fix), *submit]},
        {"when": NEGATE, "replies": [tool_call("bash", command=negate), *submit]},
        {"when": PARSE, "replies": submit},
    ], "replies": submit}
    path = tmp_path / "script.json"
    path.write_text(json.dumps(data))
    return f"scripted:{path}"


def flags(tmp_path: Path) -> dict:
    return {"model.spec": script(tmp_path), "agent.scaffold": "agent", "agent.sandbox": "none",
            "solve.candidates": 2, "bench.tasks": 5, "bench.test_command": PYTEST,
            "agent.test_command": PYTEST, "bench.resamples": 200}


def test_bench_scores_tests_and_recall_apart_and_counts_no_broken_task(project, tmp_path):
    before = user_state(project)
    settings = load_settings(project, flags(tmp_path))
    notes: list[str] = []
    folder = new_bench(project, settings, flags(tmp_path), None, notes.append)
    spec = json.loads((folder / "bench.json").read_text())
    assert spec["flags"]["model.seed"] == 0  # every configuration samples alike: paired
    kinds = {task["message"]: task for task in spec["tasks"]}
    assert list(kinds) == [FIX_ADD, NEGATE, PARSE]  # oldest first; the release is no task
    fix = kinds[FIX_ADD]
    assert fix["kind"] == "tests"
    assert fix["fail_to_pass"] == ["tests/test_calc.py::test_add"]
    assert fix["pass_to_pass"] == ["tests/test_calc.py::test_scale"]
    assert kinds[NEGATE]["kind"] == "recall" and "no test file" in kinds[NEGATE]["why"]
    assert kinds[PARSE]["kind"] == "broken" and "not_installed_anywhere" in kinds[PARSE]["why"]
    assert list(spec["configs"]) == ["base"]  # no adapter trained here

    report = run_bench(project, folder, notes.append)
    scores = {s.task: s for s in read_scores(folder)}
    fixed = scores[fix["commit"][:12]]
    assert fixed.resolved is True  # the candidate that fixed add ranks first: its tests pass
    assert fixed.top1_recall == 1.0 and fixed.oracle_recall == 1.0 and fixed.file_hit
    assert fixed.candidates == 2 and fixed.edit_failed == 0
    negate = scores[kinds[NEGATE]["commit"][:12]]
    assert negate.resolved is None and negate.top1_recall == 1.0
    base = report["configs"]["base"]
    assert report["tasks"] == {"tests": 1, "recall": 1, "broken": 1}
    assert base["scored"] == 2  # the broken task is reported, not counted
    assert base["resolved"] == 1.0 and base["resolved_of"] == 1
    assert base["recall_solved"] == 1.0 and base["recall_solved_of"] == 1
    assert base["edit_failed"] == 0.0 and base["empty"] == 0.0  # every candidate made a patch
    table = format_report(report)
    assert "100% of 1" in table and "not_installed_anywhere" in table
    assert json.loads((folder / "report.json").read_text()) == report
    assert user_state(project) == before  # the bench never touches the user's checkout
    assert git(project, "worktree", "list").count("\n") == 1
    assert any("ETA" in note for note in notes)


def test_a_wrong_top_candidate_does_not_resolve(project, tmp_path):
    """When every candidate writes the broken fix, the top-ranked one is scored by the task's
    tests, which fail."""
    options = flags(tmp_path)
    (tmp_path / "first-candidate").mkdir()  # both candidates write the broken fix
    folder = new_bench(project, load_settings(project, options), options, None, lambda _: None)
    run_bench(project, folder, lambda _: None)
    fix = next(s for s in read_scores(folder) if s.kind == "tests")
    assert fix.resolved is False and "test_add" in fix.detail
    assert fix.top1_recall == 0.5 and fix.oracle_recall == 0.5  # the removed line is right


def test_bench_resumes_without_scoring_a_pair_again(project, tmp_path):
    options = flags(tmp_path)
    folder = new_bench(project, load_settings(project, options), options, None, lambda _: None)
    run_bench(project, folder, lambda _: None)
    lines = (folder / "results.jsonl").read_text().splitlines()
    (folder / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # killed
    # a model that could no longer solve anything: the pairs already scored must be kept
    (tmp_path / "script.json").write_text(json.dumps([tool_call("submit"), tool_call("submit")]))
    report = run_bench(project, folder, lambda _: None)
    assert len(read_scores(folder)) == 2  # the broken task is not solved
    assert report["configs"]["base"]["resolved"] == 1.0
    assert report["configs"]["base"]["empty"] == 0.5  # the rescored task's 2 candidates of 4
    assert find_bench(project, None) == folder


def test_a_finished_configuration_with_settings_this_sera_lacks_does_not_stop_the_others(
        project, tmp_path):
    """A configuration scored by a build whose setting was later reverted is finished: resuming
    the bench to score another must not need its settings."""
    options = flags(tmp_path)
    folder = new_bench(project, load_settings(project, options), options, None, lambda _: None)
    run_bench(project, folder, lambda _: None)
    spec = json.loads((folder / "bench.json").read_text())
    spec["configs"]["old"] = {"agent.setting_since_removed": "2"}
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    (folder / "results.jsonl").write_text("".join(
        json.dumps({**row, "config": "old"}) + "\n" for row in rows) + "".join(
        json.dumps(row) + "\n" for row in rows[:-1]))  # old finished, base left one task
    (folder / "bench.json").write_text(json.dumps(spec))
    report = run_bench(project, folder, lambda _: None)
    assert {s.config for s in read_scores(folder)} == {"base", "old"}
    assert report["configs"]["base"]["scored"] == 2


def test_configurations_take_turns_per_task_and_one_another_sera_began_is_left_to_it(
        project, tmp_path):
    options = flags(tmp_path)
    other_model = tmp_path / "other.json"
    other_model.write_text((tmp_path / "script.json").read_text())
    configs = {"base": {"model.adapter": "none"},
               "other": {"model.spec": f"scripted:{other_model}"},
               "again": {"agent.scaffold": "agent"}}
    folder = new_bench(project, load_settings(project, options), options, configs, lambda _: None)
    run_bench(project, folder, lambda _: None)
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    first, second = rows[0]["task"], rows[2]["task"]
    assert [(r["task"], r["config"]) for r in rows] == [  # a bench stopped early compares them
        (first, "base"), (first, "again"), (second, "base"), (second, "again"),
        (first, "other"), (second, "other")]  # another model comes after: loaded once
    assert {r["build"] for r in rows} == {build_id()}  # each row names the sera that scored it

    older = {**rows[0], "build": "0.0.9+0123456789ab"}
    (folder / "results.jsonl").write_text(json.dumps(older) + "\n")  # begun by another sera
    notes: list[str] = []
    report = run_bench(project, folder, notes.append)
    assert [(s.task, s.config) for s in read_scores(folder)] == [
        (first, "base"), (first, "again"), (second, "again"), (first, "other"), (second, "other")]
    assert any("'base' left unfinished: sera 0.0.9+0123456789ab began it" in n
               and "--config base-new:model.adapter=none" in n for n in notes)
    assert report["configs"]["base"]["builds"] == ["0.0.9+0123456789ab"]
    assert f"base sera 0.0.9+0123456789ab; other sera {build_id()}" in format_report(report)


def test_a_bench_another_process_is_running_is_refused_untouched(project, tmp_path):
    options = flags(tmp_path)
    folder = new_bench(project, load_settings(project, options), options, None, lambda _: None)
    held = claim_run(folder, "bench")  # as the other process holds it
    with pytest.raises(RunInUse, match="running in another sera process; wait for it"):
        run_bench(project, folder, lambda _: None)
    assert not (folder / "results.jsonl").exists()
    held.close()  # the other process ended (or was killed): the bench runs
    run_bench(project, folder, lambda _: None)
    assert read_scores(folder)


def test_cli_runs_the_bench_and_resumes_it(project, tmp_path, capsys):
    options = flags(tmp_path)
    argv = ["-C", str(project), "bench", "--model", options["model.spec"], "--scaffold", "agent",
            "--tasks", "2", "-n", "1", "--test-command", PYTEST]
    env_sandbox = {"SERA_AGENT_SANDBOX": "none", "SERA_BENCH_RESAMPLES": "100"}
    import os
    os.environ.update(env_sandbox)
    try:
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "configuration" in out and "base" in out and "report:" in out
        assert main(["-C", str(project), "bench", "--resume"]) == 0
        capsys.readouterr()
        more = "blocks:agent.edit_format=blocks,agent.scaffold=agent"
        assert main(["-C", str(project), "bench", "--resume", "--config", more]) == 0
        out = capsys.readouterr().out
        assert "blocks - base:" in out  # scored on the same tasks, compared with the first
        assert main(["-C", str(project), "bench", "--resume", "--config",
                     "blocks:agent.edit_format=functions"]) == 1
        assert "already has a configuration 'blocks'" in capsys.readouterr().err
        assert main(["-C", str(project), "bench", "--resume", "nosuchbench"]) == 1
        assert "start one with: sera bench" in capsys.readouterr().err
    finally:
        for key in env_sandbox:
            os.environ.pop(key)


def test_the_oracle_view_shows_the_guided_model_the_functions_the_reference_changes(
        project, tmp_path):
    """bench.oracle_view: every candidate of a guided configuration is shown exactly what the
    commit changed (here calc.add, whatever the localizer would rank), and is scored as usual;
    a configuration that runs the free-running agent, which is shown no view, is refused."""
    fix = ("calc.py\n```python\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n"
           ">>>>>>> REPLACE\n```")
    model = tmp_path / "guided.json"
    model.write_text(json.dumps({"conversations": [{"when": FIX_ADD, "replies": [fix]}],
                                 "replies": ["No change is needed."]}))
    options = {**flags(tmp_path), "model.spec": f"scripted:{model}", "agent.scaffold": "guided"}
    oracle = {"oracle": {"bench.oracle_view": "true"}}
    folder = new_bench(project, load_settings(project, options), options, oracle, lambda _: None)
    run_bench(project, folder, lambda _: None)
    task = next(t for t in json.loads((folder / "bench.json").read_text())["tasks"]
                if t["message"] == FIX_ADD)
    for path in sorted((folder / "runs" / "oracle" / task["commit"][:12]).glob("candidates/*")):
        meta = json.loads(path.read_text())["meta"]
        assert meta["localization"]["variant"] == "given"
        assert [(loc["path"], loc["name"]) for loc in meta["locations"]] == [("calc.py", "add")]
    fixed = next(s for s in read_scores(folder) if s.kind == "tests")
    assert fixed.resolved is True and fixed.top1_recall == 1.0

    agent = {"free": {"bench.oracle_view": "true", "agent.scaffold": "agent"}}
    with pytest.raises(SeraError, match="add agent.scaffold=guided"):
        new_bench(project, load_settings(project, options), options, agent, lambda _: None)


def test_configurations_are_parsed_with_clear_errors():
    assert parse_config("base") == ("base", {"model.adapter": "none", "rerank.reranker": "none"})
    assert parse_config("small:model.spec=embedded:0.5b, agent.scaffold=guided") == (
        "small", {"model.spec": "embedded:0.5b", "agent.scaffold": "guided"})
    with pytest.raises(SeraError, match="unknown configuration 'fast'"):
        parse_config("fast")
    with pytest.raises(SeraError, match="key=value"):
        parse_config("small:embedded")


def test_an_adapter_trained_after_the_tasks_is_refused(project, tmp_path):
    options = flags(tmp_path)
    adapter = project / ".sera" / "adapters" / "run-1"
    adapter.mkdir(parents=True)
    head = git(project, "rev-parse", "HEAD").strip()
    (adapter / "card.json").write_text(json.dumps({"run": "run-1", "snapshot": head,
                                                   "student": options["model.spec"]}))
    assert training_snapshot(adapter) == head
    custom = {"tuned": {"model.adapter": str(adapter), "rerank.reranker": "none"}}
    with pytest.raises(SeraError, match="already contains 3 of the tasks"):
        new_bench(project, load_settings(project, options), options, custom, lambda _: None)
    (adapter / "card.json").write_text(json.dumps({"run": "gone"}))
    notes: list[str] = []
    new_bench(project, load_settings(project, options), options, custom, notes.append)
    assert any("cannot tell what run-1 was trained on" in n for n in notes)
    first = git(project, "rev-list", "--max-parents=0", "HEAD").strip()
    (adapter / "card.json").write_text(json.dumps({"run": "run-1", "snapshot": first}))
    folder = new_bench(project, load_settings(project, options), options, custom, lambda _: None)
    assert list(json.loads((folder / "bench.json").read_text())["configs"]) == ["tuned"]


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    deltas = [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    low, high = bootstrap_interval(deltas, 500)
    assert low < 0.5 < high and bootstrap_interval(deltas, 500) == [low, high]
    assert bootstrap_interval([0.25] * 4, 100) == [0.25, 0.25]
    assert bootstrap_interval([], 100) is None


def test_junit_outcomes(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.test_a" name="test_ok" file="tests/test_a.py"/>'
        '<testcase classname="tests.test_a" name="test_bad" file="tests/test_a.py">'
        '<failure message="boom"/></testcase>'
        '<testcase classname="tests.test_a" name="test_err" file="tests/test_a.py"><error/>'
        '</testcase><testcase classname="tests.test_a" name="test_skip" file="tests/test_a.py">'
        '<skipped/></testcase></testsuite></testsuites>')
    assert read_junit(report) == {"tests/test_a.py::test_ok": "passed",
                                  "tests/test_a.py::test_bad": "failed",
                                  "tests/test_a.py::test_err": "error",
                                  "tests/test_a.py::test_skip": "skipped"}
    report.write_text("<testsuites><testcase")
    assert read_junit(report) == {}


def test_the_error_that_broke_a_test_run_is_named_without_colour_codes():
    output = ("\x1b[31mE   ModuleNotFoundError: No module named 'pkg._version'\x1b[0m\n"
              "!!!!!!!!!!!!!!!!!!!! Interrupted: 1 error during collection !!!!!!!!!!!!!!!!\n")
    assert failure_summary(output) == "ModuleNotFoundError: No module named 'pkg._version'"
    assert failure_summary("collected 0 items\n\nno tests ran in 0.01s\n") == (
        "collected 0 items | no tests ran in 0.01s")
