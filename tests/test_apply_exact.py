"""Apply and undo are exact: undo keeps the user's edits next to (not on) the patched lines, an
applied patch is not applied twice, and concurrent applies serialize."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from conftest import git, user_state
from sera.agent.apply import apply_patch, undo_last
from sera.agent.merge import merge_lines
from sera.errors import ApplyError


def patch_of(repo, old: str, new: str) -> str:
    """The patch that turns `old` into `new` in calc.py, leaving calc.py as it was."""
    calc = repo / "calc.py"
    text = calc.read_text()
    calc.write_text(text.replace(old, new))
    patch = git(repo, "diff", "calc.py")
    calc.write_text(text)
    return patch


def test_undo_keeps_lines_the_user_added_right_after_and_before_the_patched_line(repo):
    calc = repo / "calc.py"
    original = calc.read_text()
    apply_patch(repo, patch_of(repo, "return a - b", "return a + b"), "the fix")
    calc.write_text(calc.read_text().replace("    return a + b\n",
                                             "    # checked\n    return a + b\n    # end\n"))
    undo_last(repo)
    assert calc.read_text() == original.replace("    return a - b\n",
                                                "    # checked\n    return a - b\n    # end\n")


def test_undo_refuses_an_edit_on_a_patched_line_and_changes_nothing(repo):
    apply_patch(repo, patch_of(repo, "return a - b", "return a + b"), "the fix")
    calc = repo / "calc.py"
    calc.write_text(calc.read_text().replace("return a + b", "return a + b + 0"))
    before = user_state(repo)
    with pytest.raises(ApplyError, match="in the lines the patch touched; nothing was changed"):
        undo_last(repo)
    assert user_state(repo) == before


def test_applying_an_applied_patch_again_says_so_and_changes_nothing(repo):
    patch = patch_of(repo, "return a - b", "return a + b")
    apply_patch(repo, patch, "the fix")
    before = user_state(repo)
    stack = (repo / ".sera" / "undo" / "stack.json").read_text()
    with pytest.raises(ApplyError, match="already applied"):
        apply_patch(repo, patch, "the fix")
    assert user_state(repo) == before
    assert (repo / ".sera" / "undo" / "stack.json").read_text() == stack


def test_applies_from_many_threads_serialize(repo):
    """Eight threads apply the same patch: one succeeds, the others see it applied."""
    patch = patch_of(repo, "return a - b", "return a + b")
    outcomes: list[str] = []

    def apply():
        try:
            apply_patch(repo, patch, "the fix")
            outcomes.append("applied")
        except ApplyError as error:
            outcomes.append("already" if "already applied" in str(error) else str(error))

    threads = [threading.Thread(target=apply) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["already"] * 7 + ["applied"]
    assert len(json.loads((repo / ".sera" / "undo" / "stack.json").read_text())) == 1
    assert (repo / "calc.py").read_text().count("return a + b") == 1


@pytest.mark.parametrize("ours, theirs, merged", [
    (b"a\nX\nb\nc\n", b"a\nb\nC\n", b"a\nX\nb\nC\n"),      # apart
    (b"a\nb\nX\nc\n", b"a\nB\nc\n", b"a\nB\nX\nc\n"),      # inserted right after a changed line
    (b"X\na\nb\nc\n", b"A\nb\nc\n", b"X\nA\nb\nc\n"),      # inserted right before it
    (b"a\nB\nc\n", b"a\nB\nc\n", b"a\nB\nc\n"),            # the same change on both sides
])
def test_merge_lines_takes_edits_that_touch_but_do_not_overlap(ours, theirs, merged):
    assert merge_lines(b"a\nb\nc\n", ours, theirs) == merged


def test_merge_lines_keeps_line_endings():
    assert merge_lines(b"a\r\nb\r\nc\r\n", b"a\r\nX\r\nb\r\nc\r\n", b"a\r\nb\r\nC\r\n") == \
        b"a\r\nX\r\nb\r\nC\r\n"


@pytest.mark.parametrize("ours, theirs", [
    (b"a\nX\nc\n", b"a\nY\nc\n"),     # one line changed two ways
    (b"a\nX\nb\nc\n", b"a\nY\nb\nc\n"),  # different lines inserted at one place
    (b"a\nc\n", b"a\nB\nc\n"),        # deleted on one side, changed on the other
])
def test_merge_lines_refuses_overlapping_edits(ours, theirs):
    assert merge_lines(b"a\nb\nc\n", ours, theirs) is None


def two_file_patch(repo) -> str:
    """A patch of calc.py and staged.txt (whose index matches the working tree)."""
    calc, staged = repo / "calc.py", repo / "staged.txt"
    texts = calc.read_text(), staged.read_text()
    calc.write_text(texts[0].replace("return a - b", "return a + b"))
    staged.write_text(texts[1] + "fixed add\n")
    patch = git(repo, "diff", "calc.py", "staged.txt")
    calc.write_text(texts[0])
    staged.write_text(texts[1])
    return patch


def killed_at(repo, fault: str, call: str, patch: str = "") -> None:
    """Run `call` (apply or undo) in a child process that SIGKILLs itself at `fault`."""
    code = ("import sys; from pathlib import Path; from sera.agent.apply import apply_patch, undo_last\n"
            "repo = Path(sys.argv[1])\n"
            + ("apply_patch(repo, sys.stdin.read(), 'the fix')" if call == "apply" else "undo_last(repo)"))
    done = subprocess.run([sys.executable, "-c", code, str(repo)], input=patch, text=True,
                          capture_output=True, env={**os.environ, "SERA_FAULT": fault})
    assert done.returncode == -signal.SIGKILL, done.stderr


@pytest.mark.parametrize("fault", ["apply-recorded", "apply-written"])
def test_an_apply_killed_midway_is_settled_by_the_next_call(repo, fault):
    patch = two_file_patch(repo)
    before = user_state(repo)
    killed_at(repo, fault, "apply", patch)
    if fault == "apply-recorded":  # killed before any file was written: the entry is dropped
        assert user_state(repo) == before
        apply_patch(repo, patch, "the fix")
    else:  # killed after writing: the entry is completed, and undo restores every file
        with pytest.raises(ApplyError, match="already applied"):
            apply_patch(repo, patch, "the fix")
    assert "return a + b" in (repo / "calc.py").read_text()
    undo_last(repo)
    assert user_state(repo) == before
    with pytest.raises(ApplyError, match="nothing to undo"):
        undo_last(repo)


def test_an_undo_killed_after_its_first_file_is_finished_by_the_next_undo(repo):
    patch = two_file_patch(repo)
    before = user_state(repo)
    apply_patch(repo, patch, "the fix")
    killed_at(repo, "undo-restoring", "undo")
    assert user_state(repo) != before  # one file restored, the other not
    undo_last(repo)
    assert user_state(repo) == before
