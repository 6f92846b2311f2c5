"""`sera specialize --scaffold guided` end to end: a scripted teacher answers the guided requests
with SEARCH/REPLACE blocks (and the self-check and the issue), the tiny student trains on the
guided conversations, and its adapter's card sends `sera solve` (scaffold auto) to the guided
scaffold although the student is not an embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import GIT_IDENTITY, git
from sera.agent.example import without_examples
from sera.agent.guided import opening
from sera.agent.prompts import render
from tiny_models import build_tiny_model

CALC = ('def add(a, b):\n    """Return the sum of a and b."""\n    return a - b\n\n\n'
        'def scale(values, factor):\n    return [v * factor for v in values]\n')
ISSUE = "add(2, 3) returns -1 instead of 5.\n\nExpected: 5."


def block(search: str, replace: str, path: str = "calc.py") -> str:
    return f"{path}\n```python\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```"


T1 = ["add subtracts instead of adding.\n" + block("    return a - b", "    return a + b")]
T2 = [block("    return a - b", "    return a + b  # the sum")]


def teacher_script(path: Path) -> str:
    # The first match wins; the reviewer's and the issue writer's prompts quote rollout 1.
    path.write_text(json.dumps({"conversations": [
        {"when": "Answer yes or no.", "replies": ["Yes, the change fixes add."]},
        {"when": "You write issue reports", "replies": [ISSUE]},
        {"when": "add(2, 3) returns -1", "replies": T2},
        {"when": "Something may be wrong around", "replies": T1}]}))
    return f"scripted:{path}"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """calc.py with a bug in add, and a history of three small commits on different days."""
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    for name, value in GIT_IDENTITY.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for day, (text, message) in enumerate([
            (CALC.replace("    return a - b\n", "    return a-b\n"), "calc: add and scale"),
            (CALC, "Format add() the way the rest of the file is formatted"),
            (CALC.replace("v * factor", "factor * v"), "scale: multiply factor first")], 1):
        (root / "calc.py").write_text(text)
        git(root, "add", "-A")
        monkeypatch.setenv("GIT_COMMITTER_DATE", f"2024-01-{day:02d}T12:00:00Z")
        git(root, "commit", "-qm", message)
    monkeypatch.delenv("GIT_COMMITTER_DATE")
    return root


def test_specialize_with_the_guided_scaffold(project, tmp_path, capsys):
    from sera.cli import main
    student = f"transformers:{build_tiny_model(tmp_path / 'tiny')}"
    code = main(["specialize", str(project), "--model", student, "--scaffold", "guided",
                 "--teacher", teacher_script(tmp_path / "teacher.json"), "--functions", "2",
                 "--concurrency", "1", "--max-steps", "6", "--epochs", "1", "--no-reranker"])
    assert code == 0, capsys.readouterr().err
    run_dir = next((project / ".sera" / "runs").glob("*/manifest.json")).parent

    records = [json.loads(p.read_text()) for p in sorted((run_dir / "rollouts").glob("*.json"))]
    assert sorted(r["status"] for r in records) == ["accepted", "duplicate_p1"]
    accepted = next(r for r in records if r["status"] == "accepted")
    assert accepted["recall"] == 0.5  # P2 keeps "-return a - b" but writes its own "+" line
    assert accepted["issue"] == ISSUE and accepted["attempts"][0]["self_check"] is True
    assert "+    return a + b" in accepted["p1"] and "# the sum" in accepted["p2"]
    function = accepted["function"]["name"]  # add or scale: the request names it, T1 fixes add
    for role, located in (("t1", function), ("t2", "add")):  # the issue is about add
        meta = json.loads(Path(accepted[role]).read_text())["meta"]
        assert meta["scaffold"] == "guided" and meta["status"] == "submitted"
        assert (meta["locations"][0]["path"], meta["locations"][0]["name"]) == ("calc.py", located)
        assert meta["localization"]["variant"] == "top"

    rows = [json.loads(line)["messages"] for line in (run_dir / "dataset.jsonl").read_text().splitlines()]
    meta = [json.loads(line) for line in (run_dir / "dataset-meta.jsonl").read_text().splitlines()]
    assert sorted((m["source"], m["role"]) for m in meta) == [
        ("history", None), ("svg", "t1"), ("svg", "t2")]
    assert all(row[:3] == opening("blocks") for row in rows)  # system prompt, worked example
    rows = [without_examples(row) for row in rows]
    # the student solves in guided, so the history commit is a guided exchange too
    history = [row for row, m in zip(rows, meta) if m["source"] == "history"][0]
    assert "Format add() the way" in history[1]["content"]  # the newest commit is held out
    assert "<<<<<<< SEARCH\n    return a-b\n=======\n    return a - b\n" in history[2]["content"]
    guided = [row for row, m in zip(rows, meta) if m["source"] == "svg"]
    guided.sort(key=lambda row: "Something may be wrong" not in row[1]["content"])  # T1 first
    for row in guided:  # the guided conversation, in the agent's message format
        assert [m["role"] for m in row] == ["system", "user", "assistant"]
        assert "<task>" in row[1]["content"] and "   3 |     return a - b" in row[1]["content"]
        assert "<<<<<<< SEARCH\n    return a - b\n=======" in row[2]["content"]
    assert f"Something may be wrong around `{function}`" in guided[0][1]["content"]
    assert ISSUE in guided[1][1]["content"]

    stats = json.loads((run_dir / "manifest.json").read_text())["stages"]["train"]["stats"]
    card = json.loads((Path(stats["adapter"]) / "card.json").read_text())
    assert card["scaffold"] == "guided"
    assert card["scaffold_rows"] == {"guided": 3}
    assert card["svg"]["accepted"] == 1 and card["student"] == student
    assert_solve_runs_the_adapter_in_its_scaffold(project, student, stats["adapter"])


def assert_solve_runs_the_adapter_in_its_scaffold(project: Path, student: str, adapter: str):
    from sera.agent.solve import solve
    from sera.agent.trajectory import Trajectory
    from sera.config import load_settings
    from sera.models.registry import load_model
    settings = load_settings(project, {"model.spec": student, "solve.candidates": 1,
                                       "model.max_tokens": 16, "model.temperature": 0.0})
    assert settings.agent.scaffold == "auto"
    model = load_model(student, settings.model)
    try:
        result = solve(project, "make add return the sum", settings, model)
    finally:
        model.close()
    trajectory = Trajectory.load(result.candidates[0].trajectory)
    assert trajectory.meta["adapter"] == adapter
    assert trajectory.meta["scaffold"] == "guided"  # a transformers student alone gets "agent"
    assert trajectory.messages[0]["content"] == render("guided_system")


def test_the_teacher_sees_a_guided_runs_edits_as_its_actions():
    from sera.specialize.teacher import summarize_steps
    edit = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE"
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "fix add"},
                {"role": "assistant", "content": edit},
                {"role": "user", "content": "The edit applied; the checks passed."}]
    summary = summarize_steps(messages)
    assert "return a + b" in summary and "unparsable" not in summary
    assert summary.splitlines()[-1] == "OUTPUT The edit applied; the checks passed."
