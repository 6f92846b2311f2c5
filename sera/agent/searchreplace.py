"""SEARCH/REPLACE edit blocks (aider style): parse them from a model reply, apply them leniently.

A block, as the guided scaffold asks for it:

    calc.py
    ```python
    <<<<<<< SEARCH
        return a - b
    =======
        return a + b
    >>>>>>> REPLACE
    ```

Parsing is lenient for small models: 5 to 9 marker characters, fences optional, the path may sit
inside the fence line (```python calc.py), and a block without a path uses the previous block's
path, else the caller's default (when only one file is in play).

Applying tries, per block: the exact lines; then the lines ignoring trailing whitespace; then the
lines ignoring a uniform indentation offset (the replacement is re-indented by the same offset);
then lines off by indentation line by line; then, for SEARCH parts of four lines or more, copying
slips (a line in five that differs from the file but comes back unchanged in REPLACE is taken as
the file has it); then the same with line-number prefixes ("  12 | ") the model copied from the
prompt removed. An
empty SEARCH creates a missing file (or appends to an existing one). A SEARCH part that matches
several places is taken where exactly one of them lies inside a function the model was shown
(`focus`: small models quote the two lines they change, which often recur in a file). A SEARCH
part that is not in the file its block names (or names a file that does not exist) but is in
exactly one other file the model was shown is applied there (small models put the path of the
first file shown above code quoted from the second). A miss or an ambiguous match raises
EditError, whose message goes back to the model and says what was not found, the closest lines
with their numbers, and how to fix the block; where those closest lines are the block's REPLACE
part, at any indentation, it says that the change is made already (the 1.5B "adds" code the file
has, quoting it without the part it means to add, or sends a block that applied once again).
`apply_edits` applies all blocks or none (for checking an answer); `apply_what_applies` writes the
blocks that apply and returns the others with their errors, as aider does (the guided scaffold: a
small model's one wrong block no longer throws away its right ones); a missed block whose SEARCH
and REPLACE parts are equal is returned only when no other block changed anything (then the
closest lines it gets back lead the model to an edit more often than not; measured on the bench).

A reply with no block that rewrites the numbered code view it was shown ("calc.py (lines 1-3)",
then a fence of "   3 |     return a + b" lines) is read as the edit it describes
(`numbered_rewrite_edits`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

from sera.agent.sourcecode import functions_in_source

# The markers' words may be anything or nothing: the embedded 1.5B writes the path in their place
# ("<<<<<<< src/pkg/mod.py" ... ">>>>>>> src/pkg/mod.py"), as git's conflict markers do.
SEARCH_MARK = re.compile(r"^\s*<{5,9}(SEARCH\b.*|\s.*)?$", re.IGNORECASE)
DIVIDER_MARK = re.compile(r"^\s*={5,9}\s*$")
REPLACE_MARK = re.compile(r"^\s*>{5,9}((REPLACE|UPDATED)\b.*|\s.*)?$", re.IGNORECASE)
FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
# "  12 | code" as the guided prompt numbers lines
LINE_NUMBER = re.compile(r"^\s*\d+ ?\| ?")
PATH_LIKE = re.compile(r"^[\w./\\@+-]+$")
# How far back from a SEARCH marker the path may stand (blank lines and a fence line between).
PATH_LOOKBACK = 3
CLOSEST_LINES_FILE_LIMIT = 5000


class EditError(Exception):
    """A block could not be parsed or applied. The message is written for the model: what went
    wrong and how to fix the block. No file was changed."""


class SearchNotFound(EditError):
    """A block's SEARCH part is not in its file; `closest` holds the file's lines nearest to it
    (exact, as a ready SEARCH part for a retry), or None when no lines are near."""

    def __init__(self, message: str, path: str, closest: tuple[str, ...] | None) -> None:
        super().__init__(message)
        self.path, self.closest = path, closest


@dataclass(frozen=True)
class Edit:
    """One block: replace the lines `search` by `replace` in `path` (lines without line ends)."""

    path: str
    search: tuple[str, ...]
    replace: tuple[str, ...]

    def render(self, language: str = "") -> str:
        """The block as text, in the canonical form the prompts ask for: the path, then the
        markers inside a fence (```language)."""
        return "\n".join([self.path, "```" + language, "<<<<<<< SEARCH", *self.search, "=======",
                          *self.replace, ">>>>>>> REPLACE", "```"])


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_edits(text: str, default_path: str | None = None) -> list[Edit]:
    """The blocks in a reply, in order; [] when there are none. EditError for a block that starts
    but is not finished, or one whose file cannot be told."""
    lines = text.split("\n")
    edits: list[Edit] = []
    previous_path: str | None = None
    start = 0  # where text not yet consumed by a block begins
    i = 0
    while i < len(lines):
        if not SEARCH_MARK.match(lines[i]):
            i += 1
            continue
        path = _path_before(lines, start, i) or previous_path or default_path
        if not path:
            raise EditError("a SEARCH/REPLACE block has no file path: write the path of the file "
                            "on its own line just before the block (before the ``` fence)")
        j = i + 1
        while j < len(lines) and not DIVIDER_MARK.match(lines[j]):
            if SEARCH_MARK.match(lines[j]) or REPLACE_MARK.match(lines[j]):
                raise EditError(f"the block for {path} has no ======= line between its SEARCH "
                                f"and REPLACE parts; write <<<<<<< SEARCH, the old lines, =======, "
                                f"the new lines, >>>>>>> REPLACE")
            j += 1
        k = _replace_end(lines, j + 1)
        if j >= len(lines) or k is None:
            raise EditError(f"the block for {path} is not finished (it needs the lines ======= and "
                            f">>>>>>> REPLACE); send the whole block again, keeping it short")
        edits.append(Edit(path, tuple(_strip_cr(lines[i + 1:j])), tuple(_strip_cr(lines[j + 1:k]))))
        previous_path = path
        start = i = k + 1
    return edits


