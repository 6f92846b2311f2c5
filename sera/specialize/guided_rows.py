"""History tasks as guided exchanges: training rows for a model that solves in the guided scaffold.

    trajectory = guided_history_trajectory(repo_root, task, settings)

The exchange is the one `sera solve` makes: the guided system prompt and edit request (the task
and the located functions, rendered by the scaffold's own views, so that training and solving
cannot drift apart), answered with the edit the commit made in the edit format
(`agent.edit_format`): SEARCH/REPLACE blocks, each changed region with just enough context to
occur once, or the whole functions the commit changed, as they are at the commit. The functions
the commit changed, and its changed lines outside any function (imports, constants), are always
shown, first when the localizer did not rank them: the answer must follow from the request. Where
the localizer's other picks crowd them out of the view's budget, the request shows them alone;
where even that cannot show every line the blocks edit, no row is made. The answer is read and
applied in a work copy of the parent by the scaffold's own parser and applier, and the row is
kept only when that reproduces the commit's changed lines exactly; None otherwise (and for
commits the format cannot express: a deleted file; in the functions format, a change outside any
function).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sera.agent.checks import language_name
from sera.agent.guided import LOCATIONS, GuidedAgent, _location_meta, opening
from sera.agent.localize import Location, candidate_view, changed_locations
from sera.agent.prompts import render
from sera.agent.rollout import choose_scaffold
from sera.agent.searchreplace import Edit, EditError, apply_edits
from sera.agent.sourcecode import functions_in_source
from sera.agent.tools import ToolEnvironment
from sera.agent.trajectory import Trajectory
from sera.agent.views import shown_lines
from sera.agent.workcopy import WorkCopy
from sera.config import Settings
from sera.errors import SeraError
from sera.specialize.mining import (HistoryTask, _edit_blocks, _file_edits, _FileEdit, _lines,
                                    _same_changes, _unique_span)

log = logging.getLogger(__name__)
REASON = "changed by the commit"


def guided_history_trajectory(repo_root: Path, task: HistoryTask,
                              settings: Settings) -> Trajectory | None:
    """The task's guided exchange, answered by its commit; None when it cannot be made exact."""
    edits = _file_edits(Path(repo_root), task)
    if not edits or any(edit.new is None for edit in edits):
        return None  # a file the commit deletes: no edit format writes that
    with WorkCopy.create(repo_root, task.parent) as workcopy:
        agent = GuidedAgent(None, ToolEnvironment(workcopy, settings.agent), Trajectory(),
                            settings.agent, settings.model)
        changed = _changed_locations(edits)
        if agent.format == "functions":
            blocks = None
            answer = None if any(not loc.name for loc in changed) else \
                _function_answer(edits, changed)
        else:
            blocks = _block_edits(edits)
            answer = _render_blocks(blocks) if blocks is not None else None
        if answer is None:
            return None
        shown = _shown(workcopy.path, task.message, changed)
        messages = _exchange(agent, task.message, shown, answer)
        if blocks is not None and not _in_view(blocks, messages[-2]["content"]):
            # the localizer's other picks crowd the changed lines out of the view's budget
            shown = changed
            messages = _exchange(agent, task.message, shown, answer)
            if not _in_view(blocks, messages[-2]["content"]):
                log.info("history commit %s: its answer edits lines that no request within "
                         "the code budget shows", task.commit[:12])
                return None
        if not _reproduces(agent, answer, shown, task):
            log.warning("history commit %s: its guided answer does not reproduce it",
                        task.commit[:12])
            return None
    meta = {"source": "history", "scaffold": "guided", "edit_format": agent.format,
            "task": task.message, "commit": task.commit, "parent": task.parent,
            "date": task.date, "files": task.files, "patch": task.patch, "status": "submitted",
            "exit_message": "submitted", "recall": 1.0,
            "locations": [_location_meta(loc) for loc in shown]}
    return Trajectory(messages=messages, meta=meta)


def _exchange(agent: GuidedAgent, task: str, shown: list[Location], answer: str) -> list[dict]:
    view = agent.function_view(shown) if agent.format == "functions" else agent.code_view(shown)
    return [*opening(agent.format),
            {"role": "user", "content": render(agent.prompts["edit"], task=task, code=view)},
            {"role": "assistant", "content": answer}]


def _shown(root: Path, task: str, changed: list[Location]) -> list[Location]:
    """The localizer's view for the first candidate, with the changed functions first where it
    missed them."""
    ranked = candidate_view(root, task, 0, LOCATIONS).locations
    names = {(loc.path, loc.name) for loc in ranked}
    missing = [loc for loc in changed if (loc.path, loc.name) not in names]
    return (missing + ranked)[:max(LOCATIONS, len(missing))]


