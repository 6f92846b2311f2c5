"""The repository's own history as a teacher-free data source.

Small commits become tasks: the commit message is the issue, the commit's diff of non-test files is
the reference patch. They serve twice: as extra training rows (`reconstruct_trajectory` replays
the commit through the real tools, as a good agent would have made it) and, split by date, as
held-out tasks for evaluation (`split_by_date`).

Only commits whose non-test part the tools can reproduce exactly are mined: text files that are
added, modified or deleted, no renames, copies, mode changes, symlinks or submodules.
"""

from __future__ import annotations

import difflib
import logging
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sera.agent.loop import system_prompt
from sera.agent.parse import format_observation, format_tool_call, parse_reply
from sera.agent.prompts import render
from sera.agent.protocol import FormatError, Submitted, ToolCall, ToolError
from sera.agent.sourcecode import is_test_path
from sera.agent.tools import ToolEnvironment
from sera.agent.trajectory import Trajectory
from sera.agent.workcopy import WorkCopy, git, git_bytes
from sera.config import AgentConfig, SpecializeConfig
from sera.diff import changed_lines, file_sections, unquote
from sera.errors import RepositoryError, SeraError

log = logging.getLogger(__name__)

MAX_CHANGED_LINES = SpecializeConfig.max_patch_lines  # the setting the history stage passes
# numstat counts blank lines too, which changed_lines ignores: a commit is only diffed when
# its numstat total could still shrink to the limit. Blank lines rarely make up two thirds of one.
PRESELECT_SLACK = 3
MIN_MESSAGE_CHARS = 10
TRIVIAL_MESSAGES = frozenset({
    "wip", "fix", "fixes", "fixed", "bugfix", "update", "updates", "updated", "tmp", "temp", "typo",
    "cleanup", "clean up", "minor", "changes", "commit", "save", "stuff", "misc", "test", "tests",
    "refactor", "more", "again", "oops", "work in progress"})
TRIVIAL_PREFIXES = ("fixup!", "squash!", "amend!", "wip:", "wip ", "[wip]", 'revert "', "merge ")
REGULAR_MODES = ("100644", "100755")
UNREPLAYABLE_HEADERS = ("old mode ", "new mode ", "rename from ", "copy from ", "GIT binary patch",
                        "Binary files ")
# Chores are no tasks (neither to train on nor to measure with): releases, version bumps,
# changelogs and release notes, dependency updates. Told by the subject, by the files the commit
# touches, or by lines that only change a version.
CHORE_SUBJECT = re.compile(
    r"^(\[?pre-commit(\.ci)?\]?|(update|bump|upgrade) pre-commit|release|releasing|prepare(d)? (for )?(the )?release|"
    r"bump(ed)?|version bump|update (the )?(version|changelog|dependenc|requirements|deps|lock)|"
    r"(update|upgrade|pin) .*\b(to|from) v?\d+(\.\d+)+|v?\d+(\.\d+)+( release)?$|"
    r"(build|chore)\(deps(-dev)?\)|(chore|build|release)(\(.*\))?: )", re.IGNORECASE)
CHORE_NAMES = re.compile(
    r"(^|/)(changelog|changes|history|news|release[-_ ]?notes|releasing|authors|contributors)"
    r"([-_.][^/]*)?$|(^|/)(requirements[^/]*\.(txt|in)|[^/]*\.lock|package-lock\.json|"
    r"go\.sum|version(\.txt|\.py)?|_version\.py|\.pre-commit-config\.yaml)$|"
    r"(^|/)(releasenotes|changelog\.d|changes|news|requirements)/|^\.github/", re.IGNORECASE)
VERSION_LINE = re.compile(r"""^[+-]\s*["']?(__version__|version|VERSION)["']?\s*[:=]""")
# Trailers (git interpret-trailers) are metadata, not the task: co-authors, sign-offs, change ids.
# Their names and addresses would also be words the localizer matches against the code.
TRAILER = re.compile(r"^([A-Za-z0-9]+(-[A-Za-z0-9]+)+|Cc|Link|Bug|Closes|Fixes|Refs|Resolves):\s")
SEPARATOR = re.compile(r"^-{3,}\s*$")  # what a squash merge leaves between the commits' messages
VIEW_CONTEXT = 4  # lines viewed around each edited block
MERGE_GAP = 2  # edited blocks at most this many unchanged lines apart become one edit
DIFF_BATCH = 256  # candidate commits diffed per git call
DIFF_OPTIONS = ["--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/",
                "--dst-prefix=b/"]
