"""Runs on disk: `.sera/runs/<id>/manifest.json` plus one trajectory file per candidate/rollout.

The manifest is rewritten atomically whenever something finishes, so a killed run leaves a
readable record of what had finished.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from sera.errors import SeraError
from sera.paths import atomic_write_json, runs_dir


def new_run_id(kind: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(2)}"


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "manifest.json", manifest)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))


def list_runs(repo_root: Path) -> list[dict[str, Any]]:
    """Manifests of all runs, newest first; runs without a readable manifest are skipped."""
    found = []
    root = runs_dir(repo_root)
    for run_dir in sorted(root.iterdir(), reverse=True) if root.is_dir() else []:
        try:
            found.append(read_manifest(run_dir) | {"dir": str(run_dir)})
        except (OSError, ValueError):
            continue
    return found


def find_run(repo_root: Path, run_id: str | None, kind: str = "solve") -> dict[str, Any]:
    """The manifest of `run_id` (a unique prefix is enough), or of the newest run of `kind`."""
    runs = [r for r in list_runs(repo_root) if r.get("kind") == kind]
    if not runs:
        start = "sera specialize ." if kind == "specialize" else f'sera {kind} "TASK"'
        raise SeraError(f"no {kind} runs in {runs_dir(repo_root)}; run `{start}` first")
    if run_id is None:
        return runs[0]
    matches = [r for r in runs if r["id"].startswith(run_id) or r["id"].endswith(run_id)]
    if len(matches) != 1:
        hint = "matches several runs" if matches else "matches no run"
        raise SeraError(f"run {run_id!r} {hint}; `sera runs` lists them")
    return matches[0]
