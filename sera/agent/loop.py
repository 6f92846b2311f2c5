"""The agent loop: ask the model, run its tool call, show it the result, until it stops.

It depends on two protocols only: a ChatModel (sera.models.base) and an Environment (protocol.py).
The run leaves through named exceptions (protocol.py); every exit path saves the trajectory.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Callable

from sera.agent.parse import format_observation, parse_reply
from sera.agent.prompts import render
from sera.agent.protocol import (AgentStop, BudgetExhausted, Cancelled, Environment, FormatError,
                                 ModelFailed, StepLimitReached, Submitted, TimeLimitReached,
                                 ToolCall, ToolError, TooManyMalformed)
from sera.agent.tools import TOOL_SPECS
from sera.agent.trajectory import Trajectory
from sera.config import AgentConfig, ModelConfig
from sera.errors import ModelError, SeraError
from sera.models.base import ChatModel, Completion

# The model stops writing at the end of its call; it must never write the tool's answer itself.
STOP_STRINGS = ["</tool_call>", "<tool_response>"]


def system_prompt() -> str:
    # The Hermes tool block exactly as Qwen2.5's chat template writes it: the models know this form.
    tools = "\n".join(json.dumps({"type": "function", "function": spec}, ensure_ascii=False)
                      for spec in TOOL_SPECS)
    return render("system", tools=tools)


@dataclass
class StepEvent:
    """What one step did, for progress displays."""

    step: int
    call: ToolCall | None
    observation: str
    completion: Completion


class Agent:
    def __init__(self, model: ChatModel, env: Environment, trajectory: Trajectory,
                 agent_config: AgentConfig, model_config: ModelConfig, adapter: str | None = None,
                 on_step: Callable[[StepEvent], None] | None = None,
                 cancel: threading.Event | None = None):
        self.model, self.env, self.trajectory = model, env, trajectory
        self.config, self.model_config, self.adapter = agent_config, model_config, adapter
        self.on_step, self.cancel = on_step, cancel
        self.malformed = 0  # replies in a row without a tool call that parses

    def run(self, task: str) -> Trajectory:
        """Run to the end; the trajectory's meta says how it ended (status, exit_message, patch)."""
        traj = self.trajectory
        traj.meta.update(task=task, model=self.model.spec, adapter=self.adapter, status="running",
                         started=time.time())
        traj.messages = []
        traj.add("system", system_prompt())
        traj.add("user", render("task", task=task))
        return run_recorded(traj, self._steps, self.env.diff)

    def _steps(self) -> None:
        while True:
            self.step()

    def step(self) -> None:
        traj = self.trajectory
        completion = ask_model(self.model, traj, self.config, self.model_config, self.adapter,
                               self.cancel, STOP_STRINGS)
        call = None
        try:
            call, canonical = parse_reply(completion.text)
            traj.add("assistant", canonical)
            if canonical != completion.text:
                traj.meta.setdefault("raw_replies", {})[str(len(traj.messages) - 1)] = completion.text
            self.malformed = 0
            observation = self.execute(call)
        except FormatError as error:
            traj.add("assistant", completion.text)
            observation = render("format_error", error=str(error))
            self.malformed += 1
        traj.add("user", format_observation(observation))
        traj.save()
        if self.config.max_malformed and self.malformed >= self.config.max_malformed:
            raise TooManyMalformed(f"{self.malformed} replies in a row held no tool call that "
                                   f"parses (agent.max_malformed); the last error: {observation}")
        if self.on_step:
            self.on_step(StepEvent(traj.steps, call, observation, completion))

    def execute(self, call: ToolCall) -> str:
        try:
            return self.env.execute(call)
        except ToolError as error:
            return str(error)


