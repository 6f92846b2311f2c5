"""History commits as guided training rows: the request solve would make, answered by the commit,
in either edit format; kept only when the answer reproduces the commit exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import git
from sera.agent.example import without_examples
from sera.agent.guided import GuidedAgent, opening
from sera.agent.localize import Location
from sera.agent.prompts import render
from sera.agent.searchreplace import apply_edits
from sera.agent.tools import ToolEnvironment
from sera.agent.trajectory import Trajectory
from sera.agent.workcopy import WorkCopy
from sera.config import load_settings
from sera.specialize.guided_rows import guided_history_trajectory, writes_guided_rows
from sera.specialize.mining import _same_changes, mine_history

CALC = '''import math


def add(a, b):
    """Return the sum of a and b."""
    return a - b


class Shape:
    @property
    def area(self):
        return self.width * self.width

    def scale(self, factor):
        return [v * factor for v in self.values]
'''


def commit(root: Path, message: str, files: dict[str, str | None]) -> None:
    for name, text in files.items():
        if text is None:
            (root / name).unlink()
        else:
            (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


@pytest.fixture
def history(tmp_path, monkeypatch):
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(root, "Initial import of the calculator", {"calc.py": CALC, "old.py": "X = 1\n"})
    fixed = CALC.replace("return a - b", "return a + b")
    commit(root, "Fix add: it returned the difference", {"calc.py": fixed})
    two = fixed.replace("self.width * self.width", "self.width * self.height").replace(
        "v * factor", "factor * v")
    commit(root, "Use the height in Shape.area and scale from the left", {"calc.py": two})
    commit(root, "Import the operator module as well", {"calc.py": "import operator\n" + two})
    commit(root, "Remove the obsolete module old.py", {"old.py": None})
    tasks = {" ".join(task.message.split()[:2]).rstrip(":"): task for task in mine_history(root)}
    return root, tasks


def settings_for(root: Path, edit_format: str):
    return load_settings(root, {"agent.scaffold": "guided", "agent.edit_format": edit_format})


def reproduces(root: Path, row: Trajectory, edit_format: str, task) -> bool:
    """The row's answer read and applied as solve reads and applies one, at the parent."""
    settings = settings_for(root, edit_format)
    with WorkCopy.create(root, task.parent) as workcopy:
        agent = GuidedAgent(None, ToolEnvironment(workcopy, settings.agent), Trajectory(),
                            settings.agent, settings.model)
        agent.shown = [Location(loc["path"], loc["name"], loc["start_line"], loc["end_line"],
                                loc["score"]) for loc in row.meta["locations"]]
        apply_edits(workcopy.path, agent.read_edits(row.messages[-1]["content"], None), None)
        return _same_changes(workcopy.diff(), task.patch)


@pytest.mark.parametrize("edit_format", ["blocks", "functions"])
def test_a_fix_becomes_the_request_solve_makes_answered_by_the_commit(history, edit_format):
    root, tasks = history
    task = tasks["Fix add"]
    row = guided_history_trajectory(root, task, settings_for(root, edit_format))
    assert row is not None and row.meta["scaffold"] == "guided"
    assert row.meta["edit_format"] == edit_format and row.meta["commit"] == task.commit
    system, request, answer = without_examples(row.messages)
    assert row.messages[:3] == opening(edit_format) and len(row.messages) == 5
    prompts = {"blocks": ("guided_system", "guided_edit"),
               "functions": ("guided_system_functions", "guided_edit_functions")}[edit_format]
    assert system["content"] == render(prompts[0])
    assert request["content"].startswith("<task>\nFix add: it returned the difference")
    assert "return a - b" in request["content"]  # the function as it was at the parent
    if edit_format == "blocks":
        assert "<<<<<<< SEARCH" in answer["content"] and "\n+" not in answer["content"]
        assert "    return a - b\n=======\n    return a + b" in answer["content"]
    else:
        assert answer["content"].startswith("calc.py\n```python\ndef add(a, b):")
        assert "return a + b" in answer["content"] and "class Shape" not in answer["content"]
    assert row.meta["locations"][0]["name"] == "add"  # the changed function is shown first
    assert reproduces(root, row, edit_format, task)


@pytest.mark.parametrize("edit_format", ["blocks", "functions"])
def test_two_methods_one_with_a_decorator_reproduce_the_commit(history, edit_format):
    root, tasks = history
    task = tasks["Use the"]
    row = guided_history_trajectory(root, task, settings_for(root, edit_format))
    assert row is not None
    answer = row.messages[-1]["content"]
    if edit_format == "functions":
        assert "    @property\n    def area(self):" in answer
        assert answer.count("```python") == 2
    assert {loc["name"] for loc in row.meta["locations"][:2]} == {"Shape.area", "Shape.scale"}
    assert reproduces(root, row, edit_format, task)
    # the stage writes it; the dataset reads it back
    row.path = root.parent / "row.json"
    row.save()
    assert Trajectory.load(row.path).messages == row.messages


def test_what_a_format_cannot_write_is_no_row(history):
    root, tasks = history
    outside = tasks["Import the"]  # a line above every function
    assert guided_history_trajectory(root, outside, settings_for(root, "functions")) is None
    assert guided_history_trajectory(root, outside, settings_for(root, "blocks")) is not None
    deleted = tasks["Remove the"]
    assert guided_history_trajectory(root, deleted, settings_for(root, "blocks")) is None


def test_guided_rows_are_written_for_the_models_that_solve_in_guided(tmp_path):
    assert writes_guided_rows(load_settings(None, {"model.spec": "embedded"}))
    assert writes_guided_rows(load_settings(None, {"model.spec": "transformers:x",
                                                   "agent.scaffold": "guided"}))
    assert not writes_guided_rows(load_settings(None, {"model.spec": "transformers:x"}))