_RECORD, _FIELD = "\x1e", "\x1f"


@dataclass
class HistoryTask:
    commit: str
    parent: str
    date: int  # committer time, unix seconds
    message: str  # the full commit message: the task text
    patch: str  # `git diff --binary parent commit` of the non-test files: the reference patch
    files: list[str] = field(default_factory=list)  # the non-test files the patch touches

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HistoryTask":
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


# --- mining ----------------------------------------------------------------------------------

@dataclass
class _FileChange:
    status: str  # A, M, D, R, C, T, ... (git's raw status letter)
    old_mode: str
    new_mode: str
    paths: list[str]  # one path, or old and new path of a rename or copy
    added: int | None  # None: binary
    deleted: int | None


@dataclass
class _LogEntry:
    commit: str
    parents: list[str]
    date: int
    message: str
    changes: list[_FileChange]


def mine_history(repo_root: Path, max_changed_lines: int = MAX_CHANGED_LINES,
                 limit: int | None = None, max_commits: int | None = None) -> list[HistoryTask]:
    """Tasks from the first-parent history of HEAD, newest first.

    A commit qualifies when it has one parent, a real message, and its non-test part is 1 to
    `max_changed_lines` changed lines of replayable text changes. `limit` stops after that many
    tasks, `max_commits` after walking that many commits.
    """
    repo_root = Path(repo_root)
    candidates = [(entry, sources) for entry in _log_entries(repo_root, max_commits)
                  if (sources := _preselect(entry, max_changed_lines))]
    tasks: list[HistoryTask] = []
    for start in range(0, len(candidates), DIFF_BATCH):
        batch = candidates[start:start + DIFF_BATCH]
        patches = _commit_patches(repo_root, [entry for entry, _ in batch])
        for (entry, sources), full_patch in zip(batch, patches):
            patch = _source_patch(repo_root, entry, sources, full_patch)
            task = _task_from(entry, sources, patch, max_changed_lines)
            if task is not None:
                tasks.append(task)
                if limit is not None and len(tasks) >= limit:
                    return tasks
    return tasks


def split_by_date(tasks: list[HistoryTask], heldout_fraction: float = 0.2,
                  min_heldout: int = 1) -> tuple[list[HistoryTask], list[HistoryTask]]:
    """(train, held out), both oldest first: the newest commits are held out for evaluation, so
    the model is measured on changes made after everything it trained on."""
    ordered = sorted(tasks, key=lambda task: (task.date, task.commit))
    heldout = min(len(ordered), max(min_heldout, round(len(ordered) * heldout_fraction)))
    cut = len(ordered) - heldout
    return ordered[:cut], ordered[cut:]


def _log_entries(repo_root: Path, max_commits: int | None) -> list[_LogEntry]:
    try:
        git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], repo_root)
    except RepositoryError:
        return []  # no commits: no history to learn from
    limit = [f"--max-count={max_commits}"] if max_commits is not None else []
    # One walk for the whole history; -M so that renames show up (and are skipped) as such.
    output = git(["-c", "core.quotePath=false", "log", "--first-parent", "-M", "--raw",
                  "--numstat", "--no-color", "--no-textconv", *limit,
                  f"--format={_RECORD}%H %P{_FIELD}%ct{_FIELD}%B{_FIELD}", "HEAD", "--"],
                 repo_root)
    return [_parse_record(record) for record in output.split(_RECORD)[1:]]