def ask_model(model: ChatModel, trajectory: Trajectory, config: AgentConfig,
              model_config: ModelConfig, adapter: str | None, cancel: threading.Event | None,
              stop: list[str] | None) -> Completion:
    """One model reply within the rollout's limits (cancel, steps, tokens, context); the tokens
    and seconds it cost are added to the trajectory's meta."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled by the user")
    if trajectory.steps >= config.max_steps:
        raise StepLimitReached(f"reached the step limit ({config.max_steps} steps)")
    stopper = _ReplyStop(cancel, _seconds_left(trajectory, config))
    try:
        completion = model.complete(trajectory.messages, adapter=adapter,
                                    temperature=model_config.temperature,
                                    max_tokens=model_config.max_tokens, stop=stop,
                                    cancel=stopper,
                                    seed=model_config.seed if model_config.seed >= 0 else None)[0]
    except ModelError as error:
        raise ModelFailed(str(error)) from None
    finally:
        stopper.close()
    trajectory.count("prompt_tokens", completion.prompt_tokens)
    trajectory.count("completion_tokens", completion.completion_tokens)
    trajectory.count("model_seconds", completion.seconds)
    if cancel is not None and cancel.is_set():  # the reply may have been cut short: drop it
        raise Cancelled("cancelled by the user")
    if stopper.timed_out:
        raise TimeLimitReached(f"ran past the time limit of {config.time_limit:g} s while the "
                               f"model was writing (agent.time_limit)")
    _check_budget(trajectory, completion, config, model_config)
    return completion


def _seconds_left(trajectory: Trajectory, config: AgentConfig) -> float | None:
    """Seconds the rollout may still run (None: no limit); TimeLimitReached when none are left."""
    if not config.time_limit:
        return None
    left = config.time_limit - (time.time() - trajectory.meta.get("started", time.time()))
    if left <= 0:
        raise TimeLimitReached(f"ran past the time limit of {config.time_limit:g} s "
                               f"(agent.time_limit)")
    return left


class _ReplyStop(threading.Event):
    """The `cancel` a reply is asked with: set when the rollout's time is up, and seen as set
    while the user's cancel is (backends stop the reply at the next token either way)."""

    def __init__(self, user: threading.Event | None, seconds: float | None) -> None:
        super().__init__()
        self.user = user
        self._timer = threading.Timer(seconds, self.set) if seconds is not None else None
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()

    def is_set(self) -> bool:
        return super().is_set() or (self.user is not None and self.user.is_set())

    @property
    def timed_out(self) -> bool:
        return super().is_set()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _check_budget(trajectory: Trajectory, completion: Completion, config: AgentConfig,
                  model_config: ModelConfig) -> None:
    spent = trajectory.meta["prompt_tokens"] + trajectory.meta["completion_tokens"]
    if config.token_budget and spent > config.token_budget:
        raise BudgetExhausted(f"spent {spent} tokens, over the budget of {config.token_budget}")
    # The next prompt holds this one, the reply and an observation; stop before it cannot fit.
    used = completion.prompt_tokens + completion.completion_tokens
    if used + model_config.max_tokens > model_config.context_tokens:
        raise BudgetExhausted(f"the conversation ({used} tokens) no longer fits the context window "
                              f"({model_config.context_tokens} tokens)")


def run_recorded(trajectory: Trajectory, body: Callable[[], None],
                 diff: Callable[[], str]) -> Trajectory:
    """Run `body` until it raises an AgentStop, and record how the rollout ended (status, message,
    patch, seconds) whatever happens, saving the trajectory on every exit path."""
    try:
        body()
    except AgentStop as stop:
        _finish(trajectory, stop.status, str(stop), stop, diff)
    except KeyboardInterrupt:
        _finish(trajectory, "interrupted", "interrupted by the user", None, diff)
        raise
    except BaseException as error:  # a bug or an environment failure: record it, then re-raise
        _finish(trajectory, "error", f"{type(error).__name__}: {error}", None, diff)
        raise
    finally:
        trajectory.save()
    return trajectory


def _finish(trajectory: Trajectory, status: str, message: str, stop: AgentStop | None,
            diff: Callable[[], str]) -> None:
    meta = trajectory.meta
    meta["status"], meta["exit_message"] = status, message
    meta["seconds"] = time.time() - meta["started"]
    if isinstance(stop, Submitted):
        meta["patch"], meta["exit_message"] = message, "submitted"
        return
    try:
        meta["patch"] = diff()
    except (SeraError, OSError):  # the work copy may be gone after an interrupt: no patch known
        meta["patch"] = ""
