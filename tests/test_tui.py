"""The terminal app through Textual's Pilot, with the scripted model on a real repository: solve,
its progress while it runs, the ranked candidates and their patches, apply, undo, the scaffold
switch, the keys in the footer, errors; a specialize run (a scripted teacher, the tiny student):
its stages and outcome, Escape, one thing at a time; snapshots of a saved run (also at 80x24);
and `sera tui` as a process without a terminal or with a wrong --run."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, RichLog, Static
from textual.widgets._footer import FooterKey
from textual.widgets._toast import Toast

from conftest import CALC, git, tool_call, write_script
from sera.agent.workcopy import ensure_state_dir
from sera.tui.app import EMPTY_TASK, SeraApp
from sera.tui.progress import StageBars
from test_guided import GOOD

SIZE = (110, 32)
SMALL = (80, 24)  # the terminal size users start with


def log_text(app) -> str:
    return "\n".join(strip.text for strip in app.query_one("#log", RichLog).lines)


def preview_text(app) -> str:
    content = app.query_one("#preview", Static).content
    return getattr(content, "code", None) or str(content)


def progress_text(app) -> str:
    return str(app.query_one("#progress", Static).content)


async def wait_until(pilot, condition, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("the app did not get there in time")


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
    assert EMPTY_TASK in log
    assert "error: unknown scaffold 'magic'; use agent, guided or auto: press F2 to switch" in log
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


def test_snapshot_of_a_saved_run_at_80x24(repo, snap_compare):
    """The patch pane shows the changed lines on the smallest common terminal."""
    saved_run(repo)
    assert snap_compare(SeraApp(repo, {}, run_id=SAVED_RUN), terminal_size=SMALL)


def test_at_80x24_a_solve_shows_the_changed_lines(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    app = SeraApp(repo, {"model.spec": script, "agent.scaffold": "guided"})

    async def drive():
        async with app.run_test(size=SMALL) as pilot:
            await solve(pilot, "calc.add returns the wrong sum")
            box = app.query_one("#preview-box").content_region
            top = app.query_one("#preview").region.y
            rows = {line: top + n for n, line in enumerate(preview_text(app).splitlines())}
            return box, rows
    box, rows = asyncio.run(drive())
    for changed in ("-    return a - b", "+    return a + b"):
        assert box.y <= rows[changed] < box.bottom, f"{changed!r} is outside the patch pane"
    assert not any(line.startswith(("diff --git", "index ")) for line in rows)


def test_a_running_solve_shows_time_and_each_candidate(repo, tmp_path):
    """Candidates run one after the other; candidate 1 waits in its second step until the test
    opens the gate, so the view is caught with candidate 0 finished and candidate 1 running."""
    gate = tmp_path / "gate"
    second_candidate = f"{repo}/.sera/runs/*/candidates/1.json"
    wait = f"[ -e {second_candidate} ] && until [ -e {gate} ]; do sleep 0.05; done; echo on"
    script = write_script(tmp_path / "gated.json", [
        tool_call("bash", command="echo one"), tool_call("bash", command=wait),
        tool_call("submit"), tool_call("submit")])
    app = SeraApp(repo, {"model.spec": script, "agent.scaffold": "agent", "agent.max_steps": 6,
                         "solve.candidates": 2, "solve.parallel": 1,
                         "agent.sandbox": "none"})  # the gate lies in /tmp, private in bwrap

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            app.query_one("#task").value = "calc.add is wrong"
            await pilot.press("enter")
            await wait_until(pilot, lambda: "candidate 1: step 1" in progress_text(app))
            caught = progress_text(app)
            await pilot.pause(1.2)
            later = progress_text(app)
            gate.touch()
            await app.workers.wait_for_complete()
            await pilot.pause()
            return caught, later, app.query_one("#progress").display
    caught, later, shown_after = asyncio.run(drive())
    lines = caught.splitlines()
    assert re.fullmatch(r"solving for \d+:\d\d \(Escape cancels\)", lines[0])
    assert re.fullmatch(r"candidate 0: submitted after 4 steps, [\d,]+ tokens", lines[1])
    assert re.fullmatch(r"candidate 1: step 1 of 6, [\d,]+ tokens, running", lines[2])
    assert later.splitlines()[0] != lines[0]  # the time ticks without a step
    assert not shown_after


def test_the_keys_show_whatever_has_focus_and_letters_type(repo):
    app = SeraApp(repo, {})

    async def footer_keys(pilot) -> dict[str, str]:
        await pilot.pause()
        return {key.action: key.key for key in app.query(FooterKey)}

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            in_task = await footer_keys(pilot)
            await pilot.press("a", "u", "q", "s")
            typed = app.query_one("#task").value
            await pilot.press("ctrl+y")  # apply, from the task line
            await pilot.pause()
            app.query_one("#candidates").focus()
            in_list = await footer_keys(pilot)
            return in_task, typed, in_list, log_text(app)
    in_task, typed, in_list, log = asyncio.run(drive())
    actions = ("apply", "undo", "quit", "scaffold", "specialize")
    assert {action: in_task.get(action) for action in actions} == \
        {"apply": "ctrl+y", "undo": "ctrl+z", "quit": "ctrl+q", "scaffold": "f2",
         "specialize": "ctrl+s"}
    assert typed == "auqs"
    assert "no candidate to apply: solve a task first" in log
    assert {action: in_list.get(action) for action in actions} == \
        {"apply": "a", "undo": "u", "quit": "q", "scaffold": "f2", "specialize": "s"}


def test_an_empty_task_is_answered_for_the_tui(repo):
    app = SeraApp(repo, {})

    async def drive():
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await pilot.press("enter")
            await pilot.pause()
            return log_text(app), [str(toast.render()) for toast in app.screen.query(Toast)]
    log, toasts = asyncio.run(drive())
    assert toasts == [EMPTY_TASK] and log == EMPTY_TASK
    assert EMPTY_TASK.startswith("Type a task first, e.g.") and "sera solve" not in EMPTY_TASK


def test_messages_name_the_tui_keys_not_cli_commands(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    app = SeraApp(repo, {"model.spec": script, "agent.scaffold": "guided",
                         "solve.candidates": 1})

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await solve(pilot, "calc.add returns the wrong sum")
            await pilot.press("a", "a")  # the second apply finds it applied
            await pilot.pause()
            return log_text(app)
    log = " ".join(asyncio.run(drive()).split())  # as one line: the log wraps
    assert "is already applied to your working tree; nothing was changed (press u to undo the " \
           "last apply)" in log
    assert "sera undo" not in log


def refusing_teacher(path: Path, before: list | None = None) -> str:
    """A scripted teacher whose rollouts are judged not to fix anything, so a specialize run ends
    in seconds with nothing to train (as in test_lsp); `before`: the first steps of its first
    rollout (a wait for the test, or slow steps to cancel)."""
    first_rollout = [*(before or []), tool_call(
        "str_replace_editor", command="str_replace", path="calc.py", old_str="return a - b",
        new_str="return a + b"), tool_call("submit"), tool_call("submit")]
    path.write_text(json.dumps({"conversations": [
        {"when": "Answer yes or no.", "replies": ["No."]},
        {"when": "Something may be wrong around", "replies": first_rollout}]}))
    return f"scripted:{path}"


SLOW_STEPS = [tool_call("bash", command="sleep 0.5")] * 40


def specialize_flags(tmp_path: Path, teacher: str) -> dict:
    """The app's settings for a one-function run; the student must be a local model."""
    from tiny_models import build_tiny_model
    return {"model.spec": f"transformers:{build_tiny_model(tmp_path / 'tiny')}",
            "specialize.teacher": teacher, "specialize.functions": 1,
            "specialize.history_tasks": 0, "specialize.concurrency": 1, "agent.max_steps": 40,
            "agent.scaffold": "agent", "agent.sandbox": "none"}  # a gate in /tmp: private in bwrap


