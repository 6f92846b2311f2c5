"""Shared fixtures: real git repositories in temporary folders, and a fingerprint of user state."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_IDENTITY}).stdout


CALC = '''def add(a, b):
    """Return the sum of a and b."""
    return a - b


def scale(values, factor):
    return [v * factor for v in values]
'''


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A committed repository with a bug in calc.add, plus an uncommitted edit, an untracked file,
    a staged change, a stash entry and a second branch: everything sera must leave alone."""
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "calc.py").write_text(CALC)
    (root / "README.md").write_text("# project\n")
    (root / ".gitignore").write_text("*.log\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    git(root, "branch", "feature")
    (root / "README.md").write_text("# project\nstashed line\n")
    git(root, "stash", "-q")
    (root / "README.md").write_text("# project\n\nUncommitted notes.\n")   # unstaged edit
    (root / "notes.txt").write_text("untracked file the agent should see\n")
    (root / "staged.txt").write_text("staged\n")
    git(root, "add", "staged.txt")                                        # staged, not committed
    (root / "debug.log").write_text("ignored\n")
    return root


def user_state(root: Path) -> dict:
    """Everything of the user's that sera must not change: files, index, stash, branches, HEAD."""
    files = {}
    for folder, subfolders, names in os.walk(root):
        if Path(folder) == root:  # not into .git: a killed sera's git child may still change it
            subfolders[:] = [s for s in subfolders if s not in (".git", ".sera")]
        for name in names:
            path = Path(folder, name)
            if path.is_file():
                files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    files = dict(sorted(files.items()))
    git_dir = root / ".git"
    return {
        "files": files,
        "index": hashlib.sha256((git_dir / "index").read_bytes()).hexdigest(),
        "stash": git(root, "stash", "list", "--format=%H %s"),
        "branches": git(root, "for-each-ref", "--format=%(refname) %(objectname)"),
        "head": git(root, "rev-parse", "HEAD"),
        "HEAD file": (git_dir / "HEAD").read_bytes(),  # the checked-out branch itself
        "status": git(root, "--no-optional-locks", "status", "--porcelain", "--untracked-files=all"),
    }


def write_script(path: Path, replies: list[str]) -> str:
    path.write_text(json.dumps(replies))
    return f"scripted:{path}"


def tool_call(name: str, **arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


# A scripted agent that looks around, fixes calc.add, checks it and submits.
FIX_SCRIPT_REPLIES = [
    "Let me look at the files first.\n" + tool_call("bash", command="ls && cat notes.txt"),
    tool_call("str_replace_editor", command="view", path="calc.py"),
    "The sum subtracts.\n" + tool_call("str_replace_editor", command="str_replace", path="calc.py",
                                       old_str="return a - b", new_str="return a + b"),
    tool_call("bash", command="python3 -c 'import calc; print(calc.add(2, 3))'"),
    tool_call("submit"),
    tool_call("submit"),
]


def pytest_terminal_summary(terminalreporter):
    """The fault suite's figures, when it ran."""
    import sys
    faults = sys.modules.get("test_faults")
    if faults is not None and faults.FIGURES["runs"]:
        figures = ", ".join(f"{name} {value}" for name, value in faults.FIGURES.items())
        terminalreporter.write_line(f"fault suite: {figures}")
