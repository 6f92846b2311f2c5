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
from typing import Any

from sera.redact import mask_secrets
from sera.models.base import Message
from sera.paths import atomic_write_json


@dataclass
class Trajectory:
    messages: list[Message] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
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