def _parse_record(record: str) -> _LogEntry:
    ids, date, rest = record.split(_FIELD, 2)
    message, _, diff_lines = rest.rpartition(_FIELD)
    commit, *parents = ids.split()
    raw, numstat = [], []
    for line in diff_lines.split("\n"):
        if line.startswith(":"):
            raw.append(line)
        elif line.count("\t") >= 2:
            numstat.append(line)
    # --raw and --numstat list the same files in the same order.
    changes = [_file_change(r, n) for r, n in zip(raw, numstat)]
    if len(raw) != len(numstat):
        changes = [_FileChange("?", "", "", [], None, None)]  # unexpected output: never a task
    return _LogEntry(commit, parents, int(date or 0), task_text(message), changes)


def task_text(message: str) -> str:
    """A commit message as a task: without its closing paragraphs of trailers (Co-authored-by,
    Signed-off-by, Change-Id, ...) and the separator lines a squash merge leaves above them."""
    paragraphs = re.split(r"\n\s*\n", message.strip())
    while len(paragraphs) > 1:
        lines = [line for line in paragraphs[-1].splitlines() if not SEPARATOR.match(line)]
        if lines and not all(TRAILER.match(line) or line[:1].isspace() for line in lines):
            paragraphs[-1] = "\n".join(lines)
            break
        paragraphs.pop()  # trailers only (continuation lines are indented), or separators only
    return "\n\n".join(paragraphs).strip()


def _file_change(raw: str, numstat: str) -> _FileChange:
    info, *paths = raw.split("\t")
    old_mode, new_mode, _, _, status = info[1:].split()
    added, deleted, _ = numstat.split("\t", 2)
    return _FileChange(status[:1], old_mode, new_mode, [unquote(p) for p in paths],
                       None if added == "-" else int(added),
                       None if deleted == "-" else int(deleted))


def _preselect(entry: _LogEntry, max_changed_lines: int) -> list[int]:
    """Which of a commit's file changes make its task (the non-test ones), judged from the log
    alone; empty when the commit is no candidate."""
    if len(entry.parents) != 1 or _trivial_message(entry.message):
        return []
    sources = [index for index, change in enumerate(entry.changes)
               if not all(is_test_path(path) for path in change.paths)]
    # A release note or changelog entry rides along with many fixes (tenacity's all do); no model
    # can be asked to write one (a random file name, a summary of the fix), so it stays out of
    # the reference and the training rows. A commit of such files only is a chore (is_chore).
    code = [index for index in sources if not CHORE_NAMES.search(entry.changes[index].paths[-1])]
    sources = code or sources
    if not sources or not all(_replayable(entry.changes[index]) for index in sources):
        return []
    total = sum((entry.changes[i].added or 0) + (entry.changes[i].deleted or 0) for i in sources)
    return sources if 1 <= total <= max_changed_lines * PRESELECT_SLACK else []


def _replayable(change: _FileChange) -> bool:
    """Text changes the editor reproduces exactly: it cannot rename, chmod or write symlinks."""
    if change.added is None or change.deleted is None:
        return False
    if change.status == "M":
        return change.old_mode == change.new_mode and change.new_mode in REGULAR_MODES
    if change.status == "A":
        return change.new_mode == "100644"
    if change.status == "D":
        return change.old_mode in REGULAR_MODES
    return False


def _trivial_message(message: str) -> bool:
    text = message.strip()
    if len(text) < MIN_MESSAGE_CHARS:
        return True
    subject = text.splitlines()[0].strip().lower()
    return subject.rstrip(".!") in TRIVIAL_MESSAGES or subject.startswith(TRIVIAL_PREFIXES)


def _task_from(entry: _LogEntry, sources: list[int], patch: bytes,
               max_changed_lines: int) -> HistoryTask | None:
    try:
        text = patch.decode("utf-8")
    except UnicodeDecodeError:
        return None  # not UTF-8: the editor could not make this change
    if "\0" in text or not _replayable_patch(text):
        return None
    if not 1 <= len(changed_lines(text)) <= max_changed_lines:
        return None
    files = sorted(entry.changes[index].paths[-1] for index in sources)
    if is_chore(entry.message, files, text):
        return None
    return HistoryTask(entry.commit, entry.parents[0], entry.date, entry.message, text, files)


