"""The agent's tools (SERA's scaffold) inside one work copy: bash, str_replace_editor and submit.

`ToolEnvironment` implements sera.agent.protocol.Environment. `TOOL_SPECS` describes the tools
for the system prompt, one JSON schema each.
"""

from __future__ import annotations

from typing import Any

from sera.agent.checks import workcopy_sandbox
from sera.agent.editor import Editor
from sera.agent.protocol import Submitted, ToolCall, ToolError
from sera.agent.sandbox import clip_text
from sera.agent.workcopy import WorkCopy
from sera.config import AgentConfig

TOOL_SPECS: list[dict[str, Any]] = [
    {
        "name": "bash",
        "description": (
            "Run a shell command in the repository root (a fresh bash each time: cd and variables "
            "do not carry over; no network; no interactive programs). Returns the output and, "
            "when not 0, the exit code."),
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "the command to run"}},
            "required": ["command"],
        },
    },
    {
        "name": "str_replace_editor",
        "description": (
            "View and edit files; paths are relative to the repository root. view: a file with "
            "line numbers (view_range [start, end], end -1 = to the end) or a directory two "
            "levels deep. create: a new file with file_text. str_replace: replace old_str, which "
            "must occur exactly once, with new_str. insert: new_str after line insert_line "
            "(0 = top). undo_edit: revert the last edit of path."),
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string",
                            "enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
                "path": {"type": "string", "description": "file or directory, e.g. src/app.py"},
                "file_text": {"type": "string", "description": "create: the whole new file"},
                "old_str": {"type": "string",
                            "description": "str_replace: the exact text to replace"},
                "new_str": {"type": "string",
                            "description": "str_replace: the replacement (empty deletes); "
                                           "insert: the text to insert"},
                "insert_line": {"type": "integer",
                                "description": "insert: the line after which to insert"},
                "view_range": {"type": "array", "items": {"type": "integer"},
                               "minItems": 2, "maxItems": 2,
                               "description": "view: [start, end] line numbers"},
            },
            "required": ["command", "path"],
        },
    },
    {
        "name": "submit",
        "description": (
            "Hand in your changes. The first call shows the full diff for review; call submit "
            "again to confirm, or keep editing."),
        "parameters": {"type": "object", "properties": {}, "required": []},
    },
]
TOOL_NAMES = [spec["name"] for spec in TOOL_SPECS]


class ToolEnvironment:
    """Executes tool calls in `workcopy`, commands under the sandbox `config.sandbox` asks for."""

    def __init__(self, workcopy: WorkCopy, config: AgentConfig) -> None:
        self.workcopy = workcopy
        self.config = config
        self.sandbox = workcopy_sandbox(workcopy, config)
        self.editor = Editor(workcopy.path, max_output_chars=config.output_chars)
        self._reviewed_diff: str | None = None  # the diff shown by the last submit call

    @property
    def sandbox_warning(self) -> str | None:
        return self.sandbox.warning

    def execute(self, call: ToolCall) -> str:
        if not isinstance(call.arguments, dict):
            raise ToolError(f"the arguments of {call.name} must be a JSON object")
        if call.name == "bash":
            return self._bash(call.arguments)
        if call.name == "str_replace_editor":
            return self.editor.run(call.arguments)
        if call.name == "submit":
            return self._submit()
        raise ToolError(f"unknown tool {call.name!r}; the tools are: {', '.join(TOOL_NAMES)}")

    def diff(self) -> str:
        return self.workcopy.diff()

    def _bash(self, arguments: dict[str, Any]) -> str:
        given = {k: v for k, v in arguments.items() if v is not None}
        command = given.get("command")
        if set(given) != {"command"} or not isinstance(command, str) or not command.strip():
            raise ToolError('bash takes one argument, "command": a non-empty string, e.g. '
                            '{"command": "ls"}')
        timeout = self.config.command_timeout
        try:
            result = self.sandbox.run(command, timeout, self.config.output_chars)
        except OSError as error:
            raise ToolError(f"the command could not be started ({error})") from None
        output = result.output if result.output.strip() else "(no output)"
        if result.timed_out:
            return (f"{output}\n[killed after {timeout:g} s: the command took too long. Run "
                    f"something faster: a smaller part (one test, not the suite), less input, or "
                    f"a time limit such as `timeout 60 ...`; servers and interactive programs "
                    f"cannot run here]")
        if result.exit_code != 0:
            return f"{output}\n[exit code {result.exit_code}]"
        return output

    def _submit(self) -> str:
        # Arguments are ignored: submit takes none, and refusing stray ones would only cost a step.
        diff = self.diff()
        if diff == self._reviewed_diff:
            raise Submitted(diff)
        self._reviewed_diff = diff
        if not diff.strip():
            return ("No changes yet: the work copy is identical to where you started. Make your "
                    "changes with str_replace_editor or bash, then call submit. Calling submit "
                    "again now hands in an empty change.")
        shown = clip_text(diff, self.config.output_chars)
        return ("Review the full diff of your changes below. If it is right, call submit again "
                "to hand it in. Otherwise keep editing (also remove files you created only to "
                f"test), then call submit.\n\n<diff>\n{shown}</diff>")
