"""Named budgets for `sera specialize --preset NAME`: settings, as flags. Explicit flags win over a
preset; `sera config` lists every setting."""

from __future__ import annotations

from sera.errors import SeraError

PRESETS: dict[str, dict[str, object]] = {
    # Finishes on 2 CPU cores with the small embedded model in minutes: a taste, not a good adapter.
    "demo": {"model.spec": "embedded:0.5b", "specialize.functions": 2, "agent.max_steps": 6,
             "model.max_tokens": 384, "specialize.context_tokens": 4096,
             "specialize.history_tasks": 8, "train.epochs": 1},
    # An evening (under 3 hours) on a laptop CPU with the default embedded 1.5B. Sized from a
    # measured run (2 EPYC cores, bf16): 22.9 training tokens/s, about 2,200 tokens a guided history
    # row, so 60 commits (~48 rows) and a few rollouts are one epoch in about 1.5 hours; the time
    # cap ends training with what it learnt on a CPU without bf16 (about a third of that speed).
    "laptop": {"specialize.functions": 10, "agent.max_steps": 30, "model.max_tokens": 768,
               "specialize.context_tokens": 8192, "specialize.history_tasks": 60,
               "train.epochs": 1, "train.max_seconds": 5400},
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
