"""Apply a candidate patch to the user's working tree, and undo the last apply exactly.

Apply never touches the user's index: a plain `git apply` first, and when the user's edits moved
the context, `git apply --3way` against a temporary index (a plain --3way implies --index and
refuses files with unstaged edits). A conflicted apply is rolled back and refused.

Each apply pushes an entry onto `.sera/undo/stack.json` with every touched file's content before and
its hash after. Undo restores files still as the apply left them byte for byte; files the user has
edited since are reverse-patched, which keeps the user's later edits; if that is not possible, undo
refuses and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sera.agent.merge import merge_lines
from sera.agent.repostate import unsafe_state
from sera.agent.runs import find_run, list_runs
from sera.agent.workcopy import ensure_state_dir, git_path, run_git
from sera.errors import ApplyError, reports_disk_errors
from sera.faults import fault_point
from sera.paths import (atomic_write_bytes, atomic_write_json, file_lock, remove_temp_files,
                        state_dir)


@dataclass
class AppliedPatch:
    label: str
    files: list[str]
    three_way: bool


def _git(repo: Path, *args: str, stdin: str | None = None, env: dict | None = None):
    """git with its status and both outputs as text, for the callers that act on failures."""
    data = stdin.encode("utf-8", "surrogateescape") if stdin is not None else None
    done = run_git(list(args), repo, env, data)
    return subprocess.CompletedProcess(done.args, done.returncode,
                                       done.stdout.decode("utf-8", "surrogateescape"),
                                       done.stderr.decode("utf-8", "replace"))


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def touched_paths(repo: Path, patch: str) -> list[str]:
    """Every path the patch reads or writes (both sides of renames), relative to the repo root."""
    result = _git(repo, "apply", "--numstat", "-z", stdin=patch)
    if result.returncode != 0:
        raise ApplyError(f"the patch is not a valid git patch: {result.stderr.strip()}")
    fields = result.stdout.split("\0")
    paths, i = [], 0
    while i < len(fields) and fields[i]:
        stat_and_path = fields[i].split("\t")
        if stat_and_path[-1]:  # "added\tdeleted\tpath"
            paths.append(stat_and_path[-1])
            i += 1
        else:  # a rename: "added\tdeleted\t" then source and destination as their own fields
            paths += [fields[i + 1], fields[i + 2]]
            i += 3
    return list(dict.fromkeys(paths))


def _undo_dir(repo: Path) -> Path:
    return state_dir(repo) / "undo"


def _load_stack(repo: Path) -> list[dict]:
    stack_file = _undo_dir(repo) / "stack.json"
    return json.loads(stack_file.read_text("utf-8")) if stack_file.is_file() else []


def _save_stack(repo: Path, stack: list[dict]) -> None:
    atomic_write_json(_undo_dir(repo) / "stack.json", stack)


def _restore(repo: Path, rel: str, content: bytes | None, mode: int | None) -> None:
    path = repo / rel
    if content is None:
        path.unlink(missing_ok=True)
        _remove_empty_parents(repo, path.parent)
        return
    atomic_write_bytes(path, content)
    if mode is not None:
        os.chmod(path, mode)


def _remove_empty_parents(repo: Path, folder: Path) -> None:
    while folder != repo and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _apply_three_way(repo: Path, patch: str, args: list[str]) -> subprocess.CompletedProcess:
    """`git apply --3way` with a throwaway index holding the working tree, so the user's index stays."""
    index = Path(_git(repo, "rev-parse", "--git-path", "index").stdout.strip())
    index = index if index.is_absolute() else repo / index
    with tempfile.TemporaryDirectory(prefix="sera-index-") as tmp:
        tmp_index = Path(tmp) / "index"
        if index.is_file():
            # copy2 keeps the index's mtime: with a fresh one, git's racy-entry check would take
            # a file edited within the same second as the index, at the same size, for clean,
            # and the merge would run on its stale content (undo once lost such an edit in CI)
            shutil.copy2(index, tmp_index)
        env = {"GIT_INDEX_FILE": str(tmp_index)}
        _git(repo, "add", "-A", env=env)
        return _git(repo, "apply", "--3way", *args, env=env, stdin=patch)


def _apply_or_roll_back(repo: Path, patch: str, paths: list[str], args: list[str]) -> bool:
    """Apply `patch` (with `args`, e.g. -R) to the working tree: plainly when it fits, else by a
    3-way merge. On failure restore `paths` as they were and raise. Returns True for a 3-way."""
    before = {p: (_read(repo / p), _mode(repo / p)) for p in paths}
    args = ["--whitespace=nowarn", *args]
    if _git(repo, "apply", "--check", *args, stdin=patch).returncode == 0:
        result, three_way = _git(repo, "apply", *args, stdin=patch), False
    else:
        result, three_way = _apply_three_way(repo, patch, args), True
    if result.returncode != 0:
        for p, (content, mode) in before.items():
            _restore(repo, p, content, mode)
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "conflicts"
        raise _Conflict(reason)
    return three_way


