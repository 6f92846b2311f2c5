"""Reranker self-training in `sera specialize` and `sera eval`: the pools (round 0, hard-negative
mining, merging, labels with tests) and the stage end to end with a scripted teacher and agent and
the tiny reranker on a real repository."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import GIT_IDENTITY, git, tool_call
from sera.agent.workcopy import snapshot_commit
from sera.config import AgentConfig, load_settings
from tiny_models import build_tiny_model
from sera.reranker.labels import LabeledPatch, TaskGroup
from sera.reranker.pool import (Labeler, PoolTask, merge_rows, mine_hard_negatives,
                                         pick_tasks, pool_tasks, read_groups, round0_groups)
from sera.specialize.run import new_run, run_stages

CALC = ('def add(a, b):\n    """Return the sum of a and b, an int."""\n    return a - b\n\n\n'
        'def scale(values, factor):\n    return [factor * v for v in values]\n')
FIX = ('diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,4 +1,4 @@\n'
       ' def add(a, b):\n     """Return the sum of a and b, an int."""\n'
       '-    return a - b\n+    return a + b\n \n')
WRONG = FIX.replace("+    return a + b", "+    return b - a")
ISSUE = "add(2, 3) returns -1 instead of 5.\n\nExpected: 5."


def edit(old: str, new: str) -> list[str]:
    return [tool_call("str_replace_editor", command="str_replace", path="calc.py", old_str=old,
                      new_str=new), tool_call("submit"), tool_call("submit")]


def write_json(path: Path, data) -> str:
    path.write_text(json.dumps(data))
    return f"scripted:{path}"


def teacher(tmp_path: Path) -> str:
    t1 = [tool_call("str_replace_editor", command="view", path="calc.py"),
          *edit("return a - b", "return a + b")]
    return write_json(tmp_path / "teacher.json", {"conversations": [
        {"when": "Answer yes or no.", "replies": ["Yes, the change fixes add."]},
        {"when": "You write issue reports", "replies": [ISSUE]},
        {"when": "add(2, 3) returns -1", "replies": edit("return a - b", "return a + b  # sum")},
        {"when": "Something may be wrong around", "replies": t1}]})


def agent(tmp_path: Path) -> str:
    """The agent being specialized: wrong on the SVG task, right (differently from the commit) on
    the training history task, right on one held-out task and wrong on the other."""
    return write_json(tmp_path / "agent.json", {"conversations": [
        {"when": "add(2, 3) returns -1", "replies": edit("[factor * v", "[v * factor")},
        {"when": "Format add() the way", "replies": edit("return a-b", "return a - b  # spaced")},
        {"when": "scale: multiply factor first", "replies": edit("v * factor", "factor * v")},
        {"when": "say in the docstring", "replies": edit("return a - b", "return a + b")}]})


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """calc.py and three small commits after the first: one history task to train on, two held
    out (split by date with heldout_fraction 0.5)."""
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    versions = [
        ("calc: add and scale", CALC.replace("return a - b", "return a-b")
         .replace("factor * v", "v * factor").replace(", an int.", ".")),
        ("Format add() the way the rest of the file is formatted",
         CALC.replace("factor * v", "v * factor").replace(", an int.", ".")),
        ("scale: multiply factor first, as the docs describe it", CALC.replace(", an int.", ".")),
        ("add: say in the docstring that the result is an int", CALC)]
    for day, (message, text) in enumerate(versions, 1):
        (root / "calc.py").write_text(text)
        git(root, "add", "-A")
        date = f"2024-01-{day:02d}T12:00:00Z"
        subprocess.run(["git", "commit", "-qm", message], cwd=root, check=True,
                       env={**os.environ, **GIT_IDENTITY, "GIT_COMMITTER_DATE": date,
                            "GIT_AUTHOR_DATE": date})
    return root


def start(project: Path, tmp_path: Path, **extra):
    tiny = f"transformers:{build_tiny_model()}"
    settings = load_settings(project, {
        "model.spec": agent(tmp_path), "specialize.teacher": teacher(tmp_path),
        "rerank.base": tiny, "specialize.functions": 2, "specialize.concurrency": 1,
        "specialize.heldout_fraction": 0.5, "agent.max_steps": 6, "rerank.samples": 2,
        "rerank.max_tokens": 512, "rerank.rounds": 2, "rerank_train.epochs": 1,
        "rerank_train.lr": 1e-3, **extra})
    run = new_run(project, settings, snapshot_commit(project), {})
    run.say = lambda message: None
    return run


def sources(group: TaskGroup) -> list[tuple[str, float]]:
    return [(c.source, c.recall) for c in group.candidates]


def test_self_training_adds_the_mined_rows_and_calibrates_on_held_out_tasks(project, tmp_path, capsys):
    run = start(project, tmp_path)
    try:
        run_stages(run, skip=("dataset", "train"))  # the scripted agent has no weights to tune
    finally:
        run.close()
    stats = run.stage("reranker")["stats"]
    rounds = stats["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["rows"] == 5 and rounds[0]["pairs"] == 4
    # Round 1: the SVG task's wrong patch (twice, one row) is a hard negative; the history task's
    # right but different patch a new positive. Round 2 samples the same patches: nothing new.
    assert (rounds[1]["hard_negatives"], rounds[1]["positives"], rounds[1]["rows"]) == (1, 1, 7)
    assert rounds[1]["sampled"] == 4 and rounds[1]["succeeded"] == 2 and rounds[1]["pairs"] == 8
    assert (rounds[2]["hard_negatives"], rounds[2]["positives"], rounds[2]["rows"]) == (0, 0, 7)
    assert rounds[1]["retrained"] is True and rounds[2]["retrained"] is False

    pool = {g.task_id: g for g in read_groups(run.dir / "reranker" / "train.jsonl")}
    svg = next(g for task_id, g in pool.items() if task_id.startswith("svg-"))
    history = next(g for task_id, g in pool.items() if task_id.startswith("history-"))
    assert sources(svg) == [("reference", 1.0), ("rollout2", 0.5), ("other_task", 0.0),
                            ("hard_negative-r1", 0.0)]
    assert "[v * factor" in svg.candidates[-1].patch and svg.candidates[-1].score is not None
    assert sources(history) == [("reference", 1.0), ("other_task", 0.0), ("positive-r1", 0.5)]
    assert "# spaced" in history.candidates[-1].patch

    heldout = read_groups(run.dir / "reranker" / "heldout.jsonl")
    assert sorted((g.task.split(":")[0], [c.recall for c in g.candidates]) for g in heldout) == [
        ("add", [0.0, 0.0]), ("scale", [1.0, 1.0])]
    card = json.loads((Path(stats["reranker"]) / "card.json").read_text())
    assert card["run"] == run.id and card["base"] == run.settings.rerank.base
    assert [r["round"] for r in card["rounds"]] == [0, 1, 2]
    metrics = card["metrics"]
    assert metrics["tasks"] == 2 and metrics["candidates"] == [2]
    for method in ("top1", "random", "majority", "oracle"):  # one task right, one wrong, each
        assert metrics[method] == {"solved": 0.5, "recall": 0.5}
    right, wrong = expected_scores(Path(stats["reranker"]), heldout)
    assert metrics["auc"] == (1.0 if right > wrong else 0.0 if right < wrong else 0.5)
    # Confidence 0.5: with every candidate counted, half succeeded, so the lowest score qualifies.
    assert card["threshold"] == pytest.approx(min(right, wrong), abs=1e-5)
    assert stats["threshold"] == card["threshold"]
    assert run.manifest["status"] == "done"

    assert_resume_samples_and_trains_nothing_again(run, Path(stats["reranker"]))
    assert_eval_prints_the_comparison(project, run.id, capsys)


def expected_scores(folder: Path, heldout: list[TaskGroup]) -> tuple[float, float]:
    """The reranker's score of the held-out task's right candidates and of the wrong ones."""
    from sera.reranker.model import LoraReranker
    reranker = LoraReranker.load(folder, device="cpu", max_tokens=512)
    try:
        scores = {g.task.split(":")[0]: reranker.score(g.task, [c.patch for c in g.candidates])
                  for g in heldout}
    finally:
        reranker.close()
    assert scores["scale"][0] == pytest.approx(scores["scale"][1], abs=1e-5)
    return scores["scale"][0], scores["add"][0]


def assert_resume_samples_and_trains_nothing_again(run, folder: Path) -> None:
    trajectories = run.dir / "reranker" / "trajectories"
    before = {p.name: p.stat().st_mtime_ns for p in trajectories.iterdir()}
    assert len(before) == 2 * 2 + 2 * 2 + 2 * 2  # two rounds and the held-out tasks
    weights = next(folder.glob("adapter_model.*")).stat().st_mtime_ns
    try:
        run_stages(run, only="reranker", skip=("dataset", "train"))
    finally:
        run.close()
    assert {p.name: p.stat().st_mtime_ns for p in trajectories.iterdir()} == before
    assert next(folder.glob("adapter_model.*")).stat().st_mtime_ns == weights


def assert_eval_prints_the_comparison(project: Path, run_id: str, capsys) -> None:
    from sera.cli import main
    capsys.readouterr()
    assert main(["-C", str(project), "eval"]) == 0
    out = capsys.readouterr().out
    assert f"run {run_id}, reranker {run_id}: 2 held-out tasks, 2 candidates each" in out
    for label in ("top-1", "random", "majority", "oracle"):
        assert f"{label:<10}   0.500     0.500" in out
    assert "AUC " in out and "threshold " in out and "(confidence 0.5)" in out
    assert main(["-C", str(project), "eval", "--reranker", "no-such-reranker"]) == 1
    assert "reranker 'no-such-reranker' not found" in capsys.readouterr().err


def test_no_reranker_and_rounds_flags(project, tmp_path, monkeypatch, capsys):
    from sera.cli import main
    monkeypatch.setenv("SERA_SPECIALIZE_HISTORY_TASKS", "0")
    args = ["specialize", str(project), "--model", f"transformers:{build_tiny_model()}",
            "--teacher", teacher(tmp_path), "--functions", "2", "--concurrency", "1",
            "--max-steps", "6", "--epochs", "1", "--no-reranker", "--rounds", "3"]
    assert main(args) == 0
    manifest = json.loads(next((project / ".sera" / "runs").glob("*/manifest.json")).read_text())
    assert manifest["settings"]["rerank.rounds"] == 3
    assert manifest["stages"]["reranker"] == {**manifest["stages"]["reranker"], "status": "done",
                                              "stats": {"skipped": "the run was started with "
                                                                   "--no-reranker"}}
    assert manifest["stages"]["report"]["status"] == "done" and manifest["status"] == "done"
    assert not (project / ".sera" / "reranker").exists()
    assert main(["-C", str(project), "eval"]) == 1
    assert "no specialize run has held-out candidates yet" in capsys.readouterr().err


def test_a_run_without_tasks_skips_the_reranker_with_the_reason(project, tmp_path):
    run = start(project, tmp_path, **{"specialize.history_tasks": 0, "specialize.functions": 0})
    run_stages(run, skip=("dataset", "train"))
    run.close()
    assert "no task to learn from" in run.stage("reranker")["stats"]["skipped"]


# --- the pools, piece by piece --------------------------------------------------------------------

def test_round0_labels_references_and_other_tasks_references():
    other = FIX.replace("return a + b", "return a + b + 0")
    tasks = [PoolTask("svg-00000", ISSUE, FIX, "c0",
                      known=[LabeledPatch(WRONG, 0.5, source="rollout2")]),
             PoolTask("history-1", "another", other, "c1"), PoolTask("history-2", "third", "x", "c2")]
    groups = round0_groups(tasks, seed=0, negatives=1)
    assert [len(g.candidates) for g in groups] == [3, 2, 2]
    first = groups[0]
    assert sources(first)[:2] == [("reference", 1.0), ("rollout2", 0.5)]
    negative = first.candidates[2]
    assert negative.source == "other_task"
    assert negative.recall == (0.5 if negative.patch == other else 0.0)  # "-return a - b" is shared
    assert round0_groups(tasks, seed=0, negatives=1) == groups  # deterministic


def test_heldout_svg_tasks_are_chosen_deterministically_and_kept_out_of_training(tmp_path):
    (tmp_path / "rollouts").mkdir()
    for index in range(10):
        record = {"p1": FIX.replace("a + b", f"a + b + {index}"), "issue": f"issue {index}",
                  "p2": WRONG, "recall": 0.5, "status": "accepted"}
        (tmp_path / "rollouts" / f"{index:05d}.json").write_text(json.dumps(record))
    no_issue = {"p1": FIX, "status": "duplicate_p1"}
    (tmp_path / "rollouts" / "00010.json").write_text(json.dumps(no_issue))
    train, heldout = pool_tasks(tmp_path, "snap", heldout_fraction=0.3, seed=1)
    assert len(train) == 7 and len(heldout) == 3
    assert {t.split for t in heldout} == {"heldout"} and all(t.commit == "snap" for t in train)
    assert not {t.task_id for t in train} & {t.task_id for t in heldout}
    again, _ = pool_tasks(tmp_path, "snap", heldout_fraction=0.3, seed=1)
    assert [t.task_id for t in again] == [t.task_id for t in train]
    assert train[0].known == [LabeledPatch(WRONG, 0.5, source="rollout2")]
    groups = round0_groups(train, seed=0)
    held_references = {t.reference for t in heldout}
    assert not any(c.patch in held_references for g in groups for c in g.candidates)


def test_mining_keeps_the_top_scored_failures_and_every_new_success():
    group = TaskGroup("t", "task", FIX, [
        LabeledPatch("a", 0.0, source="sampled-r1"), LabeledPatch("b", 0.2, source="sampled-r1"),
        LabeledPatch("c", 0.0, source="sampled-r1"), LabeledPatch(FIX, 1.0, source="sampled-r1"),
        LabeledPatch("b", 0.2, source="sampled-r1"), LabeledPatch("d", 0.6, source="sampled-r1"),
        LabeledPatch("", 0.0, source="sampled-r1")])  # changes nothing: never mined
    mined = mine_hard_negatives([group], [[0.1, 0.9, 0.5, 0.3, 0.9, -1.0, 5.0]], k=2,
                                recall_threshold=0.5)
    assert [(c.patch, c.source, c.score) for c in mined[0].candidates] == [
        ("b", "hard_negative-r1", 0.9), ("c", "hard_negative-r1", 0.5),
        (FIX, "positive-r1", 0.3), ("d", "positive-r1", -1.0)]
    # With tests, the tests decide: a passing candidate of low recall is a positive.
    tested = TaskGroup("t", "task", FIX, [LabeledPatch("e", 0.0, True, "sampled-r2"),
                                          LabeledPatch(FIX, 1.0, False, "sampled-r2")])
    mined = mine_hard_negatives([tested], [[0.0, 1.0]], k=2, recall_threshold=0.5)
    assert [(c.patch, c.source) for c in mined[0].candidates] == [(FIX, "hard_negative-r2"),
                                                                  ("e", "positive-r2")]
    nothing = TaskGroup("u", "task", FIX, [])
    assert mine_hard_negatives([nothing], [[]], k=2, recall_threshold=0.5) == []


def test_merging_skips_known_patches_and_a_round_merged_twice_changes_nothing():
    pool = [TaskGroup("t", "task", FIX, [LabeledPatch(FIX, 1.0, source="reference")])]
    mined = [TaskGroup("t", "task", FIX, [
                 LabeledPatch("index 1234567..89abcde 100644\n" + FIX, 1.0, source="positive-r1"),
                 LabeledPatch(WRONG, 0.5, source="hard_negative-r1", score=2.0)]),
             TaskGroup("new", "other", WRONG, [LabeledPatch(FIX, 0.5, source="hard_negative-r1")])]
    merged = merge_rows(pool, mined, 1)
    assert [sources(g) for g in merged] == [[("reference", 1.0), ("hard_negative-r1", 0.5)],
                                            [("hard_negative-r1", 0.5)]]
    assert merge_rows(merged, mined, 1) == merged
    assert pool[0].candidates == [LabeledPatch(FIX, 1.0, source="reference")]  # not changed


def test_tasks_are_drawn_anew_each_round_and_in_order():
    tasks = [PoolTask(f"t{i}", "", "", "") for i in range(10)]
    first = pick_tasks(tasks, 4, seed=0, round_index=1)
    assert len(first) == 4 and first == sorted(first, key=lambda t: int(t.task_id[1:]))
    assert pick_tasks(tasks, 4, seed=0, round_index=1) == first
    assert pick_tasks(tasks, 4, seed=0, round_index=2) != first
    assert pick_tasks(tasks, 20, seed=0, round_index=1) == tasks


def test_labels_with_a_test_command_run_the_tests_for_every_candidate(project):
    head = git(project, "rev-parse", "HEAD").strip()
    labeler = Labeler(project, "python3 -c 'import calc; assert calc.add(2, 3) == 5'",
                      AgentConfig(sandbox="none"))
    task = PoolTask("svg-00000", ISSUE, FIX, head)
    right, wrong = labeler.label(task, FIX, "sampled-r1"), labeler.label(task, WRONG, "sampled-r1")
    assert (right.recall, right.tests_passed, right.label) == (1.0, True, 2.0)
    assert (wrong.recall, wrong.tests_passed) == (0.5, False)
    assert labeler.label(task, "", "sampled-r1").tests_passed is False  # changes nothing
    group = TaskGroup("svg-00000", ISSUE, FIX, [LabeledPatch(FIX, 1.0, source="reference"),
                                                LabeledPatch(WRONG, 0.5, source="rollout2"), wrong])
    labeler.complete(group, head)
    assert [c.tests_passed for c in group.candidates] == [True, False, False]
    untested = Labeler(project, None, AgentConfig())
    assert untested.label(task, WRONG, "sampled-r1").tests_passed is None


# --- the policy stage ------------------------------------------------------------------------------

def test_policy_stage_optimizes_the_agent_then_mines_with_it_and_resumes(project, tmp_path, capsys):
    """A tiny transformers agent (it must have weights to optimize): GRPO
    gives a new adapter, the optimized agent samples one more round and the held-out tasks again."""
    from sera.models.adapters import newest_adapter
    spec = f"transformers:{build_tiny_model()}"
    run = start(project, tmp_path, **{
        "model.spec": spec, "model.max_tokens": 96,  # the tiny agent rambles; the teacher fits
        "rerank.rounds": 1, "rerank.policy_steps": 1})
    run.manifest["options"]["policy"] = {"num_generations": 2, "max_completion_tokens": 16,
                                         "beta": 0.0, "device": "cpu"}
    try:
        run_stages(run, skip=("dataset", "train"))
    finally:
        run.close()
    stats = run.stage("policy")["stats"]
    adapter = Path(stats["policy"]["adapter"])
    assert adapter.name == f"{run.id}-policy" and stats["policy"]["steps"] == 1
    card = json.loads((adapter / "card.json").read_text())
    assert (card["method"], card["run"], card["scaffold"], card["student"]) == (
        "grpo", run.id, "guided", spec)
    assert card["parent"]["adapter"] is None  # train was skipped: GRPO started from a fresh LoRA
    assert newest_adapter(project, spec) == adapter  # what `sera solve` runs from now on

    rounds = json.loads((run.dir / "reranker" / "rounds.json").read_text())
    assert [(r["round"], r.get("policy", False)) for r in rounds] == [(0, False), (1, False),
                                                                     (2, True)]
    assert stats["round"] == rounds[-1]
    trajectories = run.dir / "reranker" / "trajectories"
    sampled = sorted(trajectories.glob("sampled-r2-*.json")) + sorted(
        trajectories.glob("heldout-policy-*.json"))
    assert len(sampled) == 2 * 2 + 2 * 2  # the round's two training tasks, the two held out
    assert {json.loads(p.read_text())["meta"]["adapter"] for p in sampled} == {str(adapter)}
    assert len(read_groups(run.dir / "reranker" / "heldout-policy.jsonl")) == 2
    reranker_card = json.loads((Path(stats["reranker"]) / "card.json").read_text())
    assert reranker_card["heldout_pool"] == "heldout-policy.jsonl"
    assert [r["round"] for r in reranker_card["rounds"]] == [0, 1, 2]
    assert run.stage("report")["status"] == "done"

    weights = next(adapter.glob("adapter_model.*")).stat().st_mtime_ns
    before = {p.name: p.stat().st_mtime_ns for p in trajectories.iterdir()}
    try:
        run_stages(run, only="policy", skip=("dataset", "train"))
    finally:
        run.close()
    assert next(adapter.glob("adapter_model.*")).stat().st_mtime_ns == weights
    assert {p.name: p.stat().st_mtime_ns for p in trajectories.iterdir()} == before

    from sera.cli import main
    capsys.readouterr()
    assert main(["-C", str(project), "eval"]) == 0
    assert "heldout-policy.jsonl" in capsys.readouterr().out


def test_policy_stage_is_opt_in(project, tmp_path):
    run = start(project, tmp_path, **{"rerank.rounds": 0})
    try:
        run_stages(run, skip=("dataset", "train"))
    finally:
        run.close()
    assert run.stage("policy")["stats"] == {
        "skipped": "policy optimization is opt-in: start a run with --policy-steps N"}
    assert not (project / ".sera" / "adapters").exists()
