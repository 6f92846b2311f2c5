"""sera names its build: the version, and its source's commit when it runs from a git checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import sera
from conftest import git

CODE = "from sera.build import build_id; print(build_id())"


def build_of(source: Path) -> str:
    """build_id() as seen by a process that imports sera from `source` (the package's folder)."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run([sys.executable, "-c", CODE], cwd=source, env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def test_the_build_names_the_commit_of_a_checkout_and_its_uncommitted_changes(tmp_path):
    source = tmp_path / "checkout"
    shutil.copytree(Path(sera.__file__).parent, source / "sera",
                    ignore=shutil.ignore_patterns("__pycache__"))
    plain = build_of(source)
    assert plain == sera.__version__  # files outside any checkout: the version alone

    git(source, "init", "-q")
    (source / ".gitignore").write_text("__pycache__/\n")
    git(source, "add", "-A")
    git(source, "commit", "-qm", "sera")
    commit = git(source, "rev-parse", "--short=12", "HEAD").strip()
    assert build_of(source) == f"{sera.__version__}+{commit}"

    with open(source / "sera" / "build.py", "a") as handle:
        handle.write("\n# a local change\n")
    assert build_of(source) == f"{sera.__version__}+{commit}.dirty"


def test_a_checkout_that_does_not_track_sera_is_not_its_build(tmp_path):
    """A virtual environment inside the user's repository: sera's files are there, untracked."""
    source = tmp_path / "project"
    shutil.copytree(Path(sera.__file__).parent, source / "venv" / "sera",
                    ignore=shutil.ignore_patterns("__pycache__"))
    git(source, "init", "-q")
    (source / "README").write_text("a project\n")
    git(source, "add", "README")
    git(source, "commit", "-qm", "project")
    assert build_of(source / "venv") == sera.__version__