def check_apply(repo: Path, patch: str) -> str | None:
    """Why `apply_patch` would refuse `patch` on the working tree as it is now, or None when it
    would apply (plainly, or by the 3-way merge, tried on the throwaway index only). Changes
    nothing the user sees."""
    args = ["--whitespace=nowarn"]
    if _git(repo, "apply", "--check", *args, stdin=patch).returncode == 0:
        return None
    result = _apply_three_way(repo, patch, [*args, "--cached"])
    if result.returncode == 0:
        return None
    stderr = result.stderr.strip()
    if "with conflicts" in stderr:
        return "it conflicts with your edits since the solve"
    return stderr.splitlines()[-1] if stderr else "it does not apply"


class _Conflict(Exception):
    pass


def _mode(path: Path) -> int | None:
    return path.stat().st_mode & 0o777 if path.is_file() else None


@reports_disk_errors
def apply_patch(repo: Path, patch: str, label: str) -> AppliedPatch:
    """Apply `patch` to the working tree of `repo`; remember how to undo it. One apply or undo at
    a time per repository (other sera processes wait)."""
    if not patch.strip():
        raise ApplyError(f"{label} changes nothing; pick another candidate (`sera runs` lists them)")
    ensure_state_dir(repo)  # .sera/ kept out of git status
    with _apply_lock(repo):
        _settle_pending(repo)
        _refuse_unsafe_state(repo, f"apply {label}")
        paths = touched_paths(repo, patch)
        if _already_applied(repo, patch):
            raise _already_applied_error(label)
        before = {p: _read(repo / p) for p in paths}
        modes = {p: _mode(repo / p) for p in paths}
        # the record comes first: a process killed mid-apply leaves a pending entry that the
        # next apply or undo completes or drops (_settle_pending), never files without a record
        _begin_undo_entry(repo, label, patch, paths, before, modes)
        fault_point("apply-recorded")
        try:
            three_way = _apply_or_roll_back(repo, patch, paths, [])
        except _Conflict as conflict:
            _drop_last_entry(repo)
            raise ApplyError(f"{label} does not apply to your working tree ({conflict}); nothing "
                             f"was changed. Commit or stash your edits to {', '.join(paths)} and "
                             f"apply again, or run sera solve again on the current code") from None
        fault_point("apply-written")
        if all(_read(repo / p) == before[p] for p in paths):  # a 3-way merge found it there
            _drop_last_entry(repo)
            raise _already_applied_error(label)
        _finish_last_entry(repo)
    return AppliedPatch(label, paths, three_way)


def _already_applied_error(label: str) -> ApplyError:
    return ApplyError(f"{label} is already applied to your working tree; nothing was changed "
                      f"(sera undo reverts the last apply)")


def _already_applied(repo: Path, patch: str) -> bool:
    """The patch does not apply forward but its reverse does: its changes are there already."""
    args = ["apply", "--check", "--whitespace=nowarn"]
    return (_git(repo, *args, stdin=patch).returncode != 0
            and _git(repo, *args, "-R", stdin=patch).returncode == 0)


def _apply_lock(repo: Path):
    """One apply or undo at a time per checkout, whatever the process; the lock lives in the
    checkout's git folder, not in the working tree, where git status would show it."""
    return file_lock(git_path(repo, "sera-apply.lock"))


def _begin_undo_entry(repo, label, patch, paths, before, modes) -> None:
    """Save the files as they are and the patch, and push a pending undo entry for them."""
    stack = _load_stack(repo)
    entry_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{len(stack)}"
    folder = _undo_dir(repo) / entry_id
    files = []
    for n, p in enumerate(paths):
        saved = None
        if before[p] is not None:
            saved = f"{n}.before"
            atomic_write_bytes(folder / saved, before[p])
        files.append({"path": p, "before": saved, "mode": modes[p], "before_sha": _sha(before[p])})
    atomic_write_bytes(folder / "patch.diff", patch.encode("utf-8", "surrogateescape"))
    _save_stack(repo, stack + [{"id": entry_id, "label": label, "files": files, "pending": True}])


