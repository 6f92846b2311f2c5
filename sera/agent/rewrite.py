"""Whole-function answers: the model writes back each function it changes, the harness swaps it in.

The guided scaffold's second edit format (`agent.edit_format = functions`). Small models copy a
whole function back, changed, far more reliably than they quote the exact lines a SEARCH part
needs. An answer looks like

    calc.py
    ```python
    def add(a, b):
        return a + b
    ```

`function_edits` reads every fenced block (but SEARCH/REPLACE blocks, which `parse_edits` reads),
finds the functions defined at its top level with
tree-sitter (functions_in_source, the parser that located them), matches each by name to a
function the model was shown (else to the one function of that name in a shown file), and turns
it into an `Edit` whose SEARCH is the function's current lines (with its decorators when the
answer writes decorators) and whose REPLACE is the answer re-indented to the file's indentation:
`apply_edits` then
applies them all or none, as it does for SEARCH/REPLACE blocks. Line numbers copied from a
numbered view are removed. A function written back unchanged is no edit, and a fence that is never
closed (a reply cut at the length limit) is not read: its function may be cut too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from sera.agent.searchreplace import (FENCE, LINE_NUMBER, REPLACE_MARK, SEARCH_MARK, Edit,
                                      EditError, _clean_path)
from sera.agent.example import COPIED, copies_the_example
from sera.agent.sourcecode import functions_in_source

QUALIFIED_DEF = re.compile(r"^(\s*(?:async\s+)?def\s+)(?:[A-Za-z_]\w*\.)+(?=\w+\s*\()")


@dataclass
class _Block:
    path: str | None  # the path written above the fence (or in its line), if any
    lines: list[str]


def function_edits(root: Path, reply: str, shown: Sequence[Any]) -> list[Edit]:
    """Edits for the functions an answer writes back; [] when it has no function in fenced code.
    EditError (written for the model) for a function that matches nothing shown, a copied
    example, or functions written back unchanged."""
    edits: list[Edit] = []
    written = []
    for block in _blocks(reply):
        if copies_the_example(root, block.path):
            raise EditError(COPIED)
        for name, body in _functions(block, shown):
            written.append(name)
            path, start, end = _target(root, name, block.path, shown)
            edit = _edit(root, path, start, end, body)
            if edit is not None and all(e.path != edit.path or e.search != edit.search
                                        for e in edits):
                edits.append(edit)
    if written and not edits:
        raise EditError(f"the function you wrote back ({', '.join(dict.fromkeys(written))}) is "
                        f"unchanged: change its code so that it resolves the task")
    return edits


def _blocks(reply: str) -> list[_Block]:
    lines = reply.replace("\r\n", "\n").split("\n")
    blocks, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if FENCE.match(lines[j])), None)
        if end is None:
            break  # a fence never closed: the reply was cut, and so may be the function in it
        inner = [line for line in lines[index + 1:end] if line.strip()]
        if len(inner) == 1 and FENCE.match(lines[end]).group(2).strip() and _clean_path(inner[0]):
            index = end  # "```python / path / ```python / code / ```": the path had a fence of its own
            continue
        body = [LINE_NUMBER.sub("", line, count=1) if LINE_NUMBER.match(line) else line
                for line in lines[index + 1:end]]
        if not any(SEARCH_MARK.match(line) or REPLACE_MARK.match(line) for line in body):
            blocks.append(_Block(_path_of(lines, index, fence.group(2)), body))  # else: a block
        index = end + 1
    return blocks


def _path_of(lines: list[str], fence_index: int, fence_rest: str) -> str | None:
    inside = next((w for w in fence_rest.split() if _clean_path(w)), None)
    if inside:
        return _clean_path(inside)
    above = next((lines[j] for j in range(fence_index - 1, max(-1, fence_index - 3), -1)
                  if lines[j].strip()), "")
    return _clean_path(above)


def _functions(block: _Block, shown: Sequence[Any]) -> list[tuple[str, list[str]]]:
    """(simple name, lines from its decorators to its end) of each top-level function in the
    block, parsed as the language of its path (else of the first shown file)."""
    language_path = block.path or (shown[0].path if shown else "answer.py")
    # "def Class.method(" copies the view's header into the definition: read it as "def method("
    block.lines = [QUALIFIED_DEF.sub(r"\1", line, count=1) for line in block.lines]
    text = "\n".join(block.lines)
    found = functions_in_source(text.encode("utf-8"), language_path)
    outer = [f for f in found if not any(o is not f and o.start_line <= f.start_line
                                         and f.end_line <= o.end_line for o in found)]
    result = []
    for function in outer:
        start = function.start_line
        while start > 1 and block.lines[start - 2].lstrip().startswith("@"):
            start -= 1  # decorators sit outside the definition node
        result.append((function.name, block.lines[start - 1:function.end_line]))
    return result


def _target(root: Path, name: str, path: str | None,
            shown: Sequence[Any]) -> tuple[str, int, int]:
    """(path, first line, last line), as the file is now, of the function the answer rewrites:
    a shown function of that name, else the one function of that name in a shown file. Lines are
    looked up again in the current file: an earlier edit (a repair round) may have moved them."""
    if path is not None and all(loc.path != path for loc in shown) and \
            not (root / path).is_file():
        path = None  # a path that names no file (the example's, or a made-up one): go by name
    matches = [loc for loc in shown if loc.name.split(".")[-1] == name
               and (path is None or loc.path == path)]
    files = [matches[0].path] if matches else \
        [path] if path else list(dict.fromkeys(loc.path for loc in shown))
    for rel in files:
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            continue  # never read outside the work copy
        try:
            data = (root / rel).read_bytes()
        except OSError:
            continue
        named = [f for f in functions_in_source(data, rel) if f.name == name]
        if matches:
            wanted = [f for f in named if f.qualified_name == matches[0].name] or named
            if wanted:
                best = min(wanted, key=lambda f: abs(f.start_line - matches[0].start_line))
                return rel, best.start_line, best.end_line
        elif len(named) == 1:
            return rel, named[0].start_line, named[0].end_line
    shown_names = ", ".join(dict.fromkeys(loc.name for loc in shown)) or "none"
    raise EditError(f"`{name}` is not one of the functions shown ({shown_names}); write out "
                    f"the whole function you change, with its name unchanged")


def _edit(root: Path, path: str, start: int, end: int, body: list[str]) -> Edit | None:
    """The edit that puts `body` in place of lines start..end, indented as the file's definition
    is; the file's decorators are replaced only when `body` writes decorators of its own. None
    when nothing changes."""
    try:
        lines = (root / path).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise EditError(f"cannot read {path}: {error}") from None
    first = start
    while body and body[0].lstrip().startswith("@") and first > 1 and \
            lines[first - 2].lstrip().startswith("@"):
        first -= 1
    search = [line.rstrip("\r") for line in lines[first - 1:end]]
    replace = _reindent(body, _indent(search[start - first]) if len(search) > start - first else "")
    while replace and not replace[-1].strip():
        replace.pop()
    if [line.rstrip() for line in replace] == [line.rstrip() for line in search]:
        return None
    return Edit(path, tuple(search), tuple(replace))


def _reindent(body: list[str], indent: str) -> list[str]:
    definition = next((line for line in body if re.match(r"\s*(async\s+)?(def|fn|func|function)\b",
                                                         line)), body[0] if body else "")
    own = _indent(definition)
    out = []
    for line in body:
        if not line.strip():
            out.append("")
        elif line.startswith(own):
            out.append(indent + line[len(own):])
        else:
            out.append(indent + line.lstrip())
    return out


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]