def _replace_end(lines: list[str], start: int) -> int | None:
    """The line that ends a REPLACE part beginning at `start`: its >>>>>>> REPLACE marker; else
    the bare fence that closes the block (the 1.5B often leaves the marker out: 4 of 27 bench
    candidates failed on it), when no marker comes before the next block; None when neither."""
    fence = None
    for k in range(start, len(lines)):
        if REPLACE_MARK.match(lines[k]):
            return k
        if SEARCH_MARK.match(lines[k]):
            break
        closing = FENCE.match(lines[k])
        if fence is None and closing and not closing.group(2).strip():
            fence = k
    return fence


NUMBERED_LINE = re.compile(r"^\s*(\d+) ?\| ?(.*)$")
REWRITE_SHARE = 0.5  # of a fence's non-blank lines that must carry a line number (at least)


def numbered_rewrite_edits(root: Path, text: str) -> list[Edit]:
    """Edits from a reply that rewrote the numbered code view it was shown instead of writing
    blocks (small models do): a fence under a line naming a file, at least half of whose lines are
    "N | code" with rising numbers. Each such fence replaces the file's lines from its first to
    its last number by the fence's lines (numbers removed; unnumbered lines count as inserted).
    Fences that change nothing, or whose numbers do not fit the file, are left out."""
    lines = text.split("\n")
    edits = []
    for path, body in _fenced_views(lines):
        numbers = [int(m.group(1)) for m in map(NUMBERED_LINE.match, body) if m]
        if not numbers or numbers != sorted(numbers) or \
                len(numbers) < REWRITE_SHARE * sum(1 for line in body if line.strip()):
            continue
        if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
            continue  # apply_edits would refuse it anyway; do not read outside the root
        original = _read(Path(root), path)
        if original is None:
            continue
        file_lines = original.split("\n")
        if numbers[-1] > len(file_lines):
            continue
        search = tuple(_strip_cr(file_lines[numbers[0] - 1:numbers[-1]]))
        replace = tuple(_strip_cr([m.group(2) if (m := NUMBERED_LINE.match(line)) else line
                                   for line in body]))
        if search != replace:
            edits.append(Edit(path, search, replace))
    return edits


