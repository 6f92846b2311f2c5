"""A deterministic fake model that replays assistant replies from a JSON file (tests and demos).

`scripted:<file.json>`, the file holding a list of reply strings, or `{"replies": [...]}`.
The reply to a conversation is `replies[k]`, k = the number of assistant messages already in it
(a worked example's answer, message["example"], is not one),
so every candidate and every replayed conversation starts again from the first reply.

One script can play several roles (an agent, a reviewer, an issue writer) with conversations
picked by a substring of the conversation's first user message (not a worked example); `replies`
is the fallback:

    {"conversations": [{"when": "Answer yes or no", "replies": ["yes"]}, ...], "replies": [...]}

Like a real backend it honours `stop` (the text is cut before the first stop string) and
`max_tokens` (the text is cut to that many tokens, finish_reason "length"). Token counts are an
approximation: one token per 4 characters, rounded up. The adapter is accepted and ignored.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Sequence

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.base import Completion, Message

CHARS_PER_TOKEN = 4


def load(arg: str, config: ModelConfig) -> "ScriptedChatModel":
    """The registry's entry point: `scripted:<file.json>`."""
    data = _read_json(arg)
    return ScriptedChatModel(f"scripted:{arg}", _replies(data, arg), _conversations(data, arg))


def _read_json(arg: str):
    if not arg.strip():
        raise ModelError("the scripted model needs a file: --model scripted:/path/to/replies.json "
                         "(a JSON list of assistant reply strings)")
    path = Path(arg).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"script {path} not found; pass a JSON file holding a list of assistant "
                         f"reply strings: --model scripted:/path/to/replies.json") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"cannot read script {path} ({error}); check the path and its "
                         f"permissions") from None
    except json.JSONDecodeError as error:
        raise ModelError(f"script {path} is not valid JSON ({error}); it must be a list of "
                         f"reply strings, or {{\"replies\": [...]}}") from None
    return data


def _replies(data, arg: str) -> list[str]:
    replies = data
    if isinstance(data, dict):  # "replies" may be left out only when conversations are given
        replies = data.get("replies", [] if "conversations" in data else None)
    if not _is_reply_list(replies):
        raise ModelError(f"script {arg} must hold a JSON list of reply strings, or "
                         f"{{\"replies\": [...]}} with such a list")
    return replies


def _conversations(data, arg: str) -> list[tuple[str, list[str]]]:
    found = data.get("conversations", []) if isinstance(data, dict) else []
    ok = isinstance(found, list) and all(
        isinstance(c, dict) and isinstance(c.get("when"), str) and _is_reply_list(c.get("replies"))
        for c in found)
    if not ok:
        raise ModelError(f"script {arg}: \"conversations\" must be a list of "
                         f"{{\"when\": \"substring of the first user message\", \"replies\": [...]}}")
    return [(c["when"], c["replies"]) for c in found]


def _is_reply_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(r, str) for r in value)


def approx_tokens(text: str) -> int:
    """Token count of `text`, approximated as one token per 4 characters, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


class ScriptedChatModel:
    """Replays a fixed list of replies; stateless, so any number of threads may call it."""

    def __init__(self, spec: str, replies: list[str],
                 conversations: list[tuple[str, list[str]]] = ()) -> None:
        self.spec = spec
        self.replies = list(replies)
        self.conversations = list(conversations)

    def replies_for(self, messages: Sequence[Message]) -> list[str]:
        """The replies of the first conversation whose `when` is in the first user message."""
        first_user = next((m.get("content") or "" for m in messages
                           if m.get("role") == "user" and not m.get("example")), "")
        return next((replies for when, replies in self.conversations if when in first_user),
                    self.replies)

    @property
    def concurrent(self) -> bool:
        return True

    def complete(self, messages: Sequence[Message], *, n: int = 1, adapter: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 1024,
                 stop: Sequence[str] | None = None,
                 cancel: threading.Event | None = None,
                 seed: int | None = None) -> list[Completion]:
        start = time.perf_counter()
        turn = sum(1 for m in messages if m.get("role") == "assistant" and not m.get("example"))
        replies = self.replies_for(messages)
        if turn >= len(replies):
            raise ModelError(f"the script {self.spec} has only {len(replies)} replies and "
                             f"the conversation asks for reply {turn + 1}; add replies to the "
                             f"file or lower the step limit")
        text, reason = _cut(replies[turn], stop or [], max_tokens)
        prompt_tokens = sum(approx_tokens(m.get("content") or "") for m in messages)
        seconds = time.perf_counter() - start
        return [Completion(text=text, prompt_tokens=prompt_tokens,
                           completion_tokens=approx_tokens(text), seconds=seconds,
                           finish_reason=reason) for _ in range(n)]

    def close(self) -> None:
        pass


def _cut(text: str, stop: Sequence[str], max_tokens: int) -> tuple[str, str]:
    """Apply stop strings and the token limit, as a real backend would."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    if found:
        text = text[:min(found)]
    limit = max(0, max_tokens) * CHARS_PER_TOKEN
    if len(text) > limit:  # the limit comes first when the stop string lies beyond it
        return text[:limit], "length"
    return text, "stop"
