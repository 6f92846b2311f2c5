"""The adapters of a repository: `.sera/adapters/<name>/` (peft files + card.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sera.paths import adapters_dir, card_folders, resolve_card_folder


def list_adapters(repo_root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, card) of every adapter, newest first (by the card's creation time, else mtime)."""
    return card_folders(adapters_dir(repo_root))


def newest_adapter(repo_root: Path, model_spec: str) -> Path | None:
    """The newest adapter trained for `model_spec` (an adapter only fits the model it was trained on)."""
    folder = resolve_adapter(repo_root, "", model_spec)
    return Path(folder) if folder else None


def resolve_adapter(repo_root: Path, name: str, model_spec: str) -> str | None:
    """'' -> the newest adapter for the model (None if there is none); 'none' -> the base model;
    a name in .sera/adapters/ or a folder -> that adapter."""
    folder = resolve_card_folder(adapters_dir(repo_root), name, kind="adapter",
                                 fits=lambda card: card.get("student") == model_spec,
                                 accepts=Path.is_dir, none_means="uses the base model")
    return str(folder) if folder else None
