"""Apply and undo are exact: undo keeps the user's edits next to (not on) the patched lines, an
applied patch is not applied twice, and concurrent applies serialize."""

from __future__ import annotations

import json
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
