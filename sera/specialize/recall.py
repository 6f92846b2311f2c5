"""Soft verification (METHODS.md section 1, step 6): line-level recall of one patch in another.

The changed lines of a patch are its lines starting with `+` or `-`, the sign kept, except file
headers (`---`/`+++`) and lines whose content after the sign is blank. recall(P1, P2) is the share
of P1's changed lines found in P2, each P2 line used at most once, exact string match.

Header lines are told apart from changes by position, not by prefix: a removed line whose content
starts with "--" reads "---..." inside a hunk and is a change. Hunk headers carry line counts, so
the parser knows when a hunk ends and a new file header may follow (also for plain `diff -u`
output without `diff --git` lines); hunks without counts end at the next file header.
"""

from __future__ import annotations

import re
from collections import Counter

_HUNK_HEADER = re.compile(r"^@@+ -(?:\d+)(?:,(\d+))? \+(?:\d+)(?:,(\d+))? @@")


def changed_lines(patch: str) -> list[str]:
    """The changed lines of `patch` in order, with their signs; headers and blank ones excluded."""
    # Split on "\n" only: str.splitlines would also split source lines at \f, \v or U+2028.
    lines = patch.split("\n")
    changed: list[str] = []
    old_left = new_left = 0  # lines of the current hunk still to come; both 0 = between hunks
    counted = True  # False inside a hunk whose header had no counts
    in_binary = False
    for number, line in enumerate(lines):
        if line.startswith("diff "):
            old_left = new_left = 0
            counted, in_binary = True, False
            continue
        if in_binary:
            continue
        if line.startswith("@@"):
            old_left, new_left, counted = _hunk_size(line)
            continue
        in_hunk = old_left > 0 or new_left > 0 or not counted
        if not in_hunk or _starts_file_header(lines, number, counted):
            in_binary = in_binary or line.startswith("GIT binary patch")
            if not line.startswith(("---", "+++")) and line.startswith(("+", "-")):
                _keep(line, changed)  # a fragment without hunk headers: take its changes as such
            if line.startswith("--- "):
                counted = True  # a new file section begins: leave the uncounted hunk
            continue
        if line.startswith("+"):
            new_left -= 1
        elif line.startswith("-"):
            old_left -= 1
        elif line.startswith("\\"):  # "\ No newline at end of file"
            continue
        else:  # context (" " or an empty line whose space an editor stripped)
            old_left, new_left = old_left - 1, new_left - 1
            continue
        _keep(line, changed)
    return changed


def changed_line_count(patch: str) -> int:
    return len(changed_lines(patch))


def line_recall(p1: str, p2: str) -> float | None:
    """Share of P1's changed lines that P2 also has (multiset match); None if P1 changes nothing."""
    wanted = changed_lines(p1)
    if not wanted:
        return None
    available = Counter(changed_lines(p2))
    matched = 0
    for line in wanted:
        if available[line] > 0:
            available[line] -= 1
            matched += 1
    return matched / len(wanted)


def _keep(line: str, changed: list[str]) -> None:
    if line[1:].strip():
        changed.append(line)


def _hunk_size(header: str) -> tuple[int, int, bool]:
    """(old lines, new lines, whether the header had counts) of a hunk header."""
    match = _HUNK_HEADER.match(header)
    if not match:
        return 0, 0, False
    old, new = match.group(1), match.group(2)
    return (1 if old is None else int(old)), (1 if new is None else int(new)), True


def _starts_file_header(lines: list[str], number: int, counted: bool) -> bool:
    """Inside a hunk without counts, a "--- " line followed by "+++ " and "@@" opens a new file."""
    if counted or not lines[number].startswith("--- "):
        return False
    following = lines[number + 1:number + 3]
    return (len(following) == 2 and following[0].startswith("+++ ")
            and following[1].startswith("@@"))
