"""What `sera models` shows: backends usable here, embedded models, adapters of the repository."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sera.models.adapters import list_adapters
from sera.models.embedded import embedded_status
from sera.models.registry import BACKENDS

# backend -> (python module it needs, how to get it)
REQUIREMENTS = {
    "transformers": ("transformers", "pip install 'sera-agent'"),
    "llamacpp": ("xllamacpp", "pip install 'sera-agent'"),
    "embedded": ("xllamacpp", "pip install 'sera-agent[embedded]'"),
    "openai": (None, "any OpenAI-compatible server: vllm serve, llama-server, ollama"),
    "vllm": ("vllm", "not in this version: use `vllm serve` with the openai backend"),
    "scripted": (None, "ships with sera (tests and demos)"),
}


def backend_rows() -> list[tuple[str, bool, str]]:
    rows = []
    for name in BACKENDS:
        module, note = REQUIREMENTS[name]
        available = module is None or importlib.util.find_spec(module) is not None
        if name == "vllm":
            available = False
        rows.append((name, available, note))
    return rows


def adapter_rows(repo_root: Path | None) -> list[str]:
    if repo_root is None:
        return []
    return [f"{folder.name}  (for {card.get('student', '?')}, {card.get('created', '')})"
            for folder, card in list_adapters(repo_root)]


def describe(repo_root: Path | None) -> str:

    lines = ["backends:"]
    for name, available, note in backend_rows():
        lines.append(f"  {name:<13} {'available' if available else 'unavailable':<12} {note}")
    lines.append("embedded models (--model embedded[:1.5b|:0.5b]):")
    for row in embedded_status():
        state = "assembled" if row["assembled"] else (
            "installed" if row["parts_installed"] == row["parts_expected"] else
            f"not installed ({row['parts_installed']}/{row['parts_expected']} parts; {row['install']})")
        lines.append(f"  {row['name']:<13} {state}  {row['description']}")
    lines.append("adapters of this repository:" if repo_root else "adapters: (not in a repository)")
    adapters = adapter_rows(repo_root)
    lines += [f"  {name}" for name in adapters] or (["  none yet"] if repo_root else [])
    return "\n".join(lines)