def _fenced_views(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(path, lines up to the next fence line) for each fence line whose nearest line above names
    a file. Every fence line is tried as an opener: small models nest the path inside a fence of
    their own ("```python", "calc.py (lines 1-3)", "```python", numbered lines, "```")."""
    found = []
    for i, line in enumerate(lines):
        if not FENCE.match(line):
            continue
        above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        path = _clean_path(above)
        if path:
            end = next((j for j in range(i + 1, len(lines)) if FENCE.match(lines[j])), len(lines))
            found.append((path, lines[i + 1:end]))
    return found


def _strip_cr(lines: list[str]) -> list[str]:
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _path_before(lines: list[str], start: int, marker: int) -> str | None:
    """The file path written just before a SEARCH marker: on its own line, or in the fence line."""
    looked = 0
    for index in range(marker - 1, start - 1, -1):
        line = lines[index].strip()
        if not line:
            continue
        fence = FENCE.match(line)
        if fence:
            words = fence.group(2).split()
            inside = next((w for w in words if _clean_path(w) and ("." in w or "/" in w)), None)
            if inside:
                return _clean_path(inside)
        else:
            return _clean_path(line)
        looked += 1
        if looked >= PATH_LOOKBACK:
            return None
    return None


def _clean_path(text: str) -> str | None:
    text = text.strip()
    text = re.sub(r"^(#+|//|--)\s*", "", text)
    text = re.sub(r"^(file(name)?|path)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.strip().strip("*`'\"").rstrip(":").strip().strip("*`'\"")
    # the guided views' headers, "path (lines 3-9: name)" and "path (function name)", copied back
    text = re.sub(r"\s+\((lines? \d|function )[^)]*\)$", "", text).strip("*`'\"")
    if not text or len(text) > 255 or not PATH_LIKE.match(text):
        return None
    if "/" not in text.strip("/") and not re.search(r"[^.]\.\w+$", text):
        return None  # a word or a sentence's end, not a file name
    return text.replace("\\", "/")


# ---------------------------------------------------------------------------------------------
# Applying


def apply_edits(root: Path, edits: Iterable[Edit], allowed_paths: Iterable[str] | None = None,
                focus: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Apply all blocks under `root` (all or none); the changed paths (posix, relative), in order.
    `allowed_paths`: if given, the only paths that may be edited (new files included).
    `focus`: path -> qualified names of the functions the model was shown there; a SEARCH part
    matching several places is taken at the one place inside those functions, if there is one,
    and one not in its own file is taken in the one other file of `focus` that holds it."""
    session = _Session(root, allowed_paths, focus)
    for edit in edits:
        session.apply(edit)
    return session.write()


@dataclass
class Applied:
    """What `apply_what_applies` did: the paths it changed, in order, and the blocks it could
    not apply, each with the error that says why (written for the model)."""

    changed: list[str]
    failed: list[tuple[Edit, EditError]]


def apply_what_applies(root: Path, edits: Iterable[Edit],
                       focus: Mapping[str, Iterable[str]] | None = None) -> Applied:
    """Apply each block that applies, in order, and write the files they change; the blocks
    that do not apply are returned with their errors, and change nothing."""
    session = _Session(root, None, focus)
    failed = []
    for edit in edits:
        try:
            session.apply(edit)
        except EditError as error:
            failed.append((edit, error))
    changed = session.write()
    if changed:  # a missed block that would change nothing is no reason to ask again
        failed = [(edit, error) for edit, error in failed if edit.search != edit.replace]
    return Applied(changed, failed)


class _Session:
    """Blocks applied in memory, one after the other, each to the text the ones before left."""

    def __init__(self, root: Path, allowed_paths: Iterable[str] | None,
                 focus: Mapping[str, Iterable[str]] | None) -> None:
        self.root = Path(root).resolve()
        self.allowed = None if allowed_paths is None else {_normalize(p) for p in allowed_paths}
        self.shown = {_normalize(path): set(names) for path, names in (focus or {}).items()}
        self.contents: dict[str, str | None] = {}  # relative path -> text so far (None: missing)
        self.originals: dict[str, str | None] = {}

    def apply(self, edit: Edit) -> None:
        """Apply one block to the texts so far, or raise EditError and change nothing."""
        rel = _check_path(self.root, edit.path, self.allowed)
        text = self._text(rel)
        try:
            self.contents[rel] = _apply_one(text, edit, rel, self.shown.get(rel, set()))
        except EditError as error:
            quoted = any(line.strip() for line in edit.search)
            missed = isinstance(error, SearchNotFound) or (text is None and quoted)
            other = self._other_shown_file(edit, rel) if missed else None
            if other is None:
                raise
            self.contents[other[0]] = other[1]

    def _other_shown_file(self, edit: Edit, rel: str) -> tuple[str, str] | None:
        """(path, new text) where the block applies to exactly one other file the model was
        shown, else None."""
        fits = []
        for path in self.shown:
            if path == rel or (self.allowed is not None and path not in self.allowed):
                continue
            try:
                fits.append((path, _apply_one(self._text(path), edit, path, self.shown[path])))
            except EditError:
                continue
        return fits[0] if len(fits) == 1 else None

    def _text(self, rel: str) -> str | None:
        if rel not in self.contents:
            self.contents[rel] = self.originals[rel] = _read(self.root, rel)
        return self.contents[rel]

    def write(self) -> list[str]:
        """Write the files whose text changed; their paths, in the order first edited."""
        changed = [rel for rel in self.contents if self.contents[rel] != self.originals[rel]]
        for rel in changed:
            _write(self.root, rel, self.contents[rel] or "")
        return changed


def _normalize(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return str(PurePosixPath(path))


def _check_path(root: Path, path: str, allowed: set[str] | None) -> str:
    if not path or "\0" in path:
        raise EditError(f"{path!r} is not a valid file path; write the path relative to the "
                        f"repository root, e.g. src/module.py")
    try:
        target = (root / path).resolve()
        rel = target.relative_to(root).as_posix()
    except (ValueError, OSError, RuntimeError):
        raise EditError(f"{path} is outside the repository; edit only files inside it, with "
                        f"paths relative to its root") from None
    if rel in ("", ".") or ".git" in PurePosixPath(rel).parts:
        raise EditError(f"{path} cannot be edited; name a source file of the repository")
    if allowed is not None and rel not in allowed:
        raise EditError(f"{path} is not one of the files you may edit here: "
                        f"{', '.join(sorted(allowed))}; put the change in one of them")
    return rel


def _read(root: Path, rel: str) -> str | None:
    target = root / rel
    try:
        if not target.exists():
            return None
        return target.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as error:
        raise EditError(f"cannot read {rel} ({error.strerror or error}); name a text file") from None


def _write(root: Path, rel: str, text: str) -> None:
    target = root / rel
    try:
        data = text.encode("utf-8", "surrogateescape")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except (OSError, UnicodeEncodeError) as error:
        raise EditError(f"cannot write {rel} ({error}); name a file path inside the "
                        f"repository") from None


def _split(text: str) -> list[str]:
    """Lines with their "\\n" kept (the last one may lack it); "" -> []."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _apply_one(content: str | None, edit: Edit, rel: str, focus: set[str] = frozenset()) -> str:
    search, replace = list(edit.search), list(edit.replace)
    if not any(line.strip() for line in search):
        if content is None or not content.strip():
            return _join(replace, "\n", final_newline=True)
        if not search:  # an empty SEARCH on an existing file appends
            newline = "\r\n" if "\r\n" in content else "\n"
            separator = "" if content.endswith("\n") else newline
            return content + separator + _join(replace, newline, final_newline=True)
        raise EditError(f"the SEARCH part of a block for {rel} holds only blank lines, which "
                        f"match many places; quote a few lines of code to change")
    if content is None:
        raise EditError(f"{rel} does not exist. To create it, leave the SEARCH part empty; to "
                        f"change an existing file, use its exact path as shown")
    lines = _split(content)
    newline = "\r\n" if content.count("\r\n") * 2 > content.count("\n") else "\n"
    for strategy in (_exact, _trailing, _indented, _reindented, _near):
        found = _find(lines, search, replace, strategy)
        if found is None:
            continue
        if len(found) > 1:
            found = _in_focus(content, rel, found, len(search), focus) or found
        if len(found) > 1:
            numbers = ", ".join(str(start + 1) for start, _ in found)
            raise EditError(f"the SEARCH part of a block for {rel} matches {len(found)} places "
                            f"(lines {numbers}); add a few more lines around the change so it "
                            f"matches only once")
        start, new_lines = found[0]
        return _splice(lines, start, len(search), new_lines, newline)
    trimmed = _trim_blank_ends(search, replace)
    if trimmed is not None:  # blank lines at the ends of SEARCH that the file lacks there
        try:
            return _apply_one(content, Edit(edit.path, *trimmed), rel, focus)
        except EditError:
            pass
    stripped = [LINE_NUMBER.sub("", line, count=1) for line in search]
    if all(LINE_NUMBER.match(line) for line in search if line.strip()) and stripped != search:
        unnumbered = Edit(edit.path, tuple(stripped),
                          tuple(LINE_NUMBER.sub("", line, count=1) for line in replace))
        return _apply_one(content, unnumbered, rel, focus)
    closest = _closest(lines, search)
    made = _already_made(lines, replace, closest)
    if made is not None:
        raise EditError(f"the SEARCH part of a block for {rel} is not in the file, but its "
                        f"REPLACE part already is (line {made + 1}): that change is made "
                        f"already. If the task needs more, change other lines")
    raise SearchNotFound(_miss_message(rel, lines, search, closest), rel,
                         None if closest is None else tuple(
                             _bare(line).removesuffix("\r") for line in lines[slice(*closest)]))


def _already_made(lines: list[str], replace: list[str],
                  closest: tuple[int, int] | None) -> int | None:
    """Where the lines nearest a missed SEARCH part are its REPLACE part, at any indentation
    (the block that made it may have been applied at the file's): the change the block
    describes is in the file already (index of its first line), else None."""
    if closest is None or not any(line.strip() for line in replace):
        return None
    for start, _ in _find(lines, replace, replace, _indented) or []:  # any offset, none included
        if closest[0] <= start < closest[1]:
            return start
    return None


def _in_focus(content: str, rel: str, found: list[tuple[int, list[str]]], size: int,
              focus: set[str]) -> list[tuple[int, list[str]]] | None:
    """The one match that lies inside a function of `focus` (found in the current text, so
    earlier blocks that moved lines do not matter), as a list; None unless exactly one does."""
    if not focus:
        return None
    spans = [(fn.start_line, fn.end_line) for fn in functions_in_source(
        content.encode("utf-8", "surrogateescape"), rel) if fn.qualified_name in focus]
    inside = [(start, new_lines) for start, new_lines in found
              if any(first <= start + 1 and start + size <= last for first, last in spans)]
    return inside if len(inside) == 1 else None


def _trim_blank_ends(search: list[str], replace: list[str]):
    """SEARCH without its leading and trailing blank lines, and REPLACE without as many blank
    lines at the same ends; None when SEARCH has none there."""
    head = next(i for i, line in enumerate(search) if line.strip())
    tail = next(i for i, line in enumerate(reversed(search)) if line.strip())
    if not head and not tail:
        return None
    new_search = tuple(search[head:len(search) - tail])
    new_replace = list(replace)
    for _ in range(head):
        if new_replace and not new_replace[0].strip():
            new_replace.pop(0)
    for _ in range(tail):
        if new_replace and not new_replace[-1].strip():
            new_replace.pop()
    return new_search, tuple(new_replace)


def _join(lines: list[str], newline: str, final_newline: bool) -> str:
    text = newline.join(lines)
    return text + newline if final_newline and lines else text


def _splice(lines: list[str], start: int, count: int, new_lines: list[str], newline: str) -> str:
    window = lines[start:start + count]
    last_has_end = window[-1].endswith("\n")
    before, after = "".join(lines[:start]), "".join(lines[start + count:])
    ending = newline
    if window[-1].endswith("\r\n"):
        ending = "\r\n"
    elif last_has_end:
        ending = "\n"
    middle = _join(new_lines, ending, final_newline=last_has_end)
    if not new_lines and not last_has_end and before.endswith("\n"):
        # the block removed the file's last line: the line before it loses its line end
        before = before[:-2] if before.endswith("\r\n") else before[:-1]
    return before + middle + after


def _find(lines, search, replace, strategy) -> list[tuple[int, list[str]]] | None:
    found = []
    for start in range(len(lines) - len(search) + 1):
        new_lines = strategy(lines[start:start + len(search)], search, replace)
        if new_lines is not None:
            found.append((start, new_lines))
    return found or None


def _bare(line: str) -> str:
    return line[:-1] if line.endswith("\n") else line


def _exact(window, search, replace):
    if all(_bare(w).removesuffix("\r") == s for w, s in zip(window, search)):
        return list(replace)
    return None


def _trailing(window, search, replace):
    if all(w.rstrip() == s.rstrip() for w, s in zip(window, search)):
        return list(replace)
    return None


def _indented(window, search, replace):
    """The window equals the search lines shifted by one indentation offset (either way)."""
    extra: str | None = None   # indentation the file has beyond the search lines
    missing: str | None = None  # indentation the search lines have beyond the file
    for w, s in zip(window, search):
        w, s = w.rstrip(), s.rstrip()
        if not w and not s:
            continue
        if not w or not s:
            return None
        if w.endswith(s) and not w[:len(w) - len(s)].strip():
            offset = w[:len(w) - len(s)]
            if offset:
                if missing is not None or (extra is not None and extra != offset):
                    return None
                extra = offset
                continue
            if extra is None and missing is None:
                continue
            return None
        if s.endswith(w) and not s[:len(s) - len(w)].strip():
            offset = s[:len(s) - len(w)]
            if extra is not None or (missing is not None and missing != offset):
                return None
            missing = offset
            continue
        return None
    if extra:
        return [extra + line if line.strip() else line for line in replace]
    if missing:
        return [line[len(missing):] if line.startswith(missing) else line.lstrip()
                for line in replace]
    return list(replace)


def _reindented(window, search, replace):
    """The lines match apart from indentation that is off by different amounts line by line (the
    embedded 1.5B indents a function's first line like its body). Each REPLACE line takes the
    file's indentation of the SEARCH line it stands for, plus its own shift from that line: the
    next SEARCH line with the same text, else the one at its position (not before the last
    match)."""
    if any(w.strip() != s.strip() for w, s in zip(window, search)):
        return None
    anchor, out = 0, []
    for position, line in enumerate(replace):
        if not line.strip():
            out.append("")
            continue
        same = next((k for k in range(anchor, len(search))
                     if search[k].strip() == line.strip()), None)
        if same is not None:
            anchor = same
        ref = _code_line_near(search, same if same is not None
                              else max(anchor, min(position, len(search) - 1)))
        file_indent = _indent(_bare(window[ref]))
        shift = len(_indent(line)) - len(_indent(search[ref]))
        kept = file_indent[:max(0, len(file_indent) + shift)]
        out.append((file_indent + " " * shift if shift >= 0 else kept) + line.lstrip())
    return out


NEAR_MIN_LINES = 4   # a shorter SEARCH with a wrong line could as well be another place
NEAR_SHARE = 5       # at most one line in five may be a copying slip


def _near(window, search, replace):
    """Copying slips: a few SEARCH lines differ from the file (the 1.5B drops an annotation,
    `char: str | None = src[pos]` -> `char = src[pos]`) but come back unchanged in REPLACE, so
    the model did not mean to change them: they are taken as the file has them, and the rest
    is matched as `_reindented` does."""
    if len(search) < NEAR_MIN_LINES:
        return None
    slips = [k for k, (w, s) in enumerate(zip(window, search)) if w.strip() != s.strip()]
    if not slips or len(slips) > max(1, len(search) // NEAR_SHARE):
        return None
    search, replace = list(search), list(replace)
    for k in slips:
        kept = [n for n, line in enumerate(replace) if line.strip() == search[k].strip()]
        if not kept or not search[k].strip() or not window[k].strip():
            return None  # a changed line, or a blank one missing: not a slip
        n = min(kept, key=lambda n: abs(n - k))
        file_line = _bare(window[k]).removesuffix("\r").strip()
        search[k] = _indent(search[k]) + file_line
        replace[n] = _indent(replace[n]) + file_line
    return _reindented(window, search, replace)


def _code_line_near(lines: list[str], index: int) -> int:
    """`index`, or the nearest non-blank line to it (the search has one)."""
    return min((k for k, line in enumerate(lines) if line.strip()), key=lambda k: abs(k - index))


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _miss_message(rel: str, lines: list[str], search: list[str],
                  closest: tuple[int, int] | None) -> str:
    shown = "\n".join(search[:12]) + ("\n..." if len(search) > 12 else "")
    message = [f"the SEARCH part of a block for {rel} was not found in the file:", shown]
    if closest is not None:
        start, end = closest
        message.append(f"The closest lines in {rel} are (line numbers on the left are not part "
                       f"of the file):")
        message += [f"{n + 1:>4} | {_bare(lines[n]).rstrip()}" for n in range(start, end)]
    message.append("Copy the lines to change exactly as they are in the file now (same "
                   "indentation, no line numbers) into the SEARCH part, and send the block "
                   "again.")
    return "\n".join(message)


def _closest(lines: list[str], search: list[str]) -> tuple[int, int] | None:
    if not lines or len(lines) > CLOSEST_LINES_FILE_LIMIT:
        return None
    wanted = "\n".join(line.strip() for line in search)
    size = min(len(search), len(lines))
    stripped = [line.strip() for line in lines]
    best, best_start = 0.0, 0
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(wanted)
    for start in range(len(lines) - size + 1):
        matcher.set_seq1("\n".join(stripped[start:start + size]))
        if matcher.real_quick_ratio() <= best or matcher.quick_ratio() <= best:
            continue
        ratio = matcher.ratio()
        if ratio > best:
            best, best_start = ratio, start
    if best < 0.3:
        return None
    return best_start, min(len(lines), best_start + size)
