"""Which sera is running: its version, and its source's commit when it runs from a git checkout.

Measurements record it, so that figures made by two different builds are never mixed unnoticed
(a bench resumed by a newer sera would otherwise score a configuration's remaining tasks with
another harness).
"""

from __future__ import annotations

import functools
from pathlib import Path

from sera import __version__
from sera.agent.workcopy import run_git
from sera.errors import RepositoryError

SOURCE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def build_id() -> str:
    """`0.1.0` for an installed package; `0.1.0+<commit>` when this package's files are tracked by
    a git checkout (an editable install), with `.dirty` when they have uncommitted changes."""
    tracked = _git("ls-files", "--error-unmatch", "__init__.py")
    if tracked is None:  # not in a checkout, or in one that does not track sera (a venv inside it)
        return __version__
    commit = _git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return __version__
    dirty = _git("status", "--porcelain", "--", ".")
    return f"{__version__}+{commit}{'.dirty' if dirty else ''}"


def _git(*args: str) -> str | None:
    """git's output in sera's source folder, or None when it fails or git is missing."""
    try:
        done = run_git(list(args), SOURCE)
    except RepositoryError:  # git is not installed: an installed package's version says enough
        return None
    return done.stdout.decode("utf-8", "replace").strip() if done.returncode == 0 else None
