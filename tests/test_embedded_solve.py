"""One real solve step with the embedded default model (slow: needs `pip install -e '.[embedded]'`).

    python -m pytest -m slow tests/test_embedded_solve.py
"""

from __future__ import annotations

import pytest

from conftest import user_state
from sera.agent.solve import solve
from sera.agent.trajectory import Trajectory
from sera.config import load_settings
from sera.models.embedded import embedded_status
from sera.models.registry import load_model

pytestmark = pytest.mark.slow


def test_embedded_default_takes_a_real_solve_step(repo):
    default = next(row for row in embedded_status() if row["name"] == "1.5b")
    if default["parts_installed"] < default["parts_expected"]:
        pytest.skip(f"embedded model not installed: {default['install']}")
    settings = load_settings(repo, {"agent.max_steps": 1, "solve.candidates": 1,
                                    "model.max_tokens": 160, "agent.scaffold": "agent"})
    assert settings.model.spec == "embedded"
    model = load_model(settings.model.spec, settings.model)
    before = user_state(repo)
    try:
        result = solve(repo, "add() in calc.py returns a - b; make it return the sum", settings, model)
    finally:
        model.close()
    assert user_state(repo) == before
    cand = result.candidates[0]
    assert cand.status == "step_limit" and cand.steps == 1
    assert cand.prompt_tokens > 300 and cand.completion_tokens > 0
    messages = Trajectory.load(cand.trajectory).messages
    assert messages[2]["role"] == "assistant" and messages[2]["content"].strip()
    assert messages[3]["content"].startswith("<tool_response>")


def test_embedded_default_runs_the_guided_scaffold(repo):
    default = next(row for row in embedded_status() if row["name"] == "1.5b")
    if default["parts_installed"] < default["parts_expected"]:
        pytest.skip(f"embedded model not installed: {default['install']}")
    settings = load_settings(repo, {"solve.candidates": 1, "model.max_tokens": 300})
    model = load_model(settings.model.spec, settings.model)
    try:
        result = solve(repo, "add(2, 3) returns -1 instead of 5", settings, model)
    finally:
        model.close()
    cand = result.candidates[0]
    meta = Trajectory.load(cand.trajectory).meta
    assert meta["scaffold"] == "guided"  # auto picks guided for the embedded models
    assert (meta["locations"][0]["path"], meta["locations"][0]["name"]) == ("calc.py", "add")
    assert cand.status in ("submitted", "check_failed", "edit_failed")
