"""Where sera keeps its state, and the one way it writes files (atomically).

State lives in `.sera/` at the repository root (added to `.git/info/exclude`, so `git status` never
shows it): `config.toml`, `runs/<id>/`, `adapters/<name>/`, `reranker/<name>/`. Models shared across
repositories (the assembled embedded GGUF, dequantized caches) live in the user cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from sera.errors import SeraError

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


class RunInUse(SeraError):
    """Another sera process is working on the same run."""


def claim_run(folder: Path, what: str) -> IO[str]:
    """An exclusive flock on `folder`/.lock, held until the returned handle is closed (or the
    process dies: the kernel releases it, so a killed run can be resumed at once). Raises RunInUse
    when another process holds it: two processes on one run would redo and overwrite its work."""
    handle = open(folder / ".lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunInUse(f"{what} {folder.name} is running in another sera process; wait for it to "
                   f"finish, or stop it and resume") from None
    return handle


def claimed(folder: Path) -> bool:
    """Whether another process holds `folder`'s run lock now."""
    try:
        claim_run(folder, "run").close()
    except RunInUse:
        return True
    return False


def probe_writable(folder: Path) -> None:
    """Raise now the OSError that writing into `folder` would raise later (read-only, no space
    for a file, no permission): before minutes of work whose results must be saved there."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:  # name the folder, not the probe's random file name
        raise OSError(error.errno, error.strerror, str(folder)) from error


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None:  # a failed write() names no file; the user needs to know which
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_prefix(path: Path) -> str:
    """The name atomic_write_bytes' temporary file for `path` starts with (beside it, for an
    atomic rename)."""
    return f".{path.name}.sera-"


def remove_temp_files(path: Path) -> None:
    """Remove the temporary files a killed atomic_write_bytes left beside `path`; call it only
    while no write to `path` can be under way (under the lock that serializes them)."""
    for stray in path.parent.glob(f"{glob.escape(temp_prefix(path))}*.tmp"):
        stray.unlink(missing_ok=True)


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


def resolve_card_folder(root: Path, name: str, *, kind: str, fits: Callable[[dict], bool],
                        accepts: Callable[[Path], bool], none_means: str) -> Path | None:
    """The folder a setting names, of `kind` ("adapter", "reranker") kept in `root`: '' -> the
    newest whose card `fits` (None if there is none); 'none' -> None; a name in `root`, or a
    path, that `accepts` -> that folder; else a SeraError that lists what there is and says
    that --<kind> none `none_means`."""
    if name == "none":
        return None
    if not name:
        return next((folder for folder, card in card_folders(root) if fits(card)), None)
    for candidate in (root / name, Path(name).expanduser()):
        if accepts(candidate):
            return candidate.resolve()
    known = [folder.name for folder, _ in card_folders(root)]
    listing = ", ".join(known) if known else "none yet (sera specialize . trains one)"
    raise SeraError(f"{kind} {name!r} not found in {root} nor as a folder; {kind}s of this "
                    f"repository: {listing}; --{kind} none {none_means}")
