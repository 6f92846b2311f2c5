"""The terminal app through Textual's Pilot, with the scripted model on a real repository: solve,
the ranked candidates and their patches, apply, undo, the scaffold switch, errors; and a snapshot
of a saved run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from textual.widgets import DataTable, RichLog, Static

from conftest import CALC, tool_call, write_script
from sera.agent.workcopy import ensure_state_dir
from sera.tui.app import SeraApp
from test_guided import GOOD

SIZE = (110, 32)


def log_text(app) -> str:
    return "\n".join(strip.text for strip in app.query_one("#log", RichLog).lines)


def preview_text(app) -> str:
    content = app.query_one("#preview", Static).content
    return getattr(content, "code", None) or str(content)


async def solve(pilot, task: str) -> None:
    await pilot.click("#task")
    pilot.app.query_one("#task").value = task
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_solve_preview_apply_and_undo(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    app = SeraApp(repo, {"model.spec": script, "solve.candidates": 2})

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            assert app.sub_title == "project · scaffold auto"
            await pilot.press("f2", "f2")  # auto -> agent -> guided
            await solve(pilot, "calc.add returns the wrong sum")
            table = app.query_one("#candidates", DataTable)
            rows = [tuple(table.get_row_at(n)) for n in range(table.row_count)]
            shown = preview_text(app)
            places = str(app.query_one("#places", Static).content)
            await pilot.press("down")
            second = preview_text(app)
            await pilot.press("up", "a")
            applied = (repo / "calc.py").read_text()
            await pilot.press("u")
            await pilot.pause()
            notes = str(app.query_one("#notes", Static).content)
            return rows, shown, second, applied, log_text(app), notes, places

    rows, shown, second, applied, log, notes, places = asyncio.run(drive())
    assert places.startswith("looked at calc.py:1 add (named in the task")
    assert app.flags["agent.scaffold"] == "guided"
    assert rows[0][1:] == ("1", "submitted", "-", "2", "applies ok parses ok tests -", "calc.py")
    assert rows[1][-1] == f"= #{rows[0][0]}"
    assert "+    return a + b" in shown and second.startswith("The same patch as candidate")
    assert "return a + b" in applied and (repo / "calc.py").read_text() == CALC
    assert "step 1: applied edits to calc.py" in log
    assert "applied candidate" in log and "undid candidate" in log
    run = json.loads(next((repo / ".sera" / "runs").glob("*/manifest.json")).read_text())
    trajectory = json.loads(Path(run["candidates"][0]["trajectory"]).read_text())
    assert trajectory["meta"]["scaffold"] == "guided"
    assert "no reranker is trained yet" in notes


def test_errors_are_said_and_nothing_is_lost(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    app = SeraApp(repo, {"model.spec": script, "agent.scaffold": "magic"})

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await solve(pilot, "   ")
            await solve(pilot, "fix calc.add")
            await pilot.press("tab", "a", "u")
            await pilot.pause()
            return log_text(app)
    log = asyncio.run(drive())
    assert "error: the task is empty" in log
    assert "error: unknown scaffold 'magic'; use agent, guided or auto" in log
    assert "no candidate to apply: solve a task first" in log
    assert "error: nothing to undo" in log
    assert (repo / "calc.py").read_text() == CALC
    assert not (repo / ".sera" / "runs").exists() or not any((repo / ".sera" / "runs").iterdir())


def test_escape_cancels_a_running_solve(repo, tmp_path):
    script = write_script(tmp_path / "slow.json", [tool_call("bash", command="sleep 0.3")] * 60)
    app = SeraApp(repo, {"model.spec": script, "agent.scaffold": "agent", "agent.max_steps": 60,
                         "solve.candidates": 1})

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            app.query_one("#task").value = "calc.add is wrong"
            await pilot.press("enter")
            for _ in range(600):
                if "step 2" in log_text(app):
                    break
                await pilot.pause(0.05)
            await pilot.press("escape")
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = app.query_one("#candidates", DataTable)
            return tuple(table.get_row_at(0)), log_text(app)
    row, log = asyncio.run(drive())
    assert row[2] == "interrupted"
    assert "cancelling: each candidate stops after its current step" in log
    assert "cancelled: the finished work is kept in run" in log
    assert "step 30" not in log


SAVED_RUN = "20261201-120000-solve-abcd"


def saved_run(repo: Path) -> None:
    """A finished solve run on disk, as sera solve writes it (fixed id and figures)."""
    ensure_state_dir(repo)
    patch = ("diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,3 +1,3 @@\n"
             " def add(a, b):\n     \"\"\"Return the sum of a and b.\"\"\"\n-    return a - b\n"
             "+    return a + b\n")
    base = {"steps": 1, "prompt_tokens": 300, "completion_tokens": 40, "seconds": 3.0,
            "trajectory": "", "locations": []}
    candidates = [
        {**base, "index": 1, "status": "submitted", "exit_message": "submitted", "patch": patch,
         "rank": 1, "votes": 1, "score": 0.8123, "filters": {"applies": True, "parses": True}},
        {**base, "index": 0, "status": "edit_failed", "exit_message": "the edits did not apply",
         "patch": "", "rank": 2, "votes": 0, "score": None, "filters": {"applies": False}},
    ]
    folder = repo / ".sera" / "runs" / SAVED_RUN
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "id": SAVED_RUN, "kind": "solve", "task": "add() returns a - b", "status": "done",
        "candidates": candidates}))


def test_a_saved_run_opens_with_its_ranked_candidates(repo):
    saved_run(repo)
    app = SeraApp(repo, {}, run_id="abcd")

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            table = app.query_one("#candidates", DataTable)
            return ([tuple(table.get_row_at(n)) for n in range(table.row_count)],
                    preview_text(app), app.query_one("#task").value)
    rows, shown, task = asyncio.run(drive())
    assert rows == [("1", "1", "submitted", "0.812", "1", "applies ok parses ok tests -", "calc.py"),
                    ("0", "2", "edit_failed", "-", "0", "applies NO parses - tests -", "-")]
    assert "+    return a + b" in shown
    assert task == "add() returns a - b"


def test_snapshot_of_a_saved_run(repo, snap_compare):
    saved_run(repo)
    assert snap_compare(SeraApp(repo, {}, run_id=SAVED_RUN), terminal_size=SIZE)
