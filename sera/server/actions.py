"""Code actions: tasks the editor already has words for. A diagnostic under the cursor becomes
"sera: fix ..."; a TODO or FIXME comment on the selected lines becomes "sera: do ...". Each runs
the sera.solve command with a task that says where the problem is. After a solve, each distinct
ranked candidate that changes the lines under the cursor is an action too, "sera: apply candidate
N (rank R, V votes)", which runs sera.apply (the edit then comes through workspace/applyEdit,
recorded for sera.undo)."""

from __future__ import annotations

import re
from pathlib import Path

from lsprotocol import types

from sera.diff import changed_ranges

TODO = re.compile(r"\b(?:TODO|FIXME)\b[:\s-]*(.+)$")
TITLE_CHARS = 60


def code_actions(rel: str, lines: list[str], params: types.CodeActionParams) -> list[types.CodeAction]:
    """The sera actions for a range of a document (`lines`: its text, `rel`: its path)."""
    uri = params.text_document.uri
    found = [_fix_action(rel, lines, uri, d) for d in params.context.diagnostics]
    start, end = params.range.start.line, params.range.end.line
    for number in range(start, min(end, len(lines) - 1) + 1):
        todo = TODO.search(lines[number])
        if todo:
            found.append(_todo_action(rel, number, todo.group(1).strip(), uri))
    return found


def candidate_actions(last_solve, rel: str, params: types.CodeActionParams) -> list:
    """The last solve's ranked candidates that change `rel` at the requested lines."""
    if last_solve is None:
        return []
    _, run_id, candidates = last_solve
    start, end = params.range.start.line, params.range.end.line
    found = []
    for c in sorted(candidates, key=lambda c: c["rank"]):
        if any(first <= end and start <= last
               for first, last in _editor_ranges(c["patch"], rel)):
            title = (f"sera: apply candidate {c['index']} (rank {c['rank']}, {c['votes']} "
                     f"vote{'s' if c['votes'] != 1 else ''})")
            found.append(types.CodeAction(title=title, kind=types.CodeActionKind.QuickFix,
                                          command=types.Command(title=title, command="sera.apply",
                                                                arguments=[{
                                                                    "target": f"{run_id}:{c['index']}",
                                                                    "uri": params.text_document.uri}])))
    return found


def _fix_action(rel: str, lines: list[str], uri: str, diagnostic: types.Diagnostic) -> types.CodeAction:
    line = diagnostic.range.start.line
    by = f" (reported by {diagnostic.source})" if diagnostic.source else ""
    code = lines[line].strip() if line < len(lines) else ""
    task = (f"Fix this problem in {rel} at line {line + 1}{by}: {diagnostic.message}"
            + (f"\nThe line: {code}" if code else ""))
    title = f"sera: fix \u201c{_short(diagnostic.message)}\u201d"
    return types.CodeAction(title=title, kind=types.CodeActionKind.QuickFix,
                            diagnostics=[diagnostic], command=_solve(title, task, uri))


def _todo_action(rel: str, line: int, what: str, uri: str) -> types.CodeAction:
    title = f"sera: do \u201c{_short(what)}\u201d"
    task = f"In {rel}, line {line + 1} has a to-do comment; do what it says: {what}"
    return types.CodeAction(title=title, kind=types.CodeActionKind.RefactorRewrite,
                            command=_solve(title, task, uri))


def _solve(title: str, task: str, uri: str) -> types.Command:
    return types.Command(title=title, command="sera.solve", arguments=[{"task": task, "uri": uri}])


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TITLE_CHARS else text[:TITLE_CHARS - 1] + "\u2026"


def relative(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _editor_ranges(patch: str, rel: str) -> list[tuple[int, int]]:
    """The 0-based line ranges the patch's hunks cover in `rel` as it reads before the patch."""
    return [(first - 1, last - 1) for first, last in changed_ranges(patch).get(rel, [])]