def _finish_last_entry(repo: Path, note: str = "",
                       contents: dict[str, bytes | None] | None = None) -> None:
    """Keep the files as the apply left them (the base of undo's merge): `contents` as an editor
    holds them, else as on disk; the entry is complete."""
    stack = _load_stack(repo)
    entry = stack[-1]
    folder = _undo_dir(repo) / entry["id"]
    for n, f in enumerate(entry["files"]):
        after = contents[f["path"]] if contents is not None else _read(repo / f["path"])
        if after is not None:
            atomic_write_bytes(folder / f"{n}.after", after)
        f.update(after=_sha(after), after_file=f"{n}.after" if after is not None else None)
    entry["label"] += note
    entry.pop("pending", None)
    _save_stack(repo, stack)


def _remove_temp_files(repo: Path, entry: dict) -> None:
    """The user's tree keeps no temporary file of a write that a kill interrupted."""
    for f in entry["files"]:
        if (repo / f["path"]).parent.is_dir():
            remove_temp_files(repo / f["path"])


def _drop_last_entry(repo: Path) -> None:
    stack = _load_stack(repo)
    _save_stack(repo, stack[:-1])
    shutil.rmtree(_undo_dir(repo) / stack[-1]["id"], ignore_errors=True)


def _settle_pending(repo: Path) -> None:
    """An entry left pending by a process killed while applying: dropped when no file changed,
    else completed as it stands, so `sera undo` restores the files as they were."""
    stack = _load_stack(repo)
    if not stack or not stack[-1].get("pending"):
        return
    _remove_temp_files(repo, stack[-1])
    if all(_sha(_read(repo / f["path"])) == f["before_sha"] for f in stack[-1]["files"]):
        _drop_last_entry(repo)
    else:
        _finish_last_entry(repo, " (interrupted while applying: check it, or sera undo)")


@reports_disk_errors
def undo_last(repo: Path) -> AppliedPatch:
    """Revert the newest apply, keeping the user's later edits to other lines (even the lines
    next to the patched ones); refuse, changing nothing, when they rewrote a patched line."""
    with _apply_lock(repo):
        _settle_pending(repo)
        entry = _last_entry(repo)
        _refuse_unsafe_state(repo, f"undo {entry['label']}")
        _remove_temp_files(repo, entry)  # a killed undo's half-written copies
        folder = _undo_dir(repo) / entry["id"]
        edited = [f["path"] for f in entry["files"] if _sha(_read(repo / f["path"])) != f["after"]]
        if any("after_file" not in f for f in entry["files"] if f["path"] in edited):
            _undo_by_reverse_patch(repo, folder, entry, edited)  # a record of an older sera
        else:
            restored = {f["path"]: _undone_content(repo, folder, entry, f, _read(repo / f["path"]))
                        for f in entry["files"]}
            for f in entry["files"]:
                _restore(repo, f["path"], restored[f["path"]], f["mode"])
                fault_point("undo-restoring")
        _drop_last_entry(repo)
    return AppliedPatch(entry["label"], [f["path"] for f in entry["files"]], three_way=bool(edited))


def _last_entry(repo: Path) -> dict:
    """The newest undo entry; ApplyError when none is on record."""
    stack = _load_stack(repo)
    if not stack:
        raise ApplyError("nothing to undo: no patch applied by sera is on record for this "
                         "repository")
    return stack[-1]


def _undone_content(repo: Path, folder: Path, entry: dict, f: dict,
                    current: bytes | None) -> bytes | None:
    """What file `f` of the undo record `entry` becomes: its content before the apply, with the
    user's edits since the apply (`current`: the file now) merged in line by line (merge.py)."""
    before = _saved_before(folder, f)
    if _sha(current) in (f["after"], _sha(before)):  # as applied, or undone by a killed undo
        return before
    merged = None
    if current is not None and before is not None and f["after_file"]:
        merged = merge_lines(base=(folder / f["after_file"]).read_bytes(), ours=current,
                             theirs=before)
    if merged is None:
        raise _cannot_undo(entry, folder, [f["path"]])
    return merged


def _undo_by_reverse_patch(repo: Path, folder: Path, entry: dict, edited: list[str]) -> None:
    """Undo of a record that kept no copy of the files as applied: reverse-apply the patch to
    the edited files (git's merge), restore the others."""
    patch = (folder / "patch.diff").read_bytes().decode("utf-8", "surrogateescape")
    try:
        _apply_or_roll_back(repo, patch, edited, ["-R", *(f"--include={p}" for p in edited)])
    except _Conflict:
        raise _cannot_undo(entry, folder, edited) from None
    for f in entry["files"]:
        if f["path"] not in edited:
            _restore(repo, f["path"], _saved_before(folder, f), f["mode"])


