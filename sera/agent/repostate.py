"""Repository states sera must not act on: an operation of git's half done, or conflicts.

During a merge, rebase, cherry-pick, revert or bisect the working tree holds an unfinished state
(conflict markers, a commit being replayed); a snapshot of it would hand the agent the markers as
code, and an applied patch would mix with the resolution. `unsafe_state` says which state it is and
what to run to leave it; solve, apply and undo refuse while it returns a message.
"""

from __future__ import annotations

from pathlib import Path

from sera.agent.workcopy import git, git_path, run_git

# (file or folder in the git directory, what is in progress, how to finish or leave it)
OPERATIONS = (
    ("rebase-merge", "a rebase", "git rebase --continue, or git rebase --abort"),
    ("rebase-apply", "a rebase or git am", "git rebase --continue / git am --continue, or --abort"),
    ("MERGE_HEAD", "a merge", "resolve the conflicts and commit, or git merge --abort"),
    ("CHERRY_PICK_HEAD", "a cherry-pick", "git cherry-pick --continue, or git cherry-pick --abort"),
    ("REVERT_HEAD", "a revert", "git revert --continue, or git revert --abort"),
    ("BISECT_LOG", "a bisect", "git bisect reset"),
)
MARKER_WARNING = "leftover conflict marker"
LISTED = 5  # files named in a message


def unsafe_state(repo_root: Path) -> str | None:
    """Why sera must not work on `repo_root` now (what is in progress and how to leave it), or
    None when the working tree is in a state to snapshot and patch."""
    for name, what, leave in OPERATIONS:
        if git_path(repo_root, name).exists():
            return f"{what} is in progress in {repo_root}; finish it first ({leave})"
    # plumbing only (ls-files, diff-index): porcelain diff would rewrite the user's index
    unmerged = list(dict.fromkeys(line.split("\t", 1)[-1] for line in
                                  _lines(git(["ls-files", "--unmerged"], repo_root))))
    if unmerged:
        return (f"{_names(unmerged)} {'has' if len(unmerged) == 1 else 'have'} unresolved "
                f"conflicts; resolve them (edit, then git add) before running sera")
    marked = _files_with_markers(repo_root)
    if marked:
        return (f"{_names(marked)} still {'holds' if len(marked) == 1 else 'hold'} conflict "
                f"markers (<<<<<<< ======= >>>>>>>) in your changes; resolve them before running sera")
    return None


def _files_with_markers(repo_root: Path) -> list[str]:
    """Tracked files whose uncommitted changes add conflict markers (git diff-index --check)."""
    # --check exits 2 when it finds problems, so its status is not read
    done = run_git(["-c", "core.whitespace=-blank-at-eol,-space-before-tab,-blank-at-eof",
                    "diff-index", "--check", "HEAD"], repo_root)
    report = done.stdout.decode("utf-8", "replace")
    files = [line.split(":", 1)[0] for line in report.splitlines() if MARKER_WARNING in line]
    return list(dict.fromkeys(files))


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _names(files: list[str]) -> str:
    shown = ", ".join(files[:LISTED])
    return shown + (f" and {len(files) - LISTED} more" if len(files) > LISTED else "")
