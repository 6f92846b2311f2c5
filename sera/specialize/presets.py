"""Named budgets for `sera specialize --preset NAME`: settings (as flags) plus training overrides.
Explicit flags win over a preset."""

from __future__ import annotations

from sera.errors import SeraError

PRESETS: dict[str, dict] = {
    # Finishes on 2 CPU cores with the small embedded model in minutes: a taste, not a good adapter.
    "demo": {"settings": {"model.spec": "embedded:0.5b", "specialize.functions": 2,
                          "agent.max_steps": 6, "model.max_tokens": 384,
                          "specialize.context_tokens": 4096, "specialize.history_tasks": 8},
             "train": {"epochs": 1}},
    # An evening on a laptop CPU with the default embedded model.
    "laptop": {"settings": {"specialize.functions": 30, "agent.max_steps": 30,
                            "model.max_tokens": 768, "specialize.context_tokens": 8192,
                            "specialize.history_tasks": 100},
               "train": {"epochs": 2}},
    # A GPU and a served teacher: SERA's scale per repository (steps, context).
    "gpu": {"settings": {"specialize.functions": 1000, "agent.max_steps": 115,
                         "model.context_tokens": 32768, "specialize.context_tokens": 32768,
                         "specialize.history_tasks": 1000},
            "train": {}},
}


def preset(name: str | None) -> dict:
    if not name:
        return {"settings": {}, "train": {}}
    if name not in PRESETS:
        raise SeraError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]