async def specialize(pilot, preset: str = "default") -> None:
    """Press s in the candidate list and pick `preset` from the list."""
    pilot.app.query_one("#candidates").focus()
    await pilot.press("s")
    await pilot.pause()
    presets = pilot.app.screen.query_one("#presets")
    presets.highlighted = [option.id for option in presets.options].index(preset)
    await pilot.press("enter")


def toasts(app) -> list[str]:
    return [str(toast.render()) for toast in app.screen.query(Toast)]


def specialize_manifest(repo: Path) -> dict:
    (path,) = (repo / ".sera" / "runs").glob("*specialize*/manifest.json")
    return json.loads(path.read_text())


def test_specialize_shows_each_stage_and_the_outcome(repo, tmp_path):
    """The teacher's first step waits for the test's gate: the view is caught in the rollouts."""
    gate = tmp_path / "gate"
    teacher = refusing_teacher(tmp_path / "teacher.json", before=[
        tool_call("bash", command=f"until [ -e {gate} ]; do sleep 0.05; done")])
    app = SeraApp(repo, specialize_flags(tmp_path, teacher))

    async def drive():
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await specialize(pilot)
            await wait_until(pilot, lambda: "rollouts 0/1" in progress_text(app))
            caught = progress_text(app)
            gate.touch()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert not app.query_one("#progress").display
            return caught, progress_text(app), log_text(app), toasts(app)
    caught, last, log, said = asyncio.run(drive())
    lines = caught.splitlines()
    assert re.fullmatch(r"specializing project for \d+:\d\d \(Escape cancels\)", lines[0])
    assert re.fullmatch(r"run \S+-specialize-\S+, stage 3 of 8: rollouts", lines[1])
    assert "parsing 1/1" in lines and "rollouts 0/1" in lines
    assert re.search(r"^rollouts 1/1 \(accepted 0/1, ", last, re.M)
    assert specialize_manifest(repo)["status"] == "done"
    assert "rollouts: no_valid_rollout1 1, records 1" in log
    assert "no adapter was trained" in log and "(specialize.functions in .sera/config.toml)" in log
    assert "--functions" not in log
    (outcome,) = [toast for toast in said if toast.startswith("specialized project: ")]
    assert "no adapter was trained" in outcome


