"""The adapters of a repository: `.sera/adapters/<name>/` (peft files + card.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sera.errors import SeraError
from sera.paths import adapters_dir, card_folders


def list_adapters(repo_root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, card) of every adapter, newest first (by the card's creation time, else mtime)."""
    return card_folders(adapters_dir(repo_root))


def newest_adapter(repo_root: Path, model_spec: str) -> Path | None:
    """The newest adapter trained for `model_spec` (an adapter only fits the model it was trained on)."""
    for folder, card in list_adapters(repo_root):
        if card.get("student") == model_spec:
            return folder
    return None


def resolve_adapter(repo_root: Path, name: str, model_spec: str) -> str | None:
    """'' -> the newest adapter for the model (None if there is none); 'none' -> the base model;
    a name in .sera/adapters/ or a folder -> that adapter."""
    if name == "none":
        return None
    if not name:
        newest = newest_adapter(repo_root, model_spec)
        return str(newest) if newest else None
    for candidate in (adapters_dir(repo_root) / name, Path(name).expanduser()):
        if candidate.is_dir():
            return str(candidate.resolve())
    known = [folder.name for folder, _ in list_adapters(repo_root)]
    listing = ", ".join(known) if known else "none yet (sera specialize . trains one)"
    raise SeraError(f"adapter {name!r} not found in {adapters_dir(repo_root)} nor as a folder; "
                    f"adapters of this repository: {listing}; --adapter none uses the base model")
