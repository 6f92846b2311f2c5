"""One agent rollout of a task in a fresh work copy of a commit: the unit that `solve` samples and
that `sera specialize` generates data with."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from sera.agent.loop import Agent, StepEvent
from sera.agent.tools import ToolEnvironment
from sera.agent.trajectory import Trajectory
from sera.agent.workcopy import WorkCopy
from sera.config import Settings
from sera.models.base import ChatModel


def rollout(repo_root: Path, commit: str, task: str, model: ChatModel, settings: Settings,
            path: Path | None, meta: dict[str, Any] | None = None, adapter: str | None = None,
            on_step: Callable[[StepEvent], None] | None = None,
            cancel: threading.Event | None = None) -> tuple[Trajectory, str | None]:
    """Run the agent on `task` in a work copy of `commit` (removed afterwards).
    Returns the finished trajectory (saved at `path`) and the sandbox warning, if any."""
    trajectory = Trajectory(path=path, meta=dict(meta or {}))
    with WorkCopy.create(repo_root, commit) as workcopy:
        env = ToolEnvironment(workcopy, settings.agent)
        agent = Agent(model, env, trajectory, settings.agent, settings.model, adapter=adapter,
                      on_step=on_step, cancel=cancel)
        agent.run(task)
    return trajectory, env.sandbox_warning
