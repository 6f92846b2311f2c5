"""The worked example every guided conversation opens with.

Told the edit format with a placeholder block ("path/to/file.py", "lines copied exactly from the
file"), the embedded 1.5B answered with that block itself in 15 of 16 first replies to real tasks
(tomli, humanize, tenacity); shown one worked exchange instead (a request in the format solve
sends and its answer, on a small file of another project), 7 of 16 first replies applied and none
answered with the example's block (some quoted its lines in blocks for their own files: named
too). The exchange follows the system prompt as a user and an assistant message, both marked
`"example": True`: the model sees them; training never learns from them (the loss mask skips
them), `Trajectory.steps` does not count them, and backends send only role and content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from sera.agent.prompts import render
from sera.agent.views import function_block, render_code_view, view_lines

EXAMPLE_PATH = "shapes/rect.py"
EXAMPLE_TASK = "area() of a rectangle returns the width squared"
EXAMPLE_FUNCTION = ("Rect.area", 9, 10)  # the function the example fixes: name, first and last line
EXAMPLE_SPAN = (6, 13)                   # the lines the numbered view shows around it


def example_messages(edit_format: str, edit_template: str) -> list[dict[str, Any]]:
    """The example request, rendered with the format's edit template, and its answer."""
    lines = view_lines(render("guided_example_source"))
    name, first, last = EXAMPLE_FUNCTION
    if edit_format == "functions":
        code = function_block(EXAMPLE_PATH, name, "\n".join(lines[first - 1:last]))
        answer = render("guided_example_answer_functions")
    else:
        code = render_code_view({EXAMPLE_PATH: lines}, {EXAMPLE_PATH: [(*EXAMPLE_SPAN, name)]},
                                budget=10_000)
        answer = render("guided_example_answer")
    return [{"role": "user", "content": render(edit_template, task=EXAMPLE_TASK, code=code),
             "example": True},
            {"role": "assistant", "content": answer, "example": True}]


def without_examples(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as it happened: the messages that are not the worked example."""
    return [m for m in messages if not m.get("example")]


def copies_the_example(root: Path, path: str | None, search: Sequence[str] = ()) -> bool:
    """An answer written for the example's file, which this repository does not have, or one
    whose SEARCH part quotes the example's code where the file has no such line (the 1.5B copied
    the example's first SEARCH line into blocks for its own files)."""
    if path == EXAMPLE_PATH and not (root / EXAMPLE_PATH).exists():
        return True
    quoted = {line.strip() for line in search} & _example_code_lines()
    if not quoted or path is None:
        return False
    try:
        text = (root / path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return not any(line in text for line in quoted)


def _example_code_lines() -> set[str]:
    """The example's lines long enough to tell a copy from a coincidence (which the caller rules
    out by looking for them in the file)."""
    return {line.strip() for line in render("guided_example_source").split("\n")
            if len(line.strip()) > 12}


COPIED = (f"your answer repeats the worked example ({EXAMPLE_PATH}), whose code is not in this "
          f"repository; answer the last request, quoting the code shown there")
