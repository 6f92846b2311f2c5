"""A trajectory is the message list itself, plus metadata; one JSON file per rollout.

File layout (a training row as it stands: `messages` is what the trainer reads):

    {"messages": [{"role": "system", "content": ...}, {"role": "user", ...}, {"role": "assistant", ...}, ...],
     "meta": {"task": ..., "model": ..., "adapter": ..., "status": ..., "patch": ..., "steps": ..., ...}}

The file is rewritten atomically after every step, so a killed process leaves the last full step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from sera.models.base import Message
from sera.paths import atomic_write_json
from sera.redact import mask_secrets


class Check(TypedDict, total=False):
    """One check of a guided edit round."""

    name: str     # "patch" (not empty), "parse <path>" or "tests"
    ok: bool
    detail: str   # what failed (the parse errors, the test output)
    command: str  # the test command, for "tests"


class TestRun(TypedDict):
    """The scaffold's own last test run, which ranking reuses when it saw the final patch."""

    command: str
    patch: str    # sera.diff.digest of the patch the tests ran on
    ok: bool
    detail: str   # the output when they failed


class TrajectoryMeta(TypedDict, total=False):
    """What a trajectory's meta holds: each key written by the step named, read by the others."""

    # the run (loop.py, guided.py, rollout.py)
    task: str
    model: str                 # the model's spec
    adapter: str | None        # the adapter folder it ran with
    scaffold: str              # "agent" or "guided"
    edit_format: str           # the guided scaffold's "blocks" or "functions"
    status: str                # running, submitted, a limit's name, interrupted, failed (loop.py)
    exit_message: str          # why it ended, for people and for the retry's observation
    patch: str                 # the diff handed in ("" when none)
    started: float             # time.time() at the start
    seconds: float
    steps: int                 # the model's replies (save())
    updated: float             # time.time() at the last save
    prompt_tokens: int
    completion_tokens: int
    # where it comes from (solve.py, svg.py, mining.py, guided_rows.py, reranker/pool.py)
    source: str                # svg, history, rerank, general
    run: str                   # the solve run's id
    candidate: int             # the candidate's index in its solve
    role: str                  # svg: "rollout1" or "rollout2"
    function: str              # svg: the sampled function
    commit: str                # history: the commit, and its parent and date
    parent: str
    date: str
    files: list[str]
    task_id: str               # reranker pools: the pool task
    recall: float | None       # line recall of the reference (soft verification)
    # the guided scaffold (guided.py)
    locations: list[dict[str, Any]]     # the functions shown (path, name, lines, score, reasons)
    localization: dict[str, Any]        # which view of the ranking this candidate got
    location_choice: dict[str, Any]     # with agent.choose_locations: offered, chosen, fallback
    edits: list[dict[str, Any]]         # each applied edit round: round, attempt, files
    checks: list[list[Check]]           # the checks after each applied edit round
    test_command: str | None            # the command its checks run (None: no tests)
    tests: TestRun                      # the last test run
    skeleton: str                       # the function offered as a ready block on a retry
    closest_block: list[str]            # files where a SEARCH part missed and the closest
                                        # lines were shown


@dataclass
class Trajectory:
    messages: list[Message] = field(default_factory=list)
    meta: TrajectoryMeta = field(default_factory=TrajectoryMeta)  # type: ignore[assignment]
    path: Path | None = None

    def add(self, role: str, content: str) -> None:
        """Append a message; what is not the model's own (tool outputs, views of files, the
        task) has its credentials masked first (secrets.py), since trajectories are kept,
        trained on and may be sent to a teacher."""
        if role != "assistant":
            content = mask_secrets(content)
        self.messages.append({"role": role, "content": content})

    def count(self, key: str, amount: float) -> None:
        """Add `amount` to a running total in meta (tokens, seconds)."""
        self.meta[key] = self.meta.get(key, 0) + amount

    @property
    def steps(self) -> int:
        """The model's replies (the worked example's answer is not one)."""
        return sum(1 for m in self.messages if m["role"] == "assistant" and not m.get("example"))

    @property
    def status(self) -> str:
        return self.meta.get("status", "running")

    @property
    def patch(self) -> str:
        return self.meta.get("patch", "")

    def save(self) -> None:
        if self.path is None:
            return
        self.meta["steps"] = self.steps
        self.meta["updated"] = time.time()
        atomic_write_json(self.path, {"messages": self.messages, "meta": self.meta})

    @classmethod
    def load(cls, path: Path) -> "Trajectory":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(messages=data["messages"], meta=data.get("meta", {}), path=Path(path))