def is_chore(message: str, files: list[str], patch: str) -> bool:
    """Whether a commit is upkeep rather than a change of behaviour: a release, a version bump,
    a changelog or release-notes entry, a dependency update (by its subject, by its non-test
    files, or by its changed lines all setting a version)."""
    subject = message.strip().splitlines()[0].strip() if message.strip() else ""
    if CHORE_SUBJECT.match(subject):
        return True
    if files and all(CHORE_NAMES.search(path) for path in files):
        return True
    lines = changed_lines(patch)
    return bool(lines) and all(VERSION_LINE.match(line) for line in lines)


def _commit_patches(repo_root: Path, entries: list[_LogEntry]) -> list[bytes | None]:
    """Each commit's whole patch against its parent, all from one `git diff-tree --stdin`;
    None where the output could not be split (then the commit is diffed on its own)."""
    pairs = "".join(f"{entry.commit} {entry.parents[0]}\n" for entry in entries)
    # Bytes: the output is cut into per-commit sections before anything is decoded.
    output = git_bytes(["diff-tree", "--stdin", "--always", "-p", "-M", *DIFF_OPTIONS],
                        repo_root, stdin=pairs.encode())
    # The output is, per commit: its id on a line of its own, then its patch. Patch lines never
    # are a bare commit id (hunk lines start with a sign or a space).
    starts = []
    position = 0
    for entry in entries:
        marker = entry.commit.encode() + b"\n"
        position = output.find(marker, position)
        while position > 0 and output[position - 1:position] != b"\n":
            position = output.find(marker, position + 1)
        if position < 0:
            return [None] * len(entries)
        starts.append(position)
        position += len(marker)
    ends = starts[1:] + [len(output)]
    return [output[start + len(entry.commit) + 1:end]
            for entry, start, end in zip(entries, starts, ends)]


def _source_patch(repo_root: Path, entry: _LogEntry, sources: list[int],
                  full_patch: bytes | None) -> bytes:
    """The file sections of the non-test changes: the reference patch."""
    sections = file_sections(full_patch) if full_patch is not None else []
    aligned = len(sections) == len(entry.changes) and all(
        _names(sections[index], entry.changes[index].paths[-1]) for index in sources)
    if aligned:
        return b"".join(sections[index] for index in sources)
    paths = [entry.changes[index].paths[-1] for index in sources]
    return git_bytes(["diff", *DIFF_OPTIONS, entry.parents[0], entry.commit, "--",
                       *(f":(literal){path}" for path in paths)], repo_root)


def _names(section: bytes, path: str) -> bool:
    header = section.split(b"\n", 1)[0]
    return header.endswith(f" b/{path}".encode()) or header.endswith(b'"')

# --- reconstruction --------------------------------------------------------------------------

@dataclass
class _FileEdit:
    path: str
    old: str | None  # None: the commit adds the file
    new: str | None  # None: the commit deletes the file


class _Replay:
    """Runs tool calls in a work copy and records them as a trajectory's messages."""

    def __init__(self, env: ToolEnvironment, task: str) -> None:
        self.env = env
        self.messages = [{"role": "system", "content": system_prompt()},
                         {"role": "user", "content": render("task", task=task)}]

    def call(self, thought: str, name: str, **arguments: Any) -> str:
        call = ToolCall(name, arguments)
        content = f"{thought}\n\n{format_tool_call(call)}"
        parsed, canonical = parse_reply(content)
        if canonical != content or parsed != call:  # a file's text confused the parser
            raise FormatError(f"the call on {arguments.get('path')} does not round-trip")
        self.messages.append({"role": "assistant", "content": content})
        observation = self.env.execute(call)
        self.messages.append({"role": "user", "content": format_observation(observation)})
        return observation

    def submit(self) -> str:
        """Review the diff, then hand it in; the patch that was handed in."""
        self.call("The edits are in place; let me review the whole diff.", "submit")
        self.messages.append({"role": "assistant", "content":
                              "The diff makes exactly the intended change; submitting it.\n\n"
                              + format_tool_call(ToolCall("submit", {}))})
        try:
            self.env.execute(ToolCall("submit", {}))
        except Submitted as submitted:
            return str(submitted)
        raise ToolError("the second submit did not hand the patch in")


