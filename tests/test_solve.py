"""A scripted model drives full solves on a real repository with a real shell and real git."""

from __future__ import annotations

import json

import pytest

from conftest import FIX_SCRIPT_REPLIES, git, tool_call, user_state, write_script
from sera.agent.apply import apply_candidate, undo_last
from sera.agent.runs import list_runs
from sera.agent.solve import solve
from sera.agent.trajectory import Trajectory
from sera.config import load_settings
from sera.errors import ApplyError, SeraError
from sera.models.registry import load_model

FIX_SCRIPT = FIX_SCRIPT_REPLIES


def run_solve(repo, tmp_path, replies, **flags):
    spec = write_script(tmp_path / "script.json", replies)
    settings = load_settings(repo, {"model.spec": spec, "solve.candidates": 2, **flags})
    model = load_model(spec, settings.model)
    return solve(repo, "calc.add returns the wrong sum", settings, model)


def test_scripted_solve_fixes_bug_without_touching_user_state(repo, tmp_path):
    before = user_state(repo)
    result = run_solve(repo, tmp_path, FIX_SCRIPT)

    assert user_state(repo) == before
    assert len(result.candidates) == 2
    for cand in result.candidates:
        assert cand.status == "submitted"
        assert cand.steps == 6
        assert "-    return a - b\n+    return a + b" in cand.patch
        assert "notes.txt" not in cand.patch and "README" not in cand.patch
    traj = Trajectory.load(result.candidates[0].trajectory)
    observations = [m["content"] for m in traj.messages if m["role"] == "user"]
    assert "untracked file the agent should see" in observations[1]  # the agent saw the user's edits
    assert "5" in observations[4]  # the fixed code ran in the work copy
    assert [m["role"] for m in traj.messages[:3]] == ["system", "user", "assistant"]
    assert not list((tmp_path / "work").glob("*")) if (tmp_path / "work").exists() else True
    assert git(repo, "worktree", "list").count("\n") == 1  # every work copy is gone


def test_apply_and_undo_round_trip(repo, tmp_path):
    run_solve(repo, tmp_path, FIX_SCRIPT)
    before = user_state(repo)
    applied = apply_candidate(repo)
    assert applied.files == ["calc.py"]
    assert "return a + b" in (repo / "calc.py").read_text()
    assert (repo / "README.md").read_text() == "# project\n\nUncommitted notes.\n"
    index_after_apply = user_state(repo)["index"]
    assert index_after_apply == before["index"]  # apply never stages
    undo_last(repo)
    assert user_state(repo) == before
    with pytest.raises(ApplyError, match="nothing to undo"):
        undo_last(repo)


def test_apply_merges_with_later_edits_and_undo_keeps_them(repo, tmp_path):
    result = run_solve(repo, tmp_path, FIX_SCRIPT)
    calc = repo / "calc.py"
    # After the solve the user edits a context line of the patch's hunk: plain apply fails, 3-way works.
    calc.write_text(calc.read_text().replace("def scale(values, factor):", "def scale(values, factor=1):"))
    applied = apply_candidate(repo, f"{result.run_id}:1")
    assert applied.three_way
    assert "factor=1" in calc.read_text() and "return a + b" in calc.read_text()
    # A later edit elsewhere in the file survives undo.
    calc.write_text(calc.read_text() + "\nEXTRA = 1\n")
    undo_last(repo)
    text = calc.read_text()
    assert "return a - b" in text and "EXTRA = 1" in text and "factor=1" in text


def test_conflicting_apply_is_refused_and_changes_nothing(repo, tmp_path):
    run_solve(repo, tmp_path, FIX_SCRIPT)
    calc = repo / "calc.py"
    calc.write_text(calc.read_text().replace("return a - b", "return sum((a, b))"))
    before = user_state(repo)
    with pytest.raises(ApplyError, match="does not apply"):
        apply_candidate(repo)
    assert user_state(repo) == before


def test_undo_refuses_when_user_rewrote_the_patched_lines(repo, tmp_path):
    run_solve(repo, tmp_path, FIX_SCRIPT)
    apply_candidate(repo)
    calc = repo / "calc.py"
    calc.write_text(calc.read_text().replace("return a + b", "return b + a"))
    before = user_state(repo)
    with pytest.raises(ApplyError, match="cannot undo"):
        undo_last(repo)
    assert user_state(repo) == before


def test_run_is_saved_and_listed(repo, tmp_path):
    result = run_solve(repo, tmp_path, FIX_SCRIPT)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["task"] == "calc.add returns the wrong sum"
    assert [r["id"] for r in list_runs(repo)] == [result.run_id]
    assert ".sera" not in git(repo, "status", "--porcelain", "--untracked-files=all")


def test_step_limit_and_unparsable_replies_end_cleanly(repo, tmp_path):
    replies = ["I think the bug is in add.", tool_call("bash", command="true")] * 3
    result = run_solve(repo, tmp_path, replies, **{"agent.max_steps": 4})
    cand = result.candidates[0]
    assert cand.status == "step_limit" and cand.patch == ""
    traj = Trajectory.load(cand.trajectory)
    assert "tool_call" in traj.messages[3]["content"]  # the format error told the model the format