def test_escape_cancels_a_specialize_run_that_can_be_resumed(repo, tmp_path):
    teacher = refusing_teacher(tmp_path / "slow.json", before=SLOW_STEPS)
    app = SeraApp(repo, specialize_flags(tmp_path, teacher))

    async def drive():
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await specialize(pilot, "demo")
            await wait_until(pilot, lambda: "rollouts 0/1" in progress_text(app))
            assert progress_text(app).startswith("specializing project (demo preset) for ")
            await pilot.pause(1)  # in the teacher's sleeps
            await pilot.press("escape")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert not app.query_one("#progress").display
            return log_text(app), toasts(app)
    log, said = asyncio.run(drive())
    manifest = specialize_manifest(repo)
    assert manifest["status"] == "interrupted" and manifest["options"]["preset"] == "demo"
    assert manifest["settings"]["model.spec"].startswith("transformers:")  # the app's, not demo's
    assert manifest["stages"]["rollouts"]["status"] == "interrupted"
    assert git(repo, "worktree", "list").count("\n") == 1  # no work copy left behind
    assert "cancelling: the specialize run stops at its next progress tick" in log
    assert f"specialize run {manifest['id']} was cancelled; continue it with: sera specialize " \
           f"--resume {manifest['id']}" in said


def test_stage_bars_report_each_percent_of_a_bar_as_the_stages_drive_it():
    """The calls sera.specialize's stages make on their bars: parsing learns its total late,
    training sets completed and total with each step, rollouts advance with an info."""
    reported, now = [], [0.0]
    bars = StageBars(lambda bar, line: reported.append((bar, line)), clock=lambda: now[0])
    parsing = bars.add_task("parsing", total=None, info="")
    bars.update(parsing, advance=0, completed=3, total=3)
    training = bars.add_task("training", total=1, info="")
    for step in range(1, 1001):
        now[0] += 1.5  # seconds a step
        bars.update(training, advance=0, total=1000, completed=step, info=f"loss {1 / step:.3f}")
    rollouts = bars.add_task("rollouts", total=2, info="")
    now[0] += 90
    bars.update(rollouts, advance=1, info="accepted 1/1, 3.0 tok/s")
    assert reported[:3] == [(0, "parsing 0/?"), (0, "parsing 3/3"), (1, "training 0/1")]
    trained = [line for bar, line in reported if bar == training]  # 0/1, 1/1000, each 1%
    assert len(trained) == 2 + 100 and trained[-1] == "training 1000/1000 (loss 0.001)"
    assert trained[2] == "training 10/1000 (loss 0.100), 24:45 left"  # 15 s for 10 of 1000
    assert reported[-1] == (2, "rollouts 1/2 (accepted 1/1, 3.0 tok/s), 1:30 left")


