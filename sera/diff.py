"""Unified diffs, read once: the one parser every module that looks inside a patch uses.

    files = parse(patch)                  # [FilePatch(old_path, new_path, hunks, binary)]
    changed_lines(patch)                  # ["+x = 1", "-x = 0"]: what line recall compares
    changed_files(patch), changed_ranges(patch), file_sections(patch_bytes), unquote(path)

It reads git's patches (`diff --git`, quoted paths, binary sections, creations, deletions,
renames), plain `diff -u` output, hunks whose headers lack counts (as models write them), and
bare fragments of `+`/`-` lines. Header lines are told apart from changes by position, not by
prefix: a removed line whose content starts with "--" reads "---..." inside a hunk and is a
change. A counted hunk ends after its counts; a hunk without counts ends at the next file header
("--- " followed by "+++ " and "@@", or "diff "). Lines are split on "\\n" only (str.splitlines
would also split source lines at \\f, \\v or U+2028).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

HUNK_HEADER = re.compile(r"^@@+ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_GIT_HEADER = re.compile(r'^diff --git (?:"(.+?)"|(a/.+?)) (?:"(.+)"|(b/.+))$')
_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              '"': '"', "\\": "\\"}


@dataclass
class Hunk:
    old_start: int  # 1-based first line on the old side (0 for an empty old side)
    old_count: int
    new_start: int
    new_count: int
    lines: list[str] = field(default_factory=list)  # " ", "+", "-" lines and "\" notes, in order
    counted: bool = True  # False: the header had no counts (a model's), or a bare fragment

    @property
    def changes(self) -> list[str]:
        """The hunk's "+"/"-" lines, signs kept."""
        return [line for line in self.lines if line[:1] in ("+", "-")]

    @property
    def change_ranges(self) -> list[tuple[int, int]]:
        """(first, last) 1-based old-side lines of each run of changes: the lines it removes, or
        for a run that only adds, the line it follows (the first line at the top of a file)."""
        ranges, line, run = [], self.old_start, None  # run: [first, last] removed, or None
        for text in [*self.lines, " "]:
            if text.startswith(("-", "+")):
                run = run or [line, line - 1]
                if text[0] == "-":
                    run[1], line = line, line + 1
            elif not text.startswith("\\"):
                if run:
                    ranges.append((run[0], run[1]) if run[1] >= run[0] else
                                  (max(1, run[0] - 1),) * 2)
                run, line = None, line + 1
        return ranges

    @property
    def old_range(self) -> tuple[int, int]:
        """(first, last) 1-based lines the hunk covers on the old side (one line when empty)."""
        first = max(1, self.old_start)
        return first, first + max(self.old_count, 1) - 1


@dataclass
class FilePatch:
    old_path: str | None  # None: the patch creates the file (or a bare fragment names none)
    new_path: str | None  # None: the patch deletes the file
    hunks: list[Hunk] = field(default_factory=list)
    binary: bool = False

    @property
    def path(self) -> str | None:
        """The file's name after the patch (before it, for a deletion)."""
        return self.new_path or self.old_path


def parse(patch: str) -> list[FilePatch]:
    """The files of a patch in order, each with its hunks; see the module for what it reads."""
    return _Reader(patch.split("\n")).read()


def changed_lines(patch: str) -> list[str]:
    """The changed lines of `patch` in order, with their signs; lines blank after the sign left
    out (METHODS.md: soft verification compares these)."""
    return [line for file in parse(patch) for hunk in file.hunks for line in hunk.changes
            if line[1:].strip()]


def changed_files(patch: str) -> list[str]:
    """The files a patch changes, in order (a rename's new name, a deletion's old one)."""
    return list(dict.fromkeys(file.path for file in parse(patch) if file.path))


def changed_ranges(patch: str) -> dict[str, list[tuple[int, int]]]:
    """Per file that exists before the patch (its old path), the 1-based (first, last) lines
    each hunk covers on the old side: where the change is, as the file reads before it."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for file in parse(patch):
        counted = [hunk.old_range for hunk in file.hunks if hunk.counted]
        if file.old_path is not None and counted:
            ranges.setdefault(file.old_path, []).extend(counted)
    return ranges


def change_ranges(patch: str) -> dict[str, list[tuple[int, int]]]:
    """Per file that exists before the patch, the old-side lines of each run of changes
    (Hunk.change_ranges): exactly where the change is, without the hunks' context lines."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for file in parse(patch):
        counted = [r for hunk in file.hunks if hunk.counted for r in hunk.change_ranges]
        if file.old_path is not None and counted:
            ranges.setdefault(file.old_path, []).extend(counted)
    return ranges