def test_model_running_out_of_replies_is_recorded_not_raised(repo, tmp_path):
    result = run_solve(repo, tmp_path, FIX_SCRIPT[:3])
    cand = result.candidates[0]
    assert cand.status == "model_error" and "3 replies" in cand.exit_message
    assert "return a + b" in cand.patch  # the partial patch is kept for inspection


def test_empty_task_is_refused(repo, tmp_path):
    with pytest.raises(SeraError, match="task is empty"):
        run_solve_task(repo, tmp_path, "   ")


def run_solve_task(repo, tmp_path, task):
    spec = write_script(tmp_path / "script.json", FIX_SCRIPT)
    settings = load_settings(repo, {"model.spec": spec})
    return solve(repo, task, settings, load_model(spec, settings.model))


def test_crlf_files_keep_their_line_endings_through_solve_apply_and_undo(repo, tmp_path):
    (repo / "win.py").write_bytes(b"def f():\r\n    return 1\r\n")
    git(repo, "add", "win.py")
    git(repo, "commit", "-qm", "windows file")
    replies = [tool_call("str_replace_editor", command="str_replace", path="win.py",
                         old_str="return 1", new_str="return 2"),
               tool_call("submit"), tool_call("submit")]
    result = run_solve(repo, tmp_path, replies)
    assert "+    return 2\r\n" in result.candidates[0].patch
    before = user_state(repo)
    apply_candidate(repo)
    assert (repo / "win.py").read_bytes() == b"def f():\r\n    return 2\r\n"
    undo_last(repo)
    assert user_state(repo) == before



@pytest.mark.parametrize("scaffold", ["agent", "guided"])
def test_a_candidate_past_its_time_limit_ends_with_what_it_changed(repo, tmp_path, scaffold):
    result = run_solve(repo, tmp_path, FIX_SCRIPT, **{"agent.time_limit": 1e-9,
                                                      "agent.scaffold": scaffold})
    for cand in result.candidates:
        assert cand.status == "time_limit" and "agent.time_limit" in cand.exit_message


def test_candidates_not_started_within_the_solves_time_limit_end_as_time_limit(repo, tmp_path):
    """The first candidate sleeps 4 s of an 8 s solve: the second has under 5 s left and does not
    start; its record says why."""
    slow = [tool_call("bash", command="sleep 4"), *FIX_SCRIPT[2:]]
    result = run_solve(repo, tmp_path, slow * 2, **{"solve.time_limit": 8, "solve.parallel": 1,
                                                    "agent.scaffold": "agent"})
    first, second = sorted(result.candidates, key=lambda c: c.index)
    assert first.status == "submitted" and "return a + b" in first.patch
    assert second.status == "time_limit" and "solve.time_limit" in second.exit_message
    assert second.steps == 0 and Trajectory.load(second.trajectory).meta["status"] == "time_limit"


def test_the_time_limit_cuts_a_reply_and_the_users_cancel_still_counts():
    import threading
    import time
    from sera.agent.loop import _ReplyStop
    stop = _ReplyStop(None, 0.05)
    assert not stop.is_set()
    time.sleep(0.3)
    assert stop.is_set() and stop.timed_out
    user = threading.Event()
    stop = _ReplyStop(user, None)
    user.set()
    assert stop.is_set() and not stop.timed_out
    stop.close()


def test_replies_without_a_tool_call_in_a_row_end_the_candidate(repo, tmp_path):
    replies = ["I think the bug is in add.", tool_call("bash", command="true"),
               "Still thinking.", "Let me think more.", "And more.", tool_call("submit")]
    result = run_solve(repo, tmp_path, replies, **{"agent.max_malformed": 3,
                                                   "agent.scaffold": "agent"})
    cand = result.candidates[0]
    assert cand.status == "malformed" and "3 replies in a row" in cand.exit_message
    assert cand.steps == 5  # the one that parsed reset the count


def test_apply_says_so_when_no_candidate_changed_anything(repo, tmp_path):
    run_solve(repo, tmp_path, [tool_call("submit"), tool_call("submit")],
              **{"agent.scaffold": "agent"})
    before = user_state(repo)
    with pytest.raises(ApplyError, match="no candidate of run .* changed anything; solve again"):
        apply_candidate(repo)
    assert user_state(repo) == before


@pytest.mark.parametrize("scaffold", ["agent", "guided"])
def test_both_scaffolds_warn_when_commands_ran_without_a_sandbox(repo, tmp_path, monkeypatch,
                                                                 scaffold):
    import shutil
    import sys
    from sera.agent import sandbox
    bin_dir = tmp_path / "bin-without-bwrap"
    bin_dir.mkdir()
    for tool in ("git", "bash", "sh", "env"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(bin_dir))
    sandbox.bwrap_problem.cache_clear()
    guided_fix = ("calc.py\n```python\n<<<<<<< SEARCH\n    return a - b\n=======\n"
                  "    return a + b\n>>>>>>> REPLACE\n```")
    try:
        result = run_solve(repo, tmp_path, FIX_SCRIPT if scaffold == "agent" else [guided_fix],
                           **{"agent.scaffold": scaffold, "agent.sandbox": "auto",
                              "solve.candidates": 1, "agent.test_command":
                              "python3 -c 'import calc; assert calc.add(2, 3) == 5'"})
    finally:
        sandbox.bwrap_problem.cache_clear()
    assert result.candidates[0].status == "submitted", result.candidates[0].exit_message
    assert "bubblewrap not found" in result.sandbox_warning