def reconstruct_trajectory(repo_root: Path, task: HistoryTask,
                           config: AgentConfig | None = None) -> Trajectory | None:
    """A teacher-free training trajectory that makes `task`'s commit with the real tools.

    In a work copy at the parent commit it views the code around each change, edits it (str_replace
    with just enough context to be unique, insert for pure insertions, create for new files, rm for
    deleted ones) and submits twice, recording the real observations. None when the commit cannot
    be reproduced exactly (binary or non-UTF-8 text, or any replay mismatch).
    """
    edits = _file_edits(Path(repo_root), task) if _replayable_patch(task.patch) else None
    if edits is None:
        return None
    with WorkCopy.create(repo_root, task.parent) as workcopy:
        replay = _Replay(ToolEnvironment(workcopy, config or AgentConfig()), task.message)
        try:
            for edit in edits:
                _replay_file(replay, edit)
            patch = replay.submit()
        except (ToolError, FormatError, SeraError) as error:
            log.warning("history commit %s not replayed: %s", task.commit[:12], error)
            return None
    if not _same_changes(patch, task.patch):
        log.warning("history commit %s: the replay differs from the commit", task.commit[:12])
        return None
    meta = {"source": "history", "task": task.message, "commit": task.commit,
            "parent": task.parent, "date": task.date, "files": task.files, "patch": patch,
            "status": "submitted", "exit_message": "submitted", "recall": 1.0}
    return Trajectory(messages=replay.messages, meta=meta)


def _replayable_patch(patch: str) -> bool:
    """False for what the tools cannot make: mode changes, renames, copies, binary files.
    (Hunk lines start with " ", "+", "-" or "\\", so these prefixes only match headers.)"""
    return not any(line.startswith(UNREPLAYABLE_HEADERS) or
                   (line.startswith("new file mode ") and line != "new file mode 100644")
                   for line in patch.split("\n"))


def _same_changes(replayed: str, reference: str) -> bool:
    """Recall 1.0 both ways: the same changed lines as multisets (a diff.algorithm setting may
    align the work copy's diff differently from the plumbing diff of the reference)."""
    return Counter(changed_lines(_lf(replayed))) == Counter(changed_lines(_lf(reference)))


def _lf(patch: str) -> str:
    # The work copy's diff comes through git's text mode, which turns \r\n and \r into \n.
    return patch.replace("\r\n", "\n").replace("\r", "\n")


class _NotText(Exception):
    """A file the editor cannot make: binary or not UTF-8."""


def _file_edits(repo_root: Path, task: HistoryTask) -> list[_FileEdit] | None:
    edits = []
    for path in task.files:
        try:
            old, new = _blob_text(repo_root, task.parent, path), _blob_text(repo_root, task.commit,
                                                                            path)
        except _NotText:
            return None
        if old is None and new is None:
            return None
        edits.append(_FileEdit(path, old, new))
    return edits