def digest(patch: str) -> str:
    """A short fingerprint of a patch's exact text (what a test run was made on)."""
    return hashlib.sha1(patch.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def file_sections(patch: bytes) -> list[bytes]:
    """A git patch cut before each "diff --git" line (inside hunks every line starts with a
    sign or a space, so the cut cannot fall inside one)."""
    if not patch:
        return []
    starts = [0] + [match.start() + 1 for match in re.finditer(rb"\ndiff --git ", patch)]
    return [patch[start:end] for start, end in zip(starts, starts[1:] + [len(patch)])]


def normalize(patch: str) -> str:
    """The patch with `index` lines, hunk line numbers and trailing whitespace dropped: file names,
    context and changed lines are kept, so equal patches made at other offsets compare equal."""
    lines = ["@@" if HUNK_HEADER.match(line) else line.rstrip()
             for line in patch.split("\n") if not line.startswith("index ")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def unquote(path: str) -> str:
    """A path as git prints it, C-quoted when it holds special characters, back to the name."""
    if not (len(path) >= 2 and path[0] == path[-1] == '"'):
        return path
    body, out, index = path[1:-1], bytearray(), 0
    while index < len(body):
        char = body[index]
        if char != "\\" or index + 1 == len(body):
            out += char.encode("utf-8", "surrogateescape")
            index += 1
        elif body[index + 1] in "01234567":
            out.append(int(body[index + 1:index + 4], 8) & 0xFF)
            index += 4
        else:
            out += _C_ESCAPES.get(body[index + 1], body[index + 1]).encode()
            index += 2
    return out.decode("utf-8", "surrogateescape")


def header_path(name: str) -> str | None:
    """The file a "--- "/"+++ " header names (without a/ or b/); None for /dev/null."""
    name = name.split("\t", 1)[0].strip() if not name.startswith('"') else name.rstrip("\t ")
    name = unquote(name)
    if name == "/dev/null":
        return None
    return name[2:] if name[:2] in ("a/", "b/") else name


def git_header_paths(line: str) -> tuple[str, str] | None:
    """(old, new) names of a "diff --git a/x b/y" line; None for any other line."""
    match = _GIT_HEADER.match(line)
    if not match:
        return None
    quoted_old, old, quoted_new, new = match.groups()
    old = unquote(f'"{quoted_old}"') if quoted_old is not None else old
    new = unquote(f'"{quoted_new}"') if quoted_new is not None else new
    return _strip_prefix(old), _strip_prefix(new)


class _Reader:
    """One pass over a patch's lines; `read` returns the files."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.files: list[FilePatch] = []
        self.hunk: Hunk | None = None
        self.old_left = self.new_left = 0  # lines of the counted hunk still to come
        self.in_binary = False
        self.old_header_seen = False  # the current file section has had its "--- " line

    def read(self) -> list[FilePatch]:
        for number, line in enumerate(self.lines):
            if line.startswith("diff "):
                self._open_git_file(line)
            elif self.in_binary:
                continue
            elif self._inside_hunk(number):
                self._hunk_line(line)
            else:
                self._header_line(line)
        return [file for file in self.files if file.hunks or file.binary or file.path]

    def _inside_hunk(self, number: int) -> bool:
        if self.hunk is None:
            return False
        if self.hunk.counted:
            return self.old_left > 0 or self.new_left > 0 or self.lines[number].startswith("\\")
        return not self._starts_file_header(number)

    def _starts_file_header(self, number: int) -> bool:
        following = self.lines[number + 1:number + 3]
        return (self.lines[number].startswith("--- ") and len(following) == 2
                and following[0].startswith("+++ ") and following[1].startswith("@@"))

    def _hunk_line(self, line: str) -> None:
        assert self.hunk is not None
        if line.startswith("@@") and not self.hunk.counted:
            self._header_line(line)  # the next hunk of an uncounted file section
            return
        if line.startswith("\\"):  # "\ No newline at end of file"
            self.hunk.lines.append(line)
            return
        if line.startswith("+"):
            self.new_left -= 1
        elif line.startswith("-"):
            self.old_left -= 1
        else:  # context (" " or an empty line whose space an editor stripped)
            self.old_left, self.new_left = self.old_left - 1, self.new_left - 1
            line = line or " "
        self.hunk.lines.append(line)

    def _header_line(self, line: str) -> None:
        self.hunk = None
        if line.startswith("@@"):
            self._open_hunk(line)
        elif line.startswith("--- "):
            file = self._current()
            if file.hunks or file.binary or self.old_header_seen:
                file = self._new_file()
            file.old_path = header_path(line[4:])
            self.old_header_seen = True
        elif line.startswith("+++ "):
            self._current().new_path = header_path(line[4:])
        elif line.startswith(("GIT binary patch", "Binary files ")):
            self._current().binary = True
            self.in_binary = line.startswith("GIT binary patch")
        elif line.startswith("new file mode") and self.files:
            self.files[-1].old_path = None
        elif line.startswith("deleted file mode") and self.files:
            self.files[-1].new_path = None
        elif line.startswith("rename from ") and self.files:
            self.files[-1].old_path = unquote(line[len("rename from "):])
        elif line.startswith("rename to ") and self.files:
            self.files[-1].new_path = unquote(line[len("rename to "):])
        elif line.startswith(("+", "-")) and not line.startswith(("---", "+++")):  # a bare fragment without hunk headers
            self._fragment().lines.append(line)

    def _open_git_file(self, line: str) -> None:
        self.hunk, self.in_binary = None, False
        file = self._new_file()
        names = git_header_paths(line)
        if names:  # "---"/"+++" lines, where they follow, name the files again
            file.old_path, file.new_path = names

    def _open_hunk(self, line: str) -> None:
        match = HUNK_HEADER.match(line)
        if match:
            old_start, old_count, new_start, new_count = match.groups()
            hunk = Hunk(int(old_start), 1 if old_count is None else int(old_count),
                        int(new_start), 1 if new_count is None else int(new_count))
            self.old_left, self.new_left = hunk.old_count, hunk.new_count
        else:
            hunk = Hunk(0, 0, 0, 0, counted=False)
        self._current().hunks.append(hunk)
        self.hunk = hunk

    def _fragment(self) -> Hunk:
        file = self._current()
        if not file.hunks or file.hunks[-1].counted:
            file.hunks.append(Hunk(0, 0, 0, 0, counted=False))
        return file.hunks[-1]

    def _current(self) -> FilePatch:
        return self.files[-1] if self.files else self._new_file()

    def _new_file(self) -> FilePatch:
        self.old_header_seen = False
        self.files.append(FilePatch(None, None))
        return self.files[-1]


def _strip_prefix(path: str) -> str:
    return path[2:] if path[:2] in ("a/", "b/") else path