# --- the functions the commit changed ---------------------------------------------------------

def commit_locations(repo_root: Path, task: HistoryTask) -> list[Location]:
    """The functions the commit changes, and its changed lines outside any function, at its
    parent (files it adds have none): what its guided row's answer edits, and what `sera bench`
    shows in its oracle view."""
    return _changed_locations(_file_edits(Path(repo_root), task) or [])


def _changed_locations(edits: list[_FileEdit]) -> list[Location]:
    """Where the commit changes the parent: its functions (innermost definitions), and the
    changed lines outside any function."""
    found: list[Location] = []
    for edit in edits:
        if edit.old is not None:
            ranges = [(i1 + 1, max(i2, i1 + 1)) for i1, i2, _, _ in
                      _edit_blocks(_lines(edit.old), _lines(edit.new or ""))]
            found += changed_locations(edit.path, edit.old, ranges, REASON)
    return found


# --- answers ----------------------------------------------------------------------------------

def _block_edits(edits: list[_FileEdit]) -> list[Edit] | None:
    """SEARCH/REPLACE blocks that make the commit's changes, top to bottom per file; None for
    CRLF files (the answer would not be typed that way)."""
    blocks = []
    for edit in edits:
        if edit.old is None:
            blocks.append(Edit(edit.path, (), tuple(_strip(_lines(edit.new or "")))))
            continue
        current, shift = _lines(edit.old), 0
        new_lines = _lines(edit.new or "")
        for i1, i2, j1, j2 in _edit_blocks(current[:], new_lines):
            start, end = i1 + shift, i2 + shift
            first, last = _unique_span(current, start, end)
            search = current[first:last]
            replace = current[first:start] + new_lines[j1:j2] + current[end:last]
            blocks.append(Edit(edit.path, tuple(_strip(search)), tuple(_strip(replace))))
            current[start:end] = new_lines[j1:j2]
            shift += (j2 - j1) - (i2 - i1)
    if any("\r" in line for block in blocks for line in block.search + block.replace):
        return None
    return blocks


def _render_blocks(blocks: list[Edit]) -> str:
    return "\n\n".join(block.render(language_name(block.path)) for block in blocks)


def _in_view(blocks: list[Edit], request: str) -> bool:
    """Whether every block's SEARCH lines stand, in order and together, in one span of the
    request's code view, under the block's file: the answer must follow from the request."""
    shown = shown_lines(request)
    return all(any(_contains(span, list(block.search)) for span in shown.get(block.path, []))
               for block in blocks if block.search)


def _contains(lines: list[str], part: list[str]) -> bool:
    return any(lines[i:i + len(part)] == part for i in range(len(lines) - len(part) + 1))


def _function_answer(edits: list[_FileEdit], changed: list[Location]) -> str | None:
    """The changed functions as they are at the commit, each in a fence under its path."""
    by_path = {edit.path: edit for edit in edits}
    parts = []
    for loc in changed:
        new = by_path[loc.path].new or ""
        lines = new.split("\n")
        after = [f for f in functions_in_source(new.encode("utf-8"), loc.path)
                 if f.qualified_name == loc.name]
        if not after:
            return None  # the commit removed or renamed it
        function = min(after, key=lambda f: abs(f.start_line - loc.start_line))
        first = function.start_line
        while first > 1 and lines[first - 2].lstrip().startswith("@"):
            first -= 1
        body = "\n".join(lines[first - 1:function.end_line])
        parts.append(f"{loc.path}\n```{language_name(loc.path)}\n{body}\n```")
    return "\n\n".join(parts) if parts else None


def _strip(lines: list[str]) -> list[str]:
    return [line[:-1] if line.endswith("\n") else line for line in lines]


def _reproduces(agent: GuidedAgent, answer: str, shown: list[Location], task: HistoryTask) -> bool:
    """Whether the scaffold's own reading of the answer, applied to the parent, makes the
    commit's changes."""
    agent.shown = list(shown)
    try:
        edits = agent.read_edits(answer, task.files[0] if len(task.files) == 1 else None)
        apply_edits(agent.root, edits, None)
    except (EditError, SeraError):
        return False
    return _same_changes(agent.workcopy.diff(), task.patch)


def writes_guided_rows(settings: Settings) -> bool:
    """Whether the student solves in the guided scaffold, so its rows must be guided exchanges."""
    return choose_scaffold(settings.agent.scaffold, settings.model.spec) == "guided"
