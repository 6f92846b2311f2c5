"""Where sera keeps its state, and the one way it writes files (atomically).

State lives in `.sera/` at the repository root (added to `.git/info/exclude`, so `git status` never
shows it): `config.toml`, `runs/<id>/`, `adapters/<name>/`, `reranker/<name>/`. Models shared across
repositories (the assembled embedded GGUF, dequantized caches) live in the user cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_DIR = ".sera"


def user_cache_dir() -> Path:
    """The per-user cache: $SERA_CACHE_DIR, else $XDG_CACHE_HOME/sera, else ~/.cache/sera."""
    if os.environ.get("SERA_CACHE_DIR"):
        return Path(os.environ["SERA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sera"


def state_dir(repo_root: Path) -> Path:
    return Path(repo_root) / STATE_DIR


def runs_dir(repo_root: Path) -> Path:
    return state_dir(repo_root) / "runs"


def adapters_dir(repo_root: Path) -> Path:
    return state_dir(repo_root) / "adapters"


def rerankers_dir(repo_root: Path) -> Path:
    return state_dir(repo_root) / "reranker"


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive flock on `path` (created if missing) for the `with` block. A fresh descriptor
    each time, so it excludes other threads as well as other processes; the kernel releases it
    when a holder is killed."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (a patch of a non-UTF-8 file, decoded with surrogateescape) cannot be
        # written as UTF-8; JSON's \u escapes keep them exactly and still load back.
        data = (json.dumps(obj, indent=2, ensure_ascii=True) + "\n").encode("ascii")
    atomic_write_bytes(path, data)


def card_folders(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, card) of each folder of `root` with a readable card.json (adapters, rerankers),
    newest first: by the card's creation time, then the folder's mtime. Temporary folders (a
    leading dot) and folders without a card (unfinished, foreign) are left out."""
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not (folder / "card.json").is_file():
            continue
        try:
            found.append((folder, json.loads((folder / "card.json").read_text("utf-8"))))
        except ValueError:
            continue
    return sorted(found, key=lambda item: (item[1].get("created", ""), item[0].stat().st_mtime),
                  reverse=True)
