"""The worked example every guided conversation opens with.

Told the edit format with a placeholder block ("path/to/file.py", "lines copied exactly from the
file"), the embedded 1.5B answered with that block itself in 15 of 16 first replies to real tasks
(tomli, humanize, tenacity); shown one worked exchange instead (a request in the format solve
sends and its answer, on a small file of another project), 6 of 12 first replies applied and none
copied the example. The exchange follows the system prompt as a user and an assistant message, both
marked `"example": True`: the model sees them; training never learns from them (the loss mask
skips them), `Trajectory.steps` does not count them, and backends send only role and content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from sera.agent.prompts import render
from sera.agent.views import function_block, render_code_view, view_lines

EXAMPLE_PATH = "shapes/rect.py"
EXAMPLE_TASK = "area() of a rectangle returns the width squared"
EXAMPLE_FUNCTION = ("Rect.area", 9, 11)  # the function the example fixes: name, first and last line
EXAMPLE_SPAN = (6, 14)                   # the lines the numbered view shows around it


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


def copies_the_example(root: Path, path: str | None) -> bool:
    """An answer written for the example's file, which this repository does not have."""
    return path == EXAMPLE_PATH and not (root / EXAMPLE_PATH).exists()


COPIED = (f"your answer repeats the worked example ({EXAMPLE_PATH}), which is not a file of this "
          f"repository; answer the last request, for the code shown there")
