"""What the agent loop, the tools and the front ends agree on.

The loop (loop.py) depends on two things only: a `ChatModel` (sera.models.base) and an
`Environment` that executes one `ToolCall` and returns the observation text. Control flow leaves the
loop through the named exceptions below, each carrying its message; every exit saves the trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class ToolCall:
    """One parsed action: a tool name and its JSON arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


class FormatError(Exception):
    """The model's reply could not be turned into a tool call. The message goes back to the model
    as an observation and says how to fix the reply."""


class ToolError(Exception):
    """A tool refused or failed (unknown tool, bad argument, path outside the work copy, no unique
    match...). The message goes back to the model as an observation and says what to do instead."""


class AgentStop(Exception):
    """Base of the ways a rollout ends. `status` is what the trajectory records."""

    status = "stopped"


class Submitted(AgentStop):
    """The model submitted (second `submit` call). The message is the final patch."""

    status = "submitted"


class StepLimitReached(AgentStop):
    status = "step_limit"


class TimeLimitReached(AgentStop):
    """The rollout ran past agent.time_limit (wall clock); what it changed so far is kept."""

    status = "time_limit"


class TooManyMalformed(AgentStop):
    """Too many replies in a row held no tool call that parses (agent.max_malformed)."""

    status = "malformed"


class BudgetExhausted(AgentStop):
    """Token budget or context window used up."""

    status = "budget_exhausted"


class Cancelled(AgentStop):
    """Another thread asked the run to stop (Ctrl-C while candidates run in parallel)."""

    status = "interrupted"


class ModelFailed(AgentStop):
    """The backend raised (server gone, engine crashed). The message says why."""

    status = "model_error"


class Environment(Protocol):
    """Executes tools inside one work copy."""

    def execute(self, call: ToolCall) -> str:
        """Run `call`, return the observation text. Raises ToolError for a refused call and
        Submitted when the model's second `submit` hands in the patch."""
        ...

    def diff(self) -> str:
        """The current patch of the work copy against its snapshot (`git add -A && git diff --cached`)."""
        ...