def _blob_text(repo_root: Path, commit: str, path: str) -> str | None:
    """The file's text at `commit`, None if it is absent there; _NotText if it is no text."""
    try:
        data = git_bytes(["cat-file", "blob", f"{commit}:{path}"], repo_root)
    except RepositoryError:
        return None
    if b"\0" in data:
        raise _NotText(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _NotText(path) from None


def _replay_file(replay: _Replay, edit: _FileEdit) -> None:
    if edit.old is None:
        replay.call(f"The change needs a new file, {edit.path}; create it.", "str_replace_editor",
                    command="create", path=edit.path, file_text=edit.new)
    elif edit.new is None:
        replay.call(f"{edit.path} is no longer needed; delete it.", "bash",
                    command=f"rm -- {shlex.quote(edit.path)}")
    else:
        old_lines, new_lines = _lines(edit.old), _lines(edit.new)
        blocks = _edit_blocks(old_lines, new_lines)
        for first, last in _view_ranges(blocks, len(old_lines)):
            replay.call(f"Let me look at lines {first}-{last} of {edit.path}.",
                        "str_replace_editor", command="view", path=edit.path,
                        view_range=[first, last])
        _replay_edits(replay, edit.path, old_lines, new_lines, blocks)


def _lines(text: str) -> list[str]:
    """Lines with their "\\n" kept, split on "\\n" only, as git and the editor count them
    (str.splitlines would also split at \\r, \\f, U+2028...)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


Block = tuple[int, int, int, int]  # old lines [i1, i2) become new lines [j1, j2)


def _edit_blocks(old_lines: list[str], new_lines: list[str]) -> list[Block]:
    """The changed regions, neighbours at most MERGE_GAP lines apart joined into one edit."""
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    blocks: list[Block] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if blocks and i1 - blocks[-1][1] <= MERGE_GAP:
            blocks[-1] = (blocks[-1][0], i2, blocks[-1][2], j2)
        else:
            blocks.append((i1, i2, j1, j2))
    return blocks


def _view_ranges(blocks: list[Block], line_count: int) -> list[tuple[int, int]]:
    """1-based [first, last] line ranges around the blocks in the old file, overlaps merged."""
    ranges: list[tuple[int, int]] = []
    for i1, i2, _, _ in blocks:
        first = max(1, i1 + 1 - VIEW_CONTEXT)
        last = min(max(line_count, 1), max(i2, i1 + 1) + VIEW_CONTEXT)
        if ranges and first <= ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], last))
        else:
            ranges.append((first, last))
    return ranges


def _replay_edits(replay: _Replay, path: str, old_lines: list[str], new_lines: list[str],
                  blocks: list[Block]) -> None:
    """Make the blocks' edits top to bottom, tracking the file as the edits change it."""
    current, shift = list(old_lines), 0
    for i1, i2, j1, j2 in blocks:
        start, end = i1 + shift, i2 + shift
        replacement = new_lines[j1:j2]
        inserted = "".join(replacement)
        content = "".join(current)
        if start == end and inserted.endswith("\n"):
            replay.call(f"Add the new lines after line {start} of {path}.", "str_replace_editor",
                        command="insert", path=path, insert_line=start,
                        new_str=_as_typed("", inserted, content)[1])
        else:
            first, last = _unique_span(current, start, end)
            old_str = "".join(current[first:last])
            new_str = "".join(current[first:start] + replacement + current[end:last])
            old_str, new_str = _as_typed(old_str, new_str, content)
            lines = f"line {first + 1}" if last == first + 1 else f"lines {first + 1}-{last}"
            replay.call(f"Now change {lines} of {path}.", "str_replace_editor",
                        command="str_replace", path=path, old_str=old_str, new_str=new_str)
        current[start:end] = replacement
        shift += (j2 - j1) - (i2 - i1)


def _as_typed(old: str, new: str, content: str) -> tuple[str, str]:
    """old and new with CRLF written as LF, as a model types them, where the editor turns them
    back into exactly old and new: it does so when the LF form of old is not in a CRLF file."""
    typed_old, typed_new = old.replace("\r\n", "\n"), new.replace("\r\n", "\n")
    restored = (typed_old.replace("\n", "\r\n") == old and typed_new.replace("\n", "\r\n") == new
                and "\r" not in typed_old + typed_new)
    if not restored or "\r\n" not in content or (typed_old and typed_old in content):
        return old, new
    return typed_old, typed_new


def _unique_span(lines: list[str], start: int, end: int) -> tuple[int, int]:
    """The smallest widening of lines[start:end] that is non-empty and occurs once in the file."""
    content = "".join(lines)
    first, last = start, end
    while True:
        text = "".join(lines[first:last])
        if text and _count_overlapping(content, text) == 1:
            return first, last
        if first == 0 and last == len(lines):
            return first, last  # the whole file: unique by definition (or empty: editor refuses)
        first, last = max(first - 1, 0), min(last + 1, len(lines))


def _count_overlapping(content: str, text: str) -> int:
    """Occurrences as the editor counts them (overlapping ones included)."""
    count, position = 0, content.find(text)
    while position >= 0 and count < 2:
        count += 1
        position = content.find(text, position + 1)
    return count