def test_a_solve_and_a_specialize_run_do_not_run_at_once(repo, tmp_path):
    """Each refuses to start while the other runs, saying what runs and how to stop it."""
    teacher = refusing_teacher(tmp_path / "slow.json", before=SLOW_STEPS)
    specializing = SeraApp(repo, specialize_flags(tmp_path, teacher))
    slow_solve = write_script(tmp_path / "slow-solve.json", [tool_call("bash", command="sleep 0.3")] * 60)
    solving = SeraApp(repo, {"model.spec": slow_solve, "agent.scaffold": "agent",
                             "solve.candidates": 1})

    async def solve_while_specializing():
        async with specializing.run_test(size=SIZE, notifications=True) as pilot:
            await specialize(pilot)
            await wait_until(pilot, lambda: "rollouts 0/1" in progress_text(specializing))
            specializing.query_one("#task").value = "calc.add is wrong"
            await pilot.click("#task")
            await pilot.press("enter")
            said = toasts(specializing)
            await pilot.press("escape")
            await specializing.workers.wait_for_complete()
            return said

    async def specialize_while_solving():
        async with solving.run_test(size=SIZE, notifications=True) as pilot:
            solving.query_one("#task").value = "calc.add is wrong"
            await pilot.press("enter")
            await wait_until(pilot, lambda: "step 1" in log_text(solving))
            await pilot.press("ctrl+s")  # in the task line
            await pilot.pause()
            said, screen = toasts(solving), type(solving.screen).__name__
            await pilot.press("escape")
            await solving.workers.wait_for_complete()
            return said, screen
    said = asyncio.run(solve_while_specializing())
    assert "a specialize run is running: wait for it to end, or press Escape to cancel it (it " \
           "can be resumed later); then press Enter to solve" in said
    assert [path.name for path in (repo / ".sera" / "runs").iterdir()] == \
        [specialize_manifest(repo)["id"]]  # no solve run
    said, screen = asyncio.run(specialize_while_solving())
    assert "a solve is running: wait for it to end, or press Escape to cancel it; then press s " \
           "(ctrl+s in the task line) to specialize" in said
    assert screen != "PresetScreen"
    assert len(list((repo / ".sera" / "runs").glob("*specialize*"))) == 1


def sera_tui(repo: Path, *flags: str, **streams) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sera.cli", "-C", str(repo), "tui", *flags],
                            stderr=subprocess.PIPE, text=True, **streams)


def test_without_a_terminal_sera_tui_refuses_at_once(repo):
    process = sera_tui(repo, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=20)  # it used to spin until killed
    finally:
        process.kill()
    assert process.returncode == 1 and out == ""
    assert err.splitlines() == ["sera: error: sera tui needs a terminal: run it in one, or use "
                                "`sera solve` for scripts"]


def test_a_wrong_run_fails_before_the_app_starts(repo):
    """In a terminal (a pty), where the app would start and wait for keys."""
    saved_run(repo)
    terminal, app_side = pty.openpty()
    try:
        process = sera_tui(repo, "--run", "bogus", stdin=app_side, stdout=app_side)
        os.close(app_side)
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("sera tui --run bogus started the app instead of failing")
    finally:
        os.close(terminal)
    assert process.returncode == 1
    assert err.splitlines() == ["sera: error: run 'bogus' matches no run; `sera runs` lists them"]


def test_solve_ends_with_commands_that_work_as_typed(repo, tmp_path):
    """The quickstart ends with solve's apply and undo lines, run from outside the repository
    with sera's virtualenv off PATH: they must carry sera's full path and -C."""
    sera = Path(sys.executable).parent / "sera"
    script = write_script(tmp_path / "guided.json", [GOOD])
    elsewhere = {**os.environ, "PATH": os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != sera.parent)}
    solved = subprocess.run([str(sera), "-C", str(repo), "solve", "--model", script, "-n", "1",
                             "--scaffold", "guided", "calc.add returns the wrong sum"],
                            cwd=tmp_path, env=elsewhere, capture_output=True, text=True,
                            timeout=120, check=True)
    said = dict(re.findall(r"^(apply the top one|undo that) with: +(.+)$", solved.stdout, re.M))
    assert said["apply the top one"].startswith(f"{sera} -C {repo} apply ")

    def typed(command: str) -> None:
        subprocess.run(command, shell=True, cwd="/", env=elsewhere, check=True,
                       capture_output=True, timeout=60)
    typed(said["apply the top one"])
    assert "return a + b" in (repo / "calc.py").read_text()
    typed(said["undo that"])
    assert (repo / "calc.py").read_text() == CALC
