"""A real (nonsense) rollout end to end: tiny real model, transformers backend, real work copy."""

from __future__ import annotations

from conftest import user_state
from sera.agent.solve import solve
from sera.agent.trajectory import Trajectory
from sera.config import load_settings
from sera.models.registry import load_model
from tiny_models import build_tiny_model


def test_tiny_model_rollout_through_transformers_backend(repo, tmp_path):
    spec = f"transformers:{build_tiny_model(tmp_path / 'tiny')}"
    flags = {"model.spec": spec, "model.max_tokens": 24, "model.temperature": 0.0,
             "agent.max_steps": 3, "solve.candidates": 1}
    settings = load_settings(repo, flags)
    model = load_model(spec, settings.model)
    before = user_state(repo)
    try:
        result = solve(repo, "make add() return the sum", settings, model)
    finally:
        model.close()
    assert user_state(repo) == before
    cand = result.candidates[0]
    assert cand.status == "step_limit" and cand.steps == 3
    assert cand.prompt_tokens > 0 and cand.completion_tokens > 0
    traj = Trajectory.load(cand.trajectory)
    roles = [m["role"] for m in traj.messages]
    assert roles == ["system", "user"] + ["assistant", "user"] * 3
    assert all(m["content"].startswith("<tool_response>") for m in traj.messages[3::2])
    assert traj.meta["model"] == spec and traj.meta["status"] == "step_limit"
