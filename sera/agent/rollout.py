"""One agent rollout of a task in a fresh work copy of a commit: the unit that `solve` samples and
that `sera specialize` generates data with."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

from sera.agent.guided import GuidedAgent
from sera.agent.loop import Agent, StepEvent
from sera.agent.testcmd import resolve_test_command
from sera.agent.tools import ToolEnvironment
from sera.agent.trajectory import Trajectory
from sera.agent.workcopy import WorkCopy
from sera.config import Settings
from sera.errors import SeraError
from sera.faults import fault_point
from sera.models.base import ChatModel


def rollout(repo_root: Path, commit: str, task: str, model: ChatModel, settings: Settings,
            path: Path | None, meta: dict[str, Any] | None = None, adapter: str | None = None,
            on_step: Callable[[StepEvent], None] | None = None,
            cancel: threading.Event | None = None,
            locations: list | None = None) -> tuple[Trajectory, str | None]:
    """Run the agent on `task` in a work copy of `commit` (removed afterwards); the guided
    scaffold shows `locations` when given, else the localizer's picks (the free-running agent
    finds its own way and is given none). Returns the finished trajectory (saved at `path`) and
    the sandbox warning, if any."""
    scaffold = choose_scaffold(settings.agent.scaffold, model.spec, adapter)
    trajectory = Trajectory(path=path, meta={**(meta or {}), "scaffold": scaffold})
    with WorkCopy.create(repo_root, commit) as workcopy:
        fault_point("solve-candidate")  # the fault suite's kill -9 with a work copy on disk
        env = ToolEnvironment(workcopy, settings.agent)  # one environment, either scaffold
        if scaffold == "guided":
            tests = resolve_test_command(repo_root, settings.agent.test_command)
            GuidedAgent(model, env, trajectory, settings.agent, settings.model, adapter=adapter,
                        on_step=on_step, cancel=cancel, test_command=tests,
                        candidate=int((meta or {}).get("candidate", 0))).run(task, locations)
        else:
            Agent(model, env, trajectory, settings.agent, settings.model, adapter=adapter,
                  on_step=on_step, cancel=cancel).run(task)
    return trajectory, env.sandbox_warning


SCAFFOLDS = ("agent", "guided")


def choose_scaffold(setting: str, model_spec: str, adapter: str | None = None) -> str:
    """`auto`: guided for the embedded models, whatever their adapter (small: they edit well but
    cannot drive a long tool loop, as measured; an adapter trained on agent-format rows alone, as
    a CPU run with no accepted rollout leaves, must not move them to a scaffold they fail in);
    for other models the scaffold the adapter in use was trained in (the `scaffold` of its card:
    a model fine-tuned on one conversation format should be run in it), else the free-running
    agent."""
    if setting in SCAFFOLDS:
        return setting
    if setting != "auto":
        raise SeraError(f"unknown scaffold {setting!r}; use agent, guided or auto")
    if model_spec.split(":")[0] == "embedded":
        return "guided"
    return (adapter_scaffold(adapter) if adapter else None) or "agent"


def adapter_scaffold(adapter: str) -> str | None:
    """The scaffold an adapter's card.json names, if it names a known one (older cards do not)."""
    try:
        card = json.loads((Path(adapter) / "card.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    scaffold = card.get("scaffold") if isinstance(card, dict) else None
    return scaffold if scaffold in SCAFFOLDS else None
