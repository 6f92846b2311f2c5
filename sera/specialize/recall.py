"""Soft verification (METHODS.md section 1, step 6): line-level recall of one patch in another.

The changed lines of a patch are its lines starting with `+` or `-`, the sign kept, except file
headers (`---`/`+++`) and lines whose content after the sign is blank. recall(P1, P2) is the share
of P1's changed lines found in P2, each P2 line used at most once, exact string match.

The changed lines are read by `sera.diff.changed_lines`, the one diff parser.
"""

from __future__ import annotations

from collections import Counter

from sera.diff import changed_lines


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
