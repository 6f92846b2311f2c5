"""A line-level three-way merge for undo: the user's edits since an apply, and the apply's
reversal, both taken against the file as the apply left it.

Unlike `git merge-file`, edits that only touch (a line appended right after a patched line) do not
conflict: their order in the file is known. Two edits conflict when they change an overlapping
range of the base, or insert different lines at the same place. Lines keep their endings (CRLF
files stay CRLF).
"""

from __future__ import annotations

import difflib

Edit = tuple[int, int, tuple[bytes, ...]]  # base lines [start, end) become these lines


def merge_lines(base: bytes, ours: bytes, theirs: bytes) -> bytes | None:
    """`base` with the edits of both `ours` and `theirs` applied; None when they conflict."""
    lines = base.splitlines(keepends=True)
    edits = sorted(set(_edits(lines, ours) + _edits(lines, theirs)), key=lambda e: (e[0], e[1]))
    for first, second in zip(edits, edits[1:]):
        if _conflict(first, second):
            return None
    out: list[bytes] = []
    position = 0
    for start, end, replacement in edits:
        out += lines[position:start]
        out += replacement
        position = end
    out += lines[position:]
    return b"".join(out)


def _edits(base: list[bytes], text: bytes) -> list[Edit]:
    other = text.splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(None, base, other, autojunk=False)
    return [(i1, i2, tuple(other[j1:j2])) for tag, i1, i2, j1, j2 in matcher.get_opcodes()
            if tag != "equal"]


def _conflict(first: Edit, second: Edit) -> bool:
    """`first` starts no later than `second` (and ends no later at the same start)."""
    both_insert_here = first[0] == first[1] == second[0] == second[1]
    return second[0] < first[1] or both_insert_here