def _saved_before(folder: Path, f: dict) -> bytes | None:
    """File `f` of an undo record as it was before the apply (None: the apply created it)."""
    return (folder / f["before"]).read_bytes() if f["before"] else None


def _cannot_undo(entry: dict, folder: Path, paths: list[str]) -> ApplyError:
    return ApplyError(f"cannot undo {entry['label']}: you changed {', '.join(paths)} since, in "
                      f"the lines the patch touched; nothing was changed. Revert by hand (the "
                      f"patch is {folder / 'patch.diff'})")


def _refuse_unsafe_state(repo: Path, what: str) -> None:
    problem = unsafe_state(repo)
    if problem:
        raise ApplyError(f"cannot {what}: {problem}; nothing was changed")


def apply_candidate(repo: Path, target: str | None = None) -> AppliedPatch:
    """`target` = "RUN[:CANDIDATE]" (None: the last run's top-ranked candidate; in a run from
    before ranking, its first)."""
    return apply_found(repo, *find_candidate(repo, target))


def apply_found(repo: Path, manifest: dict, candidate: dict) -> AppliedPatch:
    """Apply `candidate` of the run `manifest` (as `find_candidate` gives them)."""
    return apply_patch(repo, candidate["patch"], f"candidate {candidate['index']} of run {manifest['id']}")


def find_candidate(repo: Path, target: str | None = None) -> tuple[dict, dict]:
    """(run manifest, candidate) for `target` = "RUN[:CANDIDATE]" (None: the last run's top one)."""
    run_id, _, cand = (target or "").partition(":")
    manifest = find_run(repo, run_id) if run_id else _last_finished_run(repo)
    return manifest, pick_candidate(manifest, cand)


def _last_finished_run(repo: Path) -> dict:
    """The newest solve run that is not being solved now (another sera process may be solving:
    "the last run" is the last one the user saw finish); the newest run when none is."""
    finished = [m for m in list_runs(repo) if m.get("kind") == "solve"
                and m.get("status") not in ("running", "ranking")]
    return finished[0] if finished else find_run(repo, None)


def pick_candidate(manifest: dict, index: str = "") -> dict:
    """Candidate `index` of a run's manifest ('' = the top-ranked one); the error lists them."""
    candidates = manifest["candidates"]
    if not candidates:
        raise ApplyError(f"run {manifest['id']} has no finished candidates; run sera solve again")
    if not any((c.get("patch") or "").strip() for c in candidates):
        raise ApplyError(f"no candidate of run {manifest['id']} changed anything; solve again, "
                         f"e.g. with more --candidates or --max-steps, or a clearer task")
    if not index:
        return min(candidates, key=lambda c: c.get("rank") or len(candidates) + 1)
    chosen = [c for c in candidates if str(c["index"]) == index]
    if not chosen:
        valid = ", ".join(str(c["index"]) for c in candidates)
        raise ApplyError(f"run {manifest['id']} has no candidate {index}; its candidates: {valid}")
    return chosen[0]


# ---------------------------------------------------------------------------------------------
# Apply and undo for a front end that writes the files itself (an editor, through LSP's
# workspace/applyEdit): the same record and the same refusals, but the new contents are planned
# here, from the files as the editor holds them (unsaved buffers included), and written there.


@dataclass
class PlannedChange:
    """What an apply or an undo changes: each file's content before and after (None: absent)."""
    label: str
    before: dict[str, bytes | None]
    after: dict[str, bytes | None]
    three_way: bool

    @property
    def files(self) -> list[str]:
        return list(self.before)


