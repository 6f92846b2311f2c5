"""The one interface every chat backend implements, and what it returns.

A message is a plain dict `{"role": "system" | "user" | "assistant", "content": str}`: the same dicts
the agent keeps as its trajectory and the trainer reads as data. Tool results travel as user messages
(inside `<tool_response>`), so backends never see a "tool" role.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

Message = dict[str, str]


@dataclass
class Completion:
    """One sampled reply and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str = "stop"  # "stop" (natural end or stop string) or "length" (hit max_tokens)


@runtime_checkable
class ChatModel(Protocol):
    """A model that completes a conversation.

    `adapter` travels with each request (None = the base model), never as global state, so any
    backend can serve base and adapted answers side by side. It is a path to a trained adapter
    folder, or a name the backend already knows (for a served model, the served LoRA name).
    """

    spec: str

    def complete(
        self,
        messages: Sequence[Message],
        *,
        n: int = 1,
        adapter: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        stop: Sequence[str] | None = None,
        cancel: threading.Event | None = None,
        seed: int | None = None,
    ) -> list[Completion]:
        """`cancel`, set while the reply is being written, asks the backend to stop early and
        return the text so far (llama.cpp stops within a token); a backend that cannot stop a
        reply midway finishes it. The caller decides what a cancelled reply means.
        `seed`: the sampling seed of this request (sample i uses seed + i), so that a caller can
        make two runs sample alike whatever else runs beside them; None: the backend's own
        (from model.seed; -1 = random). A scripted model has nothing to sample."""
        ...

    @property
    def concurrent(self) -> bool:
        """True when several `complete` calls may run at once from different threads."""
        ...

    def close(self) -> None:
        """Release engines, threads and memory. Safe to call twice."""
        ...


@runtime_checkable
class Reranker(Protocol):
    """Scores candidate patches for a task; higher means more likely right.

    Scores are comparable across the candidates of one task. `threshold` is the score below which
    no candidate counts as a confident fix (calibrated on held-out data), or None when uncalibrated.
    """

    name: str
    threshold: float | None

    def score(self, task: str, patches: Sequence[str]) -> list[float]: ...

    def close(self) -> None:
        """Release the model and its memory. Safe to call twice."""
        ...
