"""Filters and truncation of training trajectories (METHODS.md section 1, step 7).

SERA drops patches over 40 changed lines and trajectories whose tool outputs average over 600
tokens, cuts a trajectory that exceeds the context (32K tokens) after its last complete assistant
turn, and keeps the most complete first: truncation ratio = kept messages / all messages, kept
when >= 0.95. Token counts come from a function the caller supplies (the student's tokenizer);
`per_message_tokens` stands for what the chat template adds around each message (role markers).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence, TypeVar

from sera.agent.parse import format_observation
from sera.agent.searchreplace import SEARCH_MARK
from sera.config import SpecializeConfig
from sera.diff import changed_lines

Message = dict[str, str]
CountTokens = Callable[[str], int]
T = TypeVar("T")

# The defaults are the settings' (SpecializeConfig), which the dataset stage passes.
MAX_CHANGED_LINES = SpecializeConfig.max_patch_lines
MAX_ANSWER_BLOCKS = SpecializeConfig.max_answer_blocks
MAX_MEAN_TOOL_OUTPUT_TOKENS = SpecializeConfig.max_tool_output_tokens
TRUNCATION_THRESHOLD = SpecializeConfig.truncation_threshold
PER_MESSAGE_TOKENS = 8  # e.g. "<|im_start|>assistant\n" ... "<|im_end|>\n" in Qwen's template

_OPEN, _CLOSE = format_observation("\0").split("\0")


def too_many_changed_lines(patch: str, limit: int = MAX_CHANGED_LINES) -> bool:
    return len(changed_lines(patch)) > limit


def most_edit_blocks(messages: Sequence[Message]) -> int:
    """The most SEARCH/REPLACE blocks in one assistant reply of a trajectory (worked examples
    aside)."""
    return max((sum(1 for line in (m.get("content") or "").splitlines() if SEARCH_MARK.match(line))
                for m in messages if m.get("role") == "assistant" and not m.get("example")),
               default=0)


def too_many_edit_blocks(messages: Sequence[Message], limit: int = MAX_ANSWER_BLOCKS) -> bool:
    return limit > 0 and most_edit_blocks(messages) > limit


def tool_outputs(messages: Sequence[Message]) -> list[str]:
    """The tool results of a trajectory: the user messages after the first (the task), unwrapped."""
    user_turns = [m.get("content") or "" for m in messages
                  if m.get("role") == "user" and not m.get("example")]
    return [_unwrap(text) for text in user_turns[1:]]


def mean_tool_output_tokens(messages: Sequence[Message], count_tokens: CountTokens) -> float:
    """Average tokens per tool output; 0.0 when the trajectory has none."""
    outputs = tool_outputs(messages)
    if not outputs:
        return 0.0
    return sum(count_tokens(text) for text in outputs) / len(outputs)


def too_long_tool_outputs(messages: Sequence[Message], count_tokens: CountTokens,
                          limit: float = MAX_MEAN_TOOL_OUTPUT_TOKENS) -> bool:
    return mean_tool_output_tokens(messages, count_tokens) > limit


def truncate_to_context(messages: Sequence[Message], max_tokens: int, count_tokens: CountTokens,
                        per_message_tokens: int = PER_MESSAGE_TOKENS,
                        ) -> tuple[list[Message], float]:
    """The longest prefix that fits `max_tokens`, and its truncation ratio (kept / all messages).

    A trajectory that fits comes back whole (ratio 1.0). Otherwise it is cut right after an
    assistant message, so the kept part never ends on a tool output the model would be trained to
    expect an answer to; the system prompt, a worked example and the task are always part of the
    prefix. When not
    even the first assistant turn fits, nothing is kept: ([], 0.0).
    """
    messages = list(messages)
    if not messages:
        return [], 1.0
    costs = [count_tokens(m.get("content") or "") + per_message_tokens for m in messages]
    if sum(costs) <= max_tokens:
        return messages, 1.0
    task_index = next((i for i, m in enumerate(messages)
                       if m.get("role") == "user" and not m.get("example")), None)
    if task_index is None:
        return [], 0.0
    kept, used = 0, sum(costs[:task_index + 1])
    for index in range(task_index + 1, len(messages)):
        used += costs[index]
        if used > max_tokens:
            break
        if messages[index].get("role") == "assistant" and not messages[index].get("example"):
            kept = index + 1
    if kept == 0:
        return [], 0.0
    return messages[:kept], kept / len(messages)


def select_by_truncation(items: Iterable[T], threshold: float = TRUNCATION_THRESHOLD,
                         ratio: Callable[[T], float] = lambda item: item[1]  # type: ignore[index]
                         ) -> list[T]:
    """Items whose ratio is >= `threshold`, most complete first (ties keep their order).

    By default items are (anything, ratio) pairs, as `truncate_to_context` returns them; pass
    `ratio` to read the ratio from other items (e.g. a trajectory's meta).
    """
    kept = [item for item in items if ratio(item) >= threshold]
    return sorted(kept, key=ratio, reverse=True)


def _unwrap(text: str) -> str:
    if text.startswith(_OPEN) and text.endswith(_CLOSE):
        return text[len(_OPEN):len(text) - len(_CLOSE)]
    return text
