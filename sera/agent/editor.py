"""The str_replace_editor tool: view, create, str_replace, insert and undo_edit in the work copy.

Every refusal is a ToolError whose message tells the model what to do instead. Paths are relative
to the repository root (absolute paths inside the work copy work too) and never leave it: `..`,
symlinks pointing out and absolute paths elsewhere are refused, and so is the `.git` entry.
Files are read and written as bytes decoded as UTF-8 with no newline translation, so an edit
changes exactly the text it names and undo_edit restores the previous bytes exactly.
Arguments given as JSON null count as absent (function-calling models often send them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sera.agent.protocol import ToolError
from sera.agent.sandbox import clip_text

COMMANDS = ("view", "create", "str_replace", "insert", "undo_edit")
# For each command: (required arguments, optional arguments) besides "command".
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "view": (("path",), ("view_range",)),
    "create": (("path", "file_text"), ()),
    "str_replace": (("path", "old_str"), ("new_str",)),
    "insert": (("path", "insert_line", "new_str"), ()),
    "undo_edit": (("path",), ()),
}
ARGUMENT_TYPES: dict[str, type | tuple[type, ...]] = {
    "path": str, "file_text": str, "old_str": str, "new_str": str, "insert_line": int,
    "view_range": list,
}
SNIPPET_CONTEXT = 4  # lines shown around an edit
TREE_DEPTH = 2


class Editor:
    def __init__(self, root: Path, max_output_chars: int = 16000) -> None:
        self.root = Path(root).resolve()
        self.max_output_chars = max_output_chars
        # Previous contents per file, newest last; None = the file did not exist (undo deletes it).
        self.history: dict[Path, list[bytes | None]] = {}

    def run(self, arguments: dict[str, Any]) -> str:
        """Execute one editor command; raises ToolError (only) when it cannot."""
        command, args = _check_arguments(arguments)
        path = self.resolve(args["path"])
        try:
            return getattr(self, f"_{command}")(path, args)
        except (OSError, ValueError) as error:  # permissions, odd names...: tell the model
            raise ToolError(f"{command} failed on {self.shown(path)}: {error}") from None

    # --- paths -----------------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """The absolute path inside the work copy that `path` names, or ToolError."""
        if not path.strip() or "\0" in path:
            raise ToolError("path is empty or invalid; give a path relative to the repository "
                            "root, e.g. src/module.py")
        candidate = Path(path) if os.path.isabs(path) else self.root / path
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError, ValueError) as error:  # symlink loops, unencodable names
            raise ToolError(f"cannot resolve path {path!r} ({error}); check it with ls") from None
        if resolved != self.root and self.root not in resolved.parents:
            raise ToolError(f"path {path!r} is outside the repository; use a path relative to "
                            f"the repository root (e.g. src/module.py) or inside {self.root}")
        if ".git" in resolved.relative_to(self.root).parts:
            raise ToolError("the .git entry is off limits to the editor; use git commands "
                            "through bash to inspect history")
        return resolved

    def shown(self, path: Path) -> str:
        """How a path appears in messages: relative to the repository root."""
        relative = path.relative_to(self.root).as_posix()
        return relative if relative != "." else "(repository root)"

    # --- commands --------------------------------------------------------------------------

    def _view(self, path: Path, args: dict[str, Any]) -> str:
        if path.is_dir():
            if "view_range" in args:
                raise ToolError("view_range works on files only; drop it to list a directory")
            return self._view_directory(path)
        lines = _split_lines(self._read(path))
        first, last = _check_view_range(args.get("view_range"), len(lines))
        if not lines:
            return f"{self.shown(path)} is empty."
        return self._numbered(path, lines, first, last)

    def _create(self, path: Path, args: dict[str, Any]) -> str:
        if path.is_dir():
            raise ToolError(f"{self.shown(path)} is a directory; give a file path to create")
        if path.exists() or path.is_symlink():
            raise ToolError(f"{self.shown(path)} already exists; view it and change it with "
                            f"str_replace or insert instead of create")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write(path, args["file_text"], previous=None)
        return f"File created: {self.shown(path)}"

    def _str_replace(self, path: Path, args: dict[str, Any]) -> str:
        content = self._read(path)
        old, new = args["old_str"], args.get("new_str", "")
        if not old:
            raise ToolError("old_str is empty; give the exact text to replace (to add text "
                            "use insert, to write a new file use create)")
        if old not in content and "\r\n" in content and "\r" not in old:
            old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")  # CRLF file
        positions = _occurrences(content, old)
        if len(positions) != 1:
            raise ToolError(self._no_unique_match(path, content, old, positions))
        start = positions[0]
        updated = content[:start] + new + content[start + len(old):]
        self._write(path, updated, previous=content.encode("utf-8"))
        return self._edited(path, updated, start, new)

    def _insert(self, path: Path, args: dict[str, Any]) -> str:
        content = self._read(path)
        line_count = len(_split_lines(content))
        after = args["insert_line"]
        if not 0 <= after <= line_count:
            raise ToolError(f"insert_line must be between 0 (top of the file) and {line_count} "
                            f"(the file has {line_count} lines); view the file to pick the line")
        text = args["new_str"]
        if not text:
            raise ToolError("new_str is empty; give the text to insert")
        if "\r\n" in content and "\r" not in text:
            text = text.replace("\n", "\r\n")
        newline = "\r\n" if "\r\n" in content else "\n"
        offset = _line_end_offset(content, after)
        before = content[:offset]
        if before and not before.endswith("\n"):
            before += newline  # inserting after a last line that had no newline
        block = text if text.endswith("\n") else text + newline
        updated = before + block + content[offset:]
        self._write(path, updated, previous=content.encode("utf-8"))
        return self._edited(path, updated, len(before), block)

    def _undo_edit(self, path: Path, args: dict[str, Any]) -> str:
        previous_versions = self.history.get(path)
        if not previous_versions:
            raise ToolError(f"no edit of {self.shown(path)} to undo (undo_edit reverts only "
                            f"changes made with this editor)")
        previous = previous_versions.pop()
        if previous is None:
            path.unlink(missing_ok=True)
            return f"Undid the creation of {self.shown(path)}: the file is removed."
        path.write_bytes(previous)
        return f"Last edit of {self.shown(path)} undone; it is back to its previous content."

    # --- helpers ---------------------------------------------------------------------------

    def _read(self, path: Path) -> str:
        if not path.exists():
            raise ToolError(f"{self.shown(path)} does not exist; view its directory to find the "
                            f"right name, or use create to make a new file")
        if path.is_dir():
            raise ToolError(f"{self.shown(path)} is a directory; use view to list it")
        data = path.read_bytes()
        try:
            if b"\0" in data:
                raise UnicodeError
            return data.decode("utf-8")
        except UnicodeError:
            raise ToolError(f"{self.shown(path)} is binary or not UTF-8 text; the editor handles "
                            f"text only; inspect it with bash (e.g. file, xxd | head)") from None

    def _write(self, path: Path, text: str, previous: bytes | None) -> None:
        path.write_bytes(text.encode("utf-8"))
        self.history.setdefault(path, []).append(previous)

    def _numbered(self, path: Path, lines: list[str], first: int, last: int) -> str:
        """`cat -n` style lines first..last (1-based), clipped to the output limit with a hint."""
        shown: list[str] = []
        size = 0
        for number in range(first, last + 1):
            row = f"{number:6}\t{lines[number - 1].rstrip(chr(13))}"
            if shown and size + len(row) + 1 > self.max_output_chars:
                return "\n".join(shown) + (
                    f"\n[clipped: {self.shown(path)} has {len(lines)} lines; shown {first}-"
                    f"{number - 1}. View more with view_range [{number}, {min(number + 199, last)}]"
                    f", or find lines with grep -n through bash]")
            shown.append(row)
            size += len(row) + 1
        return clip_text("\n".join(shown), self.max_output_chars)

    def _view_directory(self, path: Path) -> str:
        entries: list[str] = []
        for current, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            depth = len(Path(current).relative_to(path).parts)
            if depth >= TREE_DEPTH:
                dirs[:] = []
            for name in dirs:
                entries.append(self.shown(Path(current) / name) + "/")
            entries += [self.shown(Path(current) / f) for f in sorted(files)
                        if not f.startswith(".")]
        header = (f"Files and directories up to {TREE_DEPTH} levels deep in {self.shown(path)}, "
                  f"hidden entries skipped:")
        return clip_text("\n".join([header, *sorted(entries)]), self.max_output_chars)

    def _edited(self, path: Path, content: str, start: int, inserted: str) -> str:
        lines = _split_lines(content)
        if not lines:
            return f"The file {self.shown(path)} has been edited; it is now empty."
        first_line = content.count("\n", 0, start) + 1
        last_line = first_line + inserted.count("\n")
        first = max(first_line - SNIPPET_CONTEXT, 1)
        last = min(last_line + SNIPPET_CONTEXT, len(lines))
        snippet = self._numbered(path, lines, first, last)
        return (f"The file {self.shown(path)} has been edited. Lines {first}-{last} now read:\n"
                f"{snippet}\nReview the change; edit again if it is not what you intended.")

    def _no_unique_match(self, path: Path, content: str, old: str, positions: list[int]) -> str:
        if positions:
            numbers = ", ".join(str(content.count("\n", 0, p) + 1) for p in positions[:20])
            return (f"old_str occurs {len(positions)} times in {self.shown(path)} (starting at "
                    f"lines {numbers}); include more surrounding lines in old_str so that it "
                    f"matches exactly once")
        hint = "view the file and copy the lines exactly, including indentation and blank lines"
        stripped = old.strip()
        if stripped and stripped != old and stripped in content:
            line = content.count("\n", 0, content.find(stripped)) + 1
            hint = (f"the text occurs (near line {line}) when leading and trailing whitespace is "
                    f"ignored; copy the exact whitespace from a view of the file")
        return f"old_str does not occur in {self.shown(path)}; {hint}"


def _check_arguments(arguments: Any) -> tuple[str, dict[str, Any]]:
    """(command, arguments without nulls), or ToolError naming what this command expects."""
    if not isinstance(arguments, dict):
        raise ToolError("str_replace_editor needs a JSON object of arguments, e.g. "
                        '{"command": "view", "path": "README.md"}')
    args = {k: v for k, v in arguments.items() if v is not None}
    command = args.pop("command", None)
    if command not in COMMANDS:
        raise ToolError(f"command must be one of {', '.join(COMMANDS)}; got {command!r}")
    required, optional = SIGNATURES[command]
    usage = _usage(command)
    missing = [name for name in required if name not in args]
    extra = [str(name) for name in args if name not in required + optional]
    if missing or extra:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else [])
        raise ToolError(f"{'; '.join(problems)}. {usage}")
    for name, value in args.items():
        expected = ARGUMENT_TYPES[name]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ToolError(f"{name} must be {_type_name(name)}, got {type(value).__name__}. "
                            f"{usage}")
    return command, args


def _usage(command: str) -> str:
    required, optional = SIGNATURES[command]
    names = [*required, *(f"{name} (optional)" for name in optional)]
    return f"{command} takes: command, {', '.join(names)}."


def _type_name(name: str) -> str:
    return {"insert_line": "an integer (a line number)",
            "view_range": "a list of two line numbers [start, end] (end -1 = to the end)"}.get(
        name, "a string")


def _check_view_range(view_range: Any, line_count: int) -> tuple[int, int]:
    """1-based inclusive (first, last) for a view_range, or ToolError."""
    if view_range is None:
        return 1, line_count
    valid = (len(view_range) == 2
             and all(isinstance(n, int) and not isinstance(n, bool) for n in view_range))
    if not valid:
        raise ToolError("view_range must be two integers [start, end]; end -1 means to the end")
    start, end = view_range
    end = line_count if end == -1 else min(end, line_count)
    if not 1 <= start <= max(line_count, 1) or end < start and line_count:
        raise ToolError(f"view_range {view_range} is invalid: the file has {line_count} lines; "
                        f"use 1 <= start <= end <= {line_count}, or end -1 for the rest")
    return start, end


def _split_lines(content: str) -> list[str]:
    """Lines as `cat -n` counts them: split on \\n only; a final newline ends the last line."""
    if not content:
        return []
    lines = content.split("\n")
    return lines[:-1] if content.endswith("\n") else lines


def _line_end_offset(content: str, line: int) -> int:
    """Offset just after line `line` (1-based; 0 = start of the file)."""
    offset = 0
    for _ in range(line):
        newline = content.find("\n", offset)
        if newline < 0:
            return len(content)
        offset = newline + 1
    return offset


def _occurrences(content: str, text: str) -> list[int]:
    """Start offsets of every occurrence of `text`, overlapping ones included."""
    positions = []
    position = content.find(text)
    while position >= 0:
        positions.append(position)
        position = content.find(text, position + 1)
    return positions
