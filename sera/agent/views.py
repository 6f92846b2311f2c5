"""The code views of the guided scaffold's edit request, for solve and for training alike.

`located_view`: numbered lines around the located functions (the SEARCH/REPLACE format), built
on `render_code_view`; `function_block`: one function whole, without numbers (the whole-function
format). Solve (guided.py), the worked example (example.py), the policy stage and the history
rows render through these, so what a model is trained on is what solve shows it.
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence

from sera.agent.checks import language_name
from sera.agent.searchreplace import NUMBERED_LINE

CONTEXT_LINES = 3  # lines shown before and after each located function


class Located(Protocol):
    """A place to show (localize.Location has these)."""

    path: str
    name: str
    start_line: int
    end_line: int


def located_view(files: dict[str, list[str]], locations: Sequence[Located], budget: int) -> str:
    """THE view of an edit request: each location's lines (files[path], from view_lines) with
    CONTEXT_LINES around, merged where they touch, in file order per file and files in the order
    the locations name them; clipped to `budget` characters ('' when nothing fits)."""
    spans = {}
    for rel in dict.fromkeys(loc.path for loc in locations):
        if rel in files:
            spans[rel] = merge_spans([(loc.start_line, loc.end_line, loc.name)
                                      for loc in locations if loc.path == rel], len(files[rel]))
    return render_code_view(files, spans, budget)


def merge_spans(spans: list[tuple[int, int, str]], line_count: int) -> list[tuple[int, int, str]]:
    """Ranges widened by CONTEXT_LINES, clipped to the file, overlapping ones merged (names
    joined), in file order."""
    widened = sorted((max(1, s - CONTEXT_LINES), min(line_count, e + CONTEXT_LINES), name)
                     for s, e, name in spans if s <= line_count)
    merged: list[tuple[int, int, str]] = []
    for start, end, name in widened:
        if merged and start <= merged[-1][1] + 1:
            last = merged[-1]
            names = last[2] if not name or name in last[2].split(", ") else \
                ", ".join(filter(None, (last[2], name)))
            merged[-1] = (last[0], max(last[1], end), names)
        else:
            merged.append((start, end, name))
    return merged


def render_code_view(files: dict[str, list[str]], spans: dict[str, list[tuple[int, int, str]]],
                     budget: int) -> str:
    """THE numbered code view of an edit request, for solve and for training (the policy stage):
    per file, each span (first line, last line, the names in it) as a header, "path (lines a-b:
    names)", and a fence of "  12 | code" lines; clipped to `budget` characters (a span cut short
    says how many lines it leaves out; '' when nothing fits)."""
    parts: list[str] = []
    for rel, file_spans in spans.items():
        lines = files[rel]
        for start, end, names in file_spans:
            header = f"{rel} (lines {start}-{end}{': ' + names if names else ''})"
            body = [f"{n:>4} | {lines[n - 1]}" for n in range(start, end + 1)]
            block = _clipped_block(header, language_name(rel), body,
                                   budget - sum(len(p) + 2 for p in parts))
            if block is None:
                break
            parts.append(block)
    return "\n\n".join(parts)


SPAN_HEADER = re.compile(r"^(\S+) \(lines \d+-\d+")  # render_code_view's "path (lines a-b...)"


def shown_lines(view: str) -> dict[str, list[list[str]]]:
    """What a code view (render_code_view) shows: per path, the code lines of each span as
    rendered, without their numbers; a span clipped to the budget holds only its shown lines."""
    shown: dict[str, list[list[str]]] = {}
    span = None
    for line in view.split("\n"):
        header = SPAN_HEADER.match(line)
        if header:
            span = []
            shown.setdefault(header.group(1), []).append(span)
        elif span is not None and (numbered := NUMBERED_LINE.match(line)):
            span.append(numbered.group(2))
    return shown


def _clipped_block(header: str, language: str, body: list[str], room: int) -> str | None:
    """The header and the fenced lines, as many as fit `room` characters (None: not one)."""
    fence = "```" + language
    kept: list[str] = []
    used = len(header) + len(fence) + 60
    for line in body:
        if used + len(line) + 1 > room:
            break
        kept.append(line)
        used += len(line) + 1
    if body and not kept:
        return None
    if len(kept) < len(body):
        kept.append(f"... ({len(body) - len(kept)} more lines not shown)")
    return "\n".join([header, fence, *kept, "```"])


def view_lines(text: str) -> list[str]:
    """A file's lines as the code views number them (no empty last line after a final newline)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def function_block(path: str, name: str, body: str) -> str:
    """One function of the whole-function view: its path and name, then its code in a fence."""
    return f"{path} (function {name})\n```{language_name(path)}\n{body}\n```"
