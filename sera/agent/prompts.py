"""The agent's prompt templates (`sera/agent/templates/*.txt`), rendered strictly by `sera.prompts`."""

from __future__ import annotations

from sera.prompts import render_from

__all__ = ["render", "render_from"]


def render(name: str, **values: str) -> str:
    return render_from("sera.agent", name, **values)