class EditorApply:
    """One apply or undo whose writes the caller makes (a context manager holding the apply lock):

        with EditorApply(repo, current) as job:
            change = job.plan_apply(patch, label)   # or job.plan_undo()
            if <the editor applied change.after>:
                job.done()

    An apply's undo entry is pending from the plan on (as for `apply_patch`, a process killed
    while the editor writes leaves a record the next apply or undo settles); `done` completes it,
    leaving the block without `done` drops it. An undo's entry goes at `done`.
    `current`: path -> content of files whose text differs from the disk (unsaved buffers)."""

    def __init__(self, repo: Path, current: dict[str, bytes | None] | None = None):
        self.repo, self.current = repo, dict(current or {})
        self._lock = _apply_lock(repo)
        self._finish = None      # what done() records
        self._pending = False    # an apply's pending undo entry is on the stack

    def __enter__(self) -> "EditorApply":
        ensure_state_dir(self.repo)
        self._lock.__enter__()
        try:
            _settle_pending(self.repo)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._finish is not None and self._pending:
                _drop_last_entry(self.repo)
        finally:
            self._lock.__exit__(*exc)

    def read(self, rel: str) -> bytes | None:
        return self.current[rel] if rel in self.current else _read(self.repo / rel)

    @reports_disk_errors
    def plan_apply(self, patch: str, label: str) -> PlannedChange:
        if not patch.strip():
            raise ApplyError(f"{label} changes nothing; pick another candidate")
        _refuse_unsafe_state(self.repo, f"apply {label}")
        paths = touched_paths(self.repo, patch)
        before = {p: self.read(p) for p in paths}
        try:
            after, three_way = _planned_contents(self.repo, patch, before, label), False
        except ApplyError:
            # as `_already_applied`: only the reverse fits plainly (a 3-way merge would find
            # nothing to change, or merge the change in twice)
            if self._reverse_fits(patch, before):
                raise _already_applied_error(label) from None
            after, three_way = _planned_contents(self.repo, patch, before, label,
                                                 three_way=True), True
        if after == before:
            raise _already_applied_error(label)
        change = PlannedChange(label, before, after, three_way)
        _begin_undo_entry(self.repo, label, patch, paths, before,
                          {p: _mode(self.repo / p) for p in paths})
        self._pending = True
        self._finish = lambda: _finish_last_entry(self.repo, contents=change.after)
        return change

    def _reverse_fits(self, patch: str, before: dict[str, bytes | None]) -> bool:
        try:
            _planned_contents(self.repo, patch, before, "", reverse=True)
            return True
        except ApplyError:
            return False

    @reports_disk_errors
    def plan_undo(self) -> PlannedChange:
        entry = _last_entry(self.repo)
        _refuse_unsafe_state(self.repo, f"undo {entry['label']}")
        folder = _undo_dir(self.repo) / entry["id"]
        if any("after_file" not in f for f in entry["files"]):
            raise ApplyError(f"{entry['label']} was applied by an older sera; undo it with "
                             f"`sera undo` in a terminal")
        before = {f["path"]: self.read(f["path"]) for f in entry["files"]}
        after = {f["path"]: _undone_content(self.repo, folder, entry, f, before[f["path"]])
                 for f in entry["files"]}
        edited = any(_sha(before[f["path"]]) != f["after"] for f in entry["files"])
        # the apply lock is held until the block ends: the last entry is still this one
        self._finish = lambda: _drop_last_entry(self.repo)
        return PlannedChange(entry["label"], before, after, three_way=edited)

    @reports_disk_errors
    def done(self) -> None:
        """The editor applied the planned change: record it (an apply's undo entry, or an undo's
        entry dropped)."""
        if self._finish is not None:
            self._finish()
            self._finish, self._pending = None, False


def _planned_contents(repo: Path, patch: str, before: dict[str, bytes | None], label: str,
                      reverse: bool = False, three_way: bool = False) -> dict[str, bytes | None]:
    """The files of `before` after `patch` (plainly, or by a 3-way merge), computed on a
    throwaway index: nothing in the working tree or the user's index changes."""
    args = ["--whitespace=nowarn", "--cached", *(["-R"] if reverse else []),
            *(["--3way"] if three_way else [])]
    with tempfile.TemporaryDirectory(prefix="sera-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _index_files(repo, before, env)
        result = _git(repo, "apply", *args, env=env, stdin=patch)
        if result.returncode != 0:
            reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "conflicts"
            raise ApplyError(f"{label} does not apply to your files as they are now ({reason}); "
                             f"nothing was changed. Run sera solve again on the current code")
        return {p: _indexed(repo, p, env) for p in before}


def _index_files(repo: Path, files: dict[str, bytes | None], env: dict) -> None:
    """A throwaway index holding exactly `files` as given (absent ones left out)."""
    _git(repo, "read-tree", "--empty", env=env)
    for rel, content in files.items():
        if content is None:
            continue
        sha = _git(repo, "hash-object", "-w", "--stdin", "--no-filters",
                   stdin=content.decode("utf-8", "surrogateescape")).stdout.strip()
        mode = "100755" if (_mode(repo / rel) or 0) & 0o111 else "100644"
        _git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{sha},{rel}", env=env)


def _indexed(repo: Path, rel: str, env: dict) -> bytes | None:
    listed = _git(repo, "ls-files", "-s", "--", rel, env=env).stdout.split()
    if len(listed) < 2:
        return None
    return run_git(["cat-file", "blob", listed[1]], repo).stdout


@reports_disk_errors
def write_change(repo: Path, change: PlannedChange) -> None:
    """Write a planned change on disk (for a change an editor cannot make itself)."""
    for rel, content in change.after.items():
        if content != change.before[rel]:
            _restore(repo, rel, content, _mode(repo / rel))
