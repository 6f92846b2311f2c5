"""The code views of the guided scaffold's edit request, for solve and for training alike.

`render_code_view`: numbered lines around the located functions (the SEARCH/REPLACE format);
`function_block`: one function whole, without numbers (the whole-function format). The worked
example (example.py), the policy stage and the history rows render through these, so what a
model is trained on is what solve shows it.
"""

from __future__ import annotations

from sera.agent.checks import language_name


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
