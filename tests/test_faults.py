"""Fault and soak suite: random sequences of user edits, applies and undos against a fingerprint
of the user's state, and processes killed (SIGKILL) in the middle of apply and undo. Every
outcome is allowed but one: losing what the user had. The figures (runs, faults injected, states
checked, bytes lost) are printed at the end of the test session."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from conftest import GIT_IDENTITY, git, user_state
from sera.agent.apply import apply_patch, undo_last
from sera.errors import ApplyError

pytestmark = pytest.mark.faults

FILES = 4          # files f0..f3, ten lines each; patch i changes line 5 of f<i>
SEQUENCES = 100
OPERATIONS = 8
FIGURES = {"runs": 0, "faults injected": 0, "states checked": 0, "bytes lost": 0}


def original(i: int) -> list[str]:
    return [f"f{i} line {n}\n" for n in range(10)]


@pytest.fixture
def soak_repo(tmp_path, monkeypatch):
    for name, value in GIT_IDENTITY.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "soak"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for i in range(FILES):
        (root / f"f{i}.txt").write_text("".join(original(i)))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "files")
    patches = []
    for i in range(FILES):
        lines = original(i)
        lines[5] = f"f{i} line 5 PATCHED\n"
        (root / f"f{i}.txt").write_text("".join(lines))
        patches.append(git(root, "diff", f"f{i}.txt"))
        git(root, "checkout", f"f{i}.txt")
    return root, patches


class Soak:
    """One random sequence, with what must hold after each step."""

    def __init__(self, root, patches, rng):
        self.root, self.patches, self.rng = root, patches, rng
        self.markers: dict[str, str] = {}   # line the user inserted -> file
        self.applied: list[int] = []        # patches applied, in order

    def step(self) -> None:
        kind = self.rng.choice(["edit", "edit", "apply", "apply", "undo"])
        before = user_state(self.root)
        try:
            getattr(self, kind)()
        except ApplyError:
            assert user_state(self.root) == before, f"a refused {kind} changed the user's state"
        self.check()

    def edit(self) -> None:
        name = f"f{self.rng.randrange(FILES)}.txt"
        path = self.root / name
        lines = path.read_text().splitlines(keepends=True)
        marker = f"user line {len(self.markers)}\n"
        lines.insert(self.rng.randrange(len(lines) + 1), marker)
        path.write_text("".join(lines))
        self.markers[marker] = name

    def apply(self) -> None:
        i = self.rng.randrange(FILES)
        apply_patch(self.root, self.patches[i], f"patch {i}")
        self.applied.append(i)

    def undo(self) -> None:
        undo_last(self.root)
        i = self.applied.pop()
        assert "PATCHED" not in (self.root / f"f{i}.txt").read_text()

    def check(self) -> None:
        FIGURES["states checked"] += 1
        for marker, name in self.markers.items():
            if marker not in (self.root / name).read_text():
                FIGURES["bytes lost"] += len(marker)
                pytest.fail(f"the user's line {marker.strip()!r} in {name} was lost")
        for i in range(FILES):
            patched = "PATCHED" in (self.root / f"f{i}.txt").read_text()
            assert patched == (i in self.applied), f"f{i}.txt does not match the applies on record"


def test_random_edits_applies_and_undos_never_lose_the_users_lines(soak_repo):
    root, patches = soak_repo
    for seed in range(SEQUENCES):
        soak = Soak(root, patches, random.Random(seed))
        for _ in range(OPERATIONS):
            soak.step()
        while soak.applied:  # wind back: every apply of the sequence undoes
            soak.undo()
            soak.check()
        FIGURES["runs"] += 1
        git(root, "checkout", "--", ".")  # the next sequence starts from the commit
    assert FIGURES["bytes lost"] == 0


@pytest.mark.parametrize("fault, call", [("apply-recorded", "apply"), ("apply-written", "apply"),
                                         ("undo-restoring", "undo")])
def test_killed_applies_and_undos_are_settled_without_loss(soak_repo, fault, call):
    root, patches = soak_repo
    two = patches[0] + patches[1]
    (root / "f2.txt").write_text("user edit\n" + (root / "f2.txt").read_text())
    before = user_state(root)
    if call == "undo":
        apply_patch(root, two, "two files")
    code = ("import sys; from pathlib import Path; from sera.agent.apply import apply_patch, "
            "undo_last\nrepo = Path(sys.argv[1])\n"
            + ("apply_patch(repo, sys.stdin.read(), 'two files')" if call == "apply"
               else "undo_last(repo)"))
    done = subprocess.run([sys.executable, "-c", code, str(root)], input=two, text=True,
                          capture_output=True, env={**os.environ, "SERA_FAULT": fault})
    assert done.returncode == -signal.SIGKILL, done.stderr
    FIGURES["faults injected"] += 1
    try:  # whatever the kill left, the next calls bring the user back to where they were
        undo_last(root)
    except ApplyError as error:
        assert "nothing to undo" in str(error)
    FIGURES["states checked"] += 1
    assert user_state(root) == before


def test_a_solve_killed_with_a_work_copy_on_disk_leaves_the_user_as_they_were(repo, tmp_path):
    """kill -9 while a candidate's work copy exists: the user's state is untouched, and the next
    solve removes the orphaned work copy before it runs."""
    from conftest import FIX_SCRIPT_REPLIES, write_script
    script = write_script(tmp_path / "fix.json", FIX_SCRIPT_REPLIES)
    before = user_state(repo)

    def sera_solve(**env):
        return subprocess.run([sys.executable, "-m", "sera", "-C", str(repo), "solve", "--model",
                               script, "-n", "1", "fix add"], capture_output=True, text=True,
                              env={**os.environ, **env})

    killed = sera_solve(SERA_FAULT="solve-candidate")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    FIGURES["faults injected"] += 1
    assert user_state(repo) == before
    assert git(repo, "worktree", "list").count("\n") == 2  # the killed candidate's work copy
    done = sera_solve()
    assert done.returncode == 0, done.stderr
    assert git(repo, "worktree", "list").count("\n") == 1  # the orphan is gone, and the new one
    FIGURES["states checked"] += 1
    assert user_state(repo) == before
