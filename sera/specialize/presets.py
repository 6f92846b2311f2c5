"""Named budgets for `sera specialize --preset NAME`: settings, as flags. Explicit flags win over a
preset; `sera config` lists every setting."""

from __future__ import annotations

from sera.errors import SeraError

PRESETS: dict[str, dict[str, object]] = {
    # Finishes on 2 CPU cores with the small embedded model in minutes: a taste, not a good adapter.
    "demo": {"model.spec": "embedded:0.5b", "specialize.functions": 2, "agent.max_steps": 6,
             "model.max_tokens": 384, "specialize.context_tokens": 4096,
             "specialize.history_tasks": 8, "train.epochs": 1},
    # An evening on a laptop CPU with the default embedded model.
    "laptop": {"specialize.functions": 30, "agent.max_steps": 30, "model.max_tokens": 768,
               "specialize.context_tokens": 8192, "specialize.history_tasks": 100,
               "train.epochs": 2},
    # A GPU and a served teacher: SERA's scale per repository (steps, context); the GPU's training
    # defaults come with the device (config.GPU_PROFILE).
    "gpu": {"specialize.functions": 1000, "agent.max_steps": 115, "model.context_tokens": 32768,
            "specialize.context_tokens": 32768, "specialize.history_tasks": 1000},
}


def preset(name: str | None) -> dict[str, object]:
    """The settings of preset `name` (none for no name)."""
    if not name:
        return {}
    if name not in PRESETS:
        raise SeraError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
