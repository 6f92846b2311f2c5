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
    row = guided_history_trajectory(root, outside, settings_for(root, "blocks"))
    assert row is not None and reproduces(root, row, "blocks", outside)
    # the changed line outside any function is shown as a location of its own, first
    assert (row.meta["locations"][0]["name"], row.meta["locations"][0]["start_line"]) == ("", 1)
    assert "   1 | import math" in row.messages[-2]["content"]
    deleted = tasks["Remove the"]
    assert guided_history_trajectory(root, deleted, settings_for(root, "blocks")) is None


def test_guided_rows_are_written_for_the_models_that_solve_in_guided(tmp_path):
    assert writes_guided_rows(load_settings(None, {"model.spec": "embedded"}))
    assert writes_guided_rows(load_settings(None, {"model.spec": "transformers:x",
                                                   "agent.scaffold": "guided"}))
    assert not writes_guided_rows(load_settings(None, {"model.spec": "transformers:x"}))


def test_no_row_answers_with_lines_its_request_does_not_show(tmp_path, monkeypatch):
    """A view is clipped to the code budget; an answer editing lines cut from it would teach
    the model to write SEARCH parts from memory."""
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "big"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    long = "".join(f"    value_{n} = compute_something_long({n}, {n + 1})\n" for n in range(200))
    text = f"def first():\n{long}    return value_0\n\n\ndef last():\n    return 1\n"
    commit(root, "Add the big module", {"big.py": text})
    commit(root, "Return 2 from last", {"big.py": text.replace("return 1", "return 2")})
    both = text.replace("return 1", "return 3").replace("(0, 1)", "(0, 2)")
    commit(root, "Change first and last together", {"big.py": both})
    tasks = {task.message: task for task in mine_history(root)}
    settings = settings_for(root, "blocks")
    shown = guided_history_trajectory(root, tasks["Return 2 from last"], settings)
    assert shown is not None and "return 1" in shown.messages[-2]["content"]
    # first, ranked with it, would crowd it out of the view: the changed function is shown alone
    assert [loc["name"] for loc in shown.meta["locations"]] == ["last"]
    cut = guided_history_trajectory(root, tasks["Change first and last together"], settings)
    assert cut is None  # first's 200 lines fill the view; last's change is cut from it
