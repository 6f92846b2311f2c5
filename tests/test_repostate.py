"""States of a repository sera must not act on (a merge, rebase, cherry-pick, revert or bisect in
progress, unresolved conflicts, conflict markers in the changes) are named, with the way out, and
solve, apply and undo refuse them before changing anything."""

from __future__ import annotations

import subprocess

import pytest

from conftest import FIX_SCRIPT_REPLIES, git, user_state, write_script
from sera.agent.apply import apply_patch, undo_last
from sera.agent.repostate import unsafe_state
from sera.cli import main
from sera.errors import ApplyError

PATCH_ADD = ("--- a/calc.py\n+++ b/calc.py\n@@ -1,3 +1,3 @@\n def add(a, b):\n"
             '     """Return the sum of a and b."""\n-    return a - b\n+    return a + b\n')


def conflicting_branches(repo):
    """Commit the user's edits, then a branch and main changing the same line of calc.py (scale)."""
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "work")
    git(repo, "checkout", "-qb", "other")
    (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("v * factor", "factor * v"))
    git(repo, "commit", "-qam", "other")
    git(repo, "checkout", "-q", "main")
    (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("v * factor", "v * factor * 1"))
    git(repo, "commit", "-qam", "main")


def test_a_clean_tree_and_ordinary_edits_are_fine(repo):
    assert unsafe_state(repo) is None
    (repo / "calc.py").write_text("x = '=======' \n")  # a marker-like string mid-line is code
    assert unsafe_state(repo) is None


@pytest.mark.parametrize("start, what, way_out", [
    (["merge", "other"], "a merge is in progress", "git merge --abort"),
    (["cherry-pick", "other"], "a cherry-pick is in progress", "git cherry-pick --abort"),
    (["rebase", "other"], "a rebase", "git rebase --abort"),
])
def test_an_operation_stopped_on_conflicts_is_named_with_its_way_out(repo, start, what, way_out):
    conflicting_branches(repo)
    assert subprocess.run(["git", *start], cwd=repo, capture_output=True).returncode != 0
    problem = unsafe_state(repo)
    assert what in problem and way_out in problem


def test_a_bisect_is_named(repo):
    git(repo, "bisect", "start")
    assert "git bisect reset" in unsafe_state(repo)


def test_conflicts_of_a_stash_and_markers_staged_away_are_found(repo):
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "work")
    (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("a - b", "b - a"))
    git(repo, "stash", "-q")
    (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("a - b", "a * b"))
    git(repo, "commit", "-qam", "main")
    assert subprocess.run(["git", "stash", "pop"], cwd=repo, capture_output=True).returncode != 0
    assert "calc.py has unresolved conflicts" in unsafe_state(repo)  # no merge, yet unmerged
    git(repo, "add", "calc.py")  # "resolved" with the markers still in the file
    assert "calc.py still holds conflict markers" in unsafe_state(repo)
    git(repo, "commit", "-qm", "markers committed")
    assert unsafe_state(repo) is None  # what HEAD holds is the user's choice


def test_solve_apply_and_undo_refuse_during_a_merge_and_change_nothing(repo, tmp_path, capsys):
    (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("a - b", "a + b"))
    patch = git(repo, "diff", "calc.py")
    git(repo, "checkout", "calc.py")
    apply_patch(repo, patch, "a fix")
    conflicting_branches(repo)
    subprocess.run(["git", "merge", "other"], cwd=repo, capture_output=True)
    before = user_state(repo)
    spec = write_script(tmp_path / "s.json", FIX_SCRIPT_REPLIES)
    assert main(["-C", str(repo), "solve", "--model", spec, "-n", "1", "fix add"]) != 0
    assert "a merge is in progress" in capsys.readouterr().err
    with pytest.raises(ApplyError, match="cannot apply a fix: a merge is in progress"):
        apply_patch(repo, patch, "a fix")
    with pytest.raises(ApplyError, match="cannot undo a fix: a merge is in progress"):
        undo_last(repo)
    assert user_state(repo) == before and not (repo / ".sera" / "runs").exists()


def test_a_detached_head_is_worked_on_and_left_detached(repo, tmp_path, capsys):
    """A detached HEAD (a checked-out tag or commit) is an ordinary state: solve, apply and undo
    work, and HEAD stays detached at the same commit."""
    git(repo, "checkout", "-q", "--detach")
    head = (repo / ".git" / "HEAD").read_text()
    spec = write_script(tmp_path / "s.json", FIX_SCRIPT_REPLIES)
    assert main(["-C", str(repo), "solve", "--model", spec, "-n", "1", "--scaffold", "agent",
                 "fix add"]) == 0
    before = user_state(repo)
    assert main(["-C", str(repo), "apply"]) == 0
    assert "return a + b" in (repo / "calc.py").read_text()
    assert main(["-C", str(repo), "undo"]) == 0
    assert user_state(repo) == before and (repo / ".git" / "HEAD").read_text() == head


def test_a_repository_without_commits_is_told_to_commit_once(tmp_path, capsys):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q", "-b", "main")
    (fresh / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    spec = write_script(tmp_path / "s.json", FIX_SCRIPT_REPLIES)
    for argv in (["solve", "--model", spec, "fix add"], ["apply"], ["undo"], ["bench"],
                 ["specialize", "--no-train"]):
        assert main(["-C", str(fresh), *argv]) == 1
        assert "no commits yet; commit once (git add -A && git commit" in capsys.readouterr().err
    assert sorted(p.name for p in fresh.iterdir()) == [".git", "calc.py"]
