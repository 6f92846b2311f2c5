"""Turn a model's reply into one tool call, and write calls and observations in the training format.

The strict format (what trajectories store and what training teaches) is Hermes/Qwen:

    optional thought, possibly a <think>...</think> block
    <tool_call>
    {"name": "bash", "arguments": {"command": "ls"}}
    </tool_call>

Small local models follow it loosely, so `parse_reply` also accepts, in this order of preference:
1. `<tool_call>` tags, also without the closing tag, also with a ```json fence inside them;
2. a JSON object with "name" and "arguments" (fenced or bare; "arguments" may be a JSON string
   holding an object, "parameters" works as its alias, and {"function": {...}} wrappers as OpenAI
   writes them are unwrapped);
3. a fenced ```bash / ```sh / ```shell block, taken as a bash call.

A reply with several calls runs the first one only; the canonical message keeps just that call (and
the thought before it), so the trajectory shows exactly what was executed. Anything after the call
(often an invented tool response) is dropped for the same reason.

When a reply holds a closed <think> block, calls after it are preferred to calls drafted inside it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sera.agent.protocol import FormatError, ToolCall

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
THINK_CLOSE = "</think>"

# strict=False: small models put raw newlines and tabs inside JSON strings (multi-line commands).
_DECODER = json.JSONDecoder(strict=False)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_OBJECT_START = re.compile(r"\{\s*\"")
_SHELL_LANGUAGES = {"bash", "sh", "shell", "zsh"}

EXAMPLE = (TOOL_CALL_OPEN + "\n" + '{"name": "bash", "arguments": {"command": "ls"}}'
           + "\n" + TOOL_CALL_CLOSE)


def format_tool_call(call: ToolCall) -> str:
    """The strict form of `call`, as trajectories store it."""
    payload = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{payload}\n{TOOL_CALL_CLOSE}"


def format_observation(text: str) -> str:
    """The user message that carries a tool result back to the model."""
    return f"<tool_response>\n{text}\n</tool_response>"


def parse_reply(text: str) -> tuple[ToolCall, str]:
    """The first tool call in `text` and the canonical assistant message for it.

    The canonical message is the free text before the call (stripped) followed by the strict form.
    Raises FormatError (and nothing else), its message telling the model how a valid reply looks.
    """
    if not isinstance(text, str) or not text.strip():
        raise _format_error("Your reply was empty.")
    found = _find_call_after_thinking(text)
    if isinstance(found, str):
        raise _format_error(found)
    call, start = found
    thought = text[:start].strip()
    strict = format_tool_call(call)
    return call, (f"{thought}\n\n{strict}" if thought else strict)


def _format_error(problem: str) -> FormatError:
    return FormatError(
        f"{problem} Reply with a short thought, then exactly one tool call in this form:\n"
        f"{EXAMPLE}\n"
        'The JSON needs "name" (bash, str_replace_editor or submit) and "arguments" (an object; '
        "{} for submit). Send one call per reply and wait for its result.")


# A search returns (call, start offset of the call in the text), or a string saying why none was
# found (the most specific problem seen, for the error message).
Found = tuple[ToolCall, int] | str


def _find_call_after_thinking(text: str) -> Found:
    think_end = text.find(THINK_CLOSE)
    if think_end >= 0:
        offset = think_end + len(THINK_CLOSE)
        after = _find_call(text[offset:])
        if not isinstance(after, str):
            return after[0], after[1] + offset
    return _find_call(text)


def _find_call(text: str) -> Found:
    problems: list[str] = []
    for search in (_from_tags, _from_json, _from_shell_fence):
        found = search(text)
        if not isinstance(found, str):
            return found
        if found:
            problems.append(found)
    return problems[0] if problems else "Your reply has no tool call."


def _from_tags(text: str) -> Found:
    problem = ""
    for match in re.finditer(re.escape(TOOL_CALL_OPEN), text):
        body_start = match.end()
        brace = text.find("{", body_start)
        next_tag = text.find(TOOL_CALL_OPEN, body_start)
        if brace < 0 or (0 <= next_tag < brace):
            problem = problem or f"The {TOOL_CALL_OPEN} tag holds no JSON object."
            continue
        decoded = _decode_object(text, brace)
        if isinstance(decoded, str):
            problem = problem or f"The JSON inside {TOOL_CALL_OPEN} is invalid ({decoded})."
            continue
        call = _to_call(decoded)
        if isinstance(call, str):
            problem = problem or call
            continue
        return call, match.start()
    return problem


def _from_json(text: str) -> Found:
    """A JSON object shaped like a call, bare or in a fence; the call starts at its fence if any."""
    problem = ""
    fences = [(m.start(), m.start(2), m.end()) for m in _FENCE.finditer(text)]
    for match in _OBJECT_START.finditer(text):
        decoded = _decode_object(text, match.start())
        if isinstance(decoded, str) or not _looks_like_call(decoded):
            continue
        call = _to_call(decoded)
        if isinstance(call, str):
            problem = problem or call
            continue
        start = match.start()
        for fence_start, body_start, fence_end in fences:
            if body_start <= start < fence_end and not text[body_start:start].strip():
                start = fence_start
        return call, start
    return problem


def _from_shell_fence(text: str) -> Found:
    for match in _FENCE.finditer(text):
        if match.group(1).lower() in _SHELL_LANGUAGES and match.group(2).strip():
            return ToolCall("bash", {"command": match.group(2).strip("\n")}), match.start()
    return ""


def _decode_object(text: str, start: int) -> Any:
    """The JSON value starting at text[start], or a string describing why it does not parse."""
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as error:
        return f"{error.msg} at character {error.pos - start}"
    except (ValueError, RecursionError):
        return "the JSON is nested too deeply or malformed"
    return value


def _looks_like_call(value: Any) -> bool:
    """Outside tags, demand the whole shape, so JSON quoted in a thought is not taken for a call."""
    if not isinstance(value, dict):
        return False
    if isinstance(value.get("function"), dict):
        value = value["function"]
    return "name" in value and ("arguments" in value or "parameters" in value)


def _to_call(value: Any) -> ToolCall | str:
    """A ToolCall from a decoded object, or a string naming what is wrong with its shape."""
    if not isinstance(value, dict):
        return "The tool call must be a JSON object."
    if isinstance(value.get("function"), dict) and "name" not in value:
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return 'The tool call has no "name" string.'
    arguments = value.get("arguments", value.get("parameters"))
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        decoded = _decode_object(arguments.strip() or "{}", 0)
        if isinstance(decoded, str) or not isinstance(decoded, dict):
            return f'The "arguments" of {name!r} must be a JSON object.'
        arguments = decoded
    if not isinstance(arguments, dict):
        return f'The "arguments" of {name!r} must be a JSON object.'
    return ToolCall(name.strip(), arguments)
