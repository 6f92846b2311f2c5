"""`sera lsp`: the language server (pygls, over stdio) that brings sera into any LSP editor.

    sera lsp [--scaffold auto|agent|guided] [--model SPEC] [--candidates N] [--reranker NAME|none]

Commands (workspace/executeCommand; each says what went wrong with window/showMessage):
- `sera.solve` ["task"] or [{"task", "uri", "scaffold", "candidates", ...}]: sample candidates in
  work copies, rank them, and return the run (its id and each candidate's rank, score, votes,
  files and patch). Progress goes to $/progress (cancellable) and the log. Then a message offers
  the candidates in rank order: Apply, Preview (opens the patch as a document), Next, Dismiss.
- `sera.preview` [] or ["RUN:CANDIDATE"]: open a candidate's patch (.sera/runs/<id>/<n>.diff).
- `sera.apply` [] or ["RUN:CANDIDATE"]: apply it to the files on disk (default: the last run's
  top candidate); refused while a file it touches has unsaved changes in the editor.
- `sera.undo`: revert the last apply exactly (apply.py).
- `sera.cancel`: stop the running solve after each candidate's current step.
Code actions offer "sera: fix <diagnostic>" and "sera: do <TODO comment>" as sera.solve calls.

Settings: `sera lsp` flags < initializationOptions < workspace/didChangeConfiguration {"sera":
{...}} < a command's own options, on top of the repository's settings (sera config); see
options.py for the names. The models stay loaded between tasks (agent/session.py).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from sera import __version__
from sera.agent.apply import (EditorApply, apply_found, find_candidate, touched_paths, undo_last,
                              write_change)
from sera.agent.runs import list_runs
from sera.agent.session import Session
from sera.agent.solve import Candidate
from sera.agent.summary import (distinct_patches, location_lines, ordering_notes, rank_line,
                                step_line)
from sera.agent.workcopy import find_repo_root
from sera.config import load_settings
from sera.diff import changed_files
from sera.errors import SeraError
from sera.paths import atomic_write_bytes
from sera.server.actions import candidate_actions, code_actions, relative
from sera.server.edits import workspace_edit
from sera.server.lifecycle import cancel_other_requests, watch_client
from sera.server.options import (settings_flags, solve_request, specialize_request, target_argument,
                                 uri_argument, uri_option, valid_options)
from sera.specialize.progress import StageBars
from sera.specialize.run import outcome, run_stages, start_run

PREVIEW_CHARS = 4000  # a patch shown in a message (a client without window/showDocument)
COMMANDS = ("sera.solve", "sera.preview", "sera.apply", "sera.undo", "sera.cancel",
            "sera.specialize", "sera.runs")


class SeraServer(LanguageServer):
    def __init__(self, flags: dict[str, Any], start_dir: Path):
        super().__init__("sera", __version__)
        self.flags = flags          # from the `sera lsp` command line
        self.start_dir = start_dir  # where `sera lsp` was started (-C): the fallback repository
        self.options: dict[str, Any] = {}  # initializationOptions, then didChangeConfiguration
        self.problems: list[str] = []  # bad keys of initializationOptions, said when initialized
        self.last_solve: tuple[Path, str, list[dict]] | None = None  # its ranked candidates
        self.session = Session()
        self.cancel: threading.Event | None = None  # set to stop the running solve or specialize
        self.busy = ""  # what is running ("solving 'TASK'", "specializing REPO"), while it runs
        self.job: asyncio.Future | None = None  # the thread doing it
        self.running: asyncio.Task | None = None  # the command running it, until it answered
        self.offers: set[asyncio.Task] = set()  # the candidate offers waiting for the user
        self.apply_lock = asyncio.Lock()  # one apply or undo at a time (the editor's answer is awaited)

    # -----------------------------------------------------------------------------------------
    # Where and how

    def repo_for(self, uri: str | None) -> Path:
        """The repository of `uri` (a file or folder), else of the workspace, else of -C."""
        if uri:
            path = Path(to_fs_path(uri) or ".")
            return find_repo_root(path if path.is_dir() else path.parent)
        root = self.workspace.root_path if self.workspace else None
        return find_repo_root(Path(root) if root else self.start_dir)

    def settings_for(self, repo: Path, request: dict[str, Any]):
        flags = {**self.flags, **settings_flags(self.options, "the client's sera settings"),
                 **settings_flags(request, "the command's options")}
        return load_settings(repo, flags)

    def unsaved(self, repo: Path, only: list[str] | None = None) -> list[str]:
        """Files of `repo` open in the editor whose text differs from the file on disk."""
        found = []
        for doc in list(self.workspace.text_documents.values()):
            path = Path(doc.path)
            rel = relative(repo, path)
            if rel.startswith("/") or (only is not None and rel not in only):
                continue
            try:
                on_disk = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                on_disk = None
            if on_disk != doc.source:
                found.append(rel)
        return found

    # -----------------------------------------------------------------------------------------
    # Talking to the user

    def say(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def log(self, message: str) -> None:
        self.window_log_message(types.LogMessageParams(type=types.MessageType.Log, message=message))

    def supports(self, dotted: str) -> bool:
        value: Any = self.client_capabilities
        for part in dotted.split("."):
            value = getattr(value, part, None)
        return bool(value)

    # -----------------------------------------------------------------------------------------
    # Commands

    async def solve(self, request: dict[str, Any]) -> dict[str, Any]:
        self.refuse_when_busy()
        repo = self.repo_for(uri_argument("sera.solve", request.get("uri")))
        settings = self.settings_for(repo, request)
        unsaved = self.unsaved(repo)
        if unsaved:
            self.say(f"sera works on the saved files: unsaved changes in {', '.join(unsaved)} are "
                     f"not seen by this solve", types.MessageType.Warning)
        cancel = self.cancel = threading.Event()
        self.running = asyncio.current_task()
        self.busy = f"solving {request['task'].strip()!r}"
        progress = await _Progress.start(self, f"sera: {request['task'][:60]}", cancel)
        loop = asyncio.get_running_loop()

        def on_step(index: int, event) -> None:
            text = f"candidate {index} step {event.step}: {step_line(event)}"
            loop.call_soon_threadsafe(progress.report, text)

        def on_note(note: str) -> None:
            loop.call_soon_threadsafe(progress.report, note)
        try:
            self.job = asyncio.ensure_future(asyncio.to_thread(
                self.session.solve, repo, request["task"], settings, on_step, on_note, cancel))
            result = await asyncio.shield(self.job)
        except asyncio.CancelledError:  # the server is stopping: the solve thread stops too
            cancel.set()
            raise
        finally:
            self.cancel, self.busy, self.job = None, "", None
            progress.end()
        summary = _run_summary(result)
        notes = ordering_notes(result, reranker_off=settings.rerank.reranker == "none")
        for c in summary["candidates"]:
            for line in c["locations"]:
                self.log(f"candidate {c['index']} {line}")
        for note in notes + ([f"warning: {result.sandbox_warning}"] if result.sandbox_warning else []):
            self.log(note)
        summary["notes"] = notes
        distinct = {c.index for c in distinct_patches(result.candidates)}
        offered = [c for c in summary["candidates"] if c["index"] in distinct]
        self.last_solve = (repo, result.run_id, [c for c in offered if c["rank"] is not None])
        if result.cancelled:
            self.say(f"sera: cancelled; run {result.run_id} keeps what had finished",
                     types.MessageType.Warning)
        elif not offered:
            self.say(f"sera: no candidate changed anything (run {result.run_id}); try again, or "
                     f"with more candidates", types.MessageType.Warning)
        else:  # after the command has answered: the offer waits for the user
            task = asyncio.ensure_future(self.offer(repo, result.run_id, offered, notes))
            self.offers.add(task)
            task.add_done_callback(self.offers.discard)
        return summary

    def refuse_when_busy(self) -> None:
        if self.cancel is not None:
            raise SeraError(f"sera is still {self.busy}; wait for it, or stop it with the "
                            f"sera.cancel command")

    async def specialize(self, request: dict[str, Any]) -> dict[str, Any]:
        """A new specialize run of the repository, stage by stage with cancellable progress;
        the report at the end (what it produced, or why not)."""
        self.refuse_when_busy()
        repo = self.repo_for(uri_argument("sera.specialize", request.get("uri")))
        flags = {**self.flags, **settings_flags(self.options, "the client's sera settings"),
                 **settings_flags(request, "the command's options")}
        cancel = self.cancel = threading.Event()
        self.running = asyncio.current_task()
        self.busy = f"specializing {repo.name}"
        progress = await _Progress.start(self, f"sera: specialize {repo.name}", cancel)
        loop = asyncio.get_running_loop()

        def report(text: str) -> None:
            loop.call_soon_threadsafe(progress.report, text)

        def work() -> list[str]:
            run = start_run(repo, request.get("preset"), flags, {})
            run.cancel, run.say = cancel, report
            run.progress = StageBars(lambda bar, line: report(line))
            report(f"specialize run {run.id}")
            try:
                run_stages(run)
            finally:
                run.close()
            return [run.id, *outcome(run)]
        try:
            self.job = asyncio.ensure_future(asyncio.to_thread(work))
            run_id, *lines = await asyncio.shield(self.job)
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            self.cancel, self.busy, self.job = None, "", None
            progress.end()
        for line in lines:
            self.log(line)
        adapter = next((line.split()[1] for line in lines if line.startswith("adapter: ")), None)
        self.say(f"sera: specialized {repo.name}: " + "; ".join(lines[1:] or lines))
        return {"run": run_id, "adapter": adapter, "report": "\n".join(lines)}

    def runs(self, repo: Path) -> dict[str, Any]:
        """The repository's runs, newest first, with each solve's candidates (for a picker)."""
        found = []
        for manifest in list_runs(repo):
            found.append({"id": manifest["id"], "kind": manifest.get("kind", "solve"),
                          "task": manifest.get("task", ""), "status": manifest.get("status", "?"),
                          "candidates": [_candidate_line(c) for c in manifest.get("candidates", [])]})
        return {"runs": found}

    async def stop_work(self, seconds: float = 60.0) -> None:
        """Stop the running solve or specialize and wait (at most `seconds`) until it has
        stopped and removed its work copies; drop the offers waiting for the user."""
        running, cancel = self.running, self.cancel
        if cancel is not None:
            cancel.set()
        if running is not None:  # the command, not just its thread: it answers the client too
            await asyncio.wait([running], timeout=seconds)
        for offer in list(self.offers):
            offer.cancel()

    def client_gone(self) -> None:
        """The editor died without shutting the server down: stop the work, then the process
        (called from the watching thread; the work's thread removes its work copies)."""
        cancel = self.cancel
        if cancel is not None:
            cancel.set()
            deadline = time.monotonic() + 60
            while self.job is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        self.session.close()
        os._exit(0)

    async def offer(self, repo: Path, run_id: str, offered: list[dict], notes: list[str]) -> None:
        """Candidates in rank order, one message each: Apply, Preview, Next, Dismiss."""
        position, heading = 0, " ".join(n for n in notes if n.startswith("no confident fix"))
        while True:
            c = offered[position]
            actions = ["Apply", "Preview"] + (["Next"] if len(offered) > 1 else []) + ["Dismiss"]
            message = (f"sera: patch {position + 1} of {len(offered)} (candidate {c['index']} of run "
                       f"{run_id}) changes {', '.join(c['files']) or 'nothing'}; {c['summary']}"
                       + (f". {heading}" if heading else ""))
            choice = await self.window_show_message_request_async(types.ShowMessageRequestParams(
                type=types.MessageType.Info, message=message,
                actions=[types.MessageActionItem(title=a) for a in actions]))
            title = choice.title if choice else "Dismiss"
            target = f"{run_id}:{c['index']}"
            if title == "Preview":
                await guarded(SeraServer.preview)(self, repo, target)
            elif title == "Next":
                position = (position + 1) % len(offered)
            elif title == "Apply":
                await guarded(SeraServer.apply)(self, repo, target)
                return
            else:
                return

    async def preview(self, repo: Path, target: str | None) -> dict[str, Any]:
        manifest, candidate = find_candidate(repo, target)
        path = Path(manifest["dir"]) / f"{candidate['index']}.diff"
        atomic_write_bytes(path, candidate["patch"].encode("utf-8", "surrogateescape"))
        uri = from_fs_path(str(path))
        shown = False
        if self.supports("window.show_document.support"):
            result = await self.window_show_document_async(
                types.ShowDocumentParams(uri=uri, take_focus=True))
            shown = bool(result and result.success)
        if not shown:  # a client that cannot open it gets the patch in a message, never nothing
            patch = candidate["patch"]
            clipped = patch if len(patch) <= PREVIEW_CHARS else \
                patch[:PREVIEW_CHARS] + "\n... (the rest is in the file)"
            self.say(f"sera: candidate {candidate['index']} of run {manifest['id']} ({path}):\n"
                     f"{clipped}")
        return {"uri": uri, "patch": candidate["patch"], "run": manifest["id"],
                "candidate": candidate["index"]}

    async def apply(self, repo: Path, target: str | None) -> dict[str, Any]:
        manifest, candidate = find_candidate(repo, target)
        label = f"candidate {candidate['index']} of run {manifest['id']}"
        if not self.edits_in_editor():
            if candidate["patch"].strip():
                dirty = self.unsaved(repo, only=touched_paths(repo, candidate["patch"]))
                if dirty:
                    raise SeraError(f"save or revert {', '.join(dirty)} first: this editor "
                                    f"cannot take edits from sera (no workspace/applyEdit), so "
                                    f"sera writes the files on disk; nothing was changed")
            applied = apply_found(repo, manifest, candidate)
            files, three_way, where = applied.files, applied.three_way, ""
        else:
            async with self.apply_lock:
                with EditorApply(repo, self.buffers(repo)) as job:
                    change = job.plan_apply(candidate["patch"], label)
                    where = await self.make_change(repo, change, f"sera: apply {label}")
                    job.done()
            files, three_way = change.files, change.three_way
        how = " (3-way merge with your edits)" if three_way else ""
        self.say(f"sera: applied {label}{how} to {', '.join(files)}{where}; undo with the "
                 f"sera.undo command")
        return {"applied": label, "files": files, "three_way": three_way}

    async def undo(self, repo: Path) -> dict[str, Any]:
        if not self.edits_in_editor():
            undone = undo_last(repo)
            label, files, where = undone.label, undone.files, ""
        else:
            async with self.apply_lock:
                with EditorApply(repo, self.buffers(repo)) as job:
                    change = job.plan_undo()
                    where = await self.make_change(repo, change, f"sera: undo {change.label}")
                    job.done()
            label, files = change.label, change.files
        self.say(f"sera: undid {label}: restored {', '.join(files)}{where}")
        return {"undone": label, "files": files}

    # -----------------------------------------------------------------------------------------
    # Changing files through the editor

    def edits_in_editor(self) -> bool:
        """Whether the client applies WorkspaceEdits (then sera's apply and undo go through it:
        buffers update, and the editor's undo works)."""
        return self.supports("workspace.apply_edit")

    def open_documents(self, repo: Path) -> dict[str, Any]:
        """rel -> the editor's document, for the files of `repo` open in the editor."""
        found = {}
        for doc in list(self.workspace.text_documents.values()):
            rel = relative(repo, Path(doc.path))
            if not rel.startswith("/"):
                found[rel] = doc
        return found

    def buffers(self, repo: Path) -> dict[str, bytes]:
        """The text of open files whose buffer differs from the disk (what sera plans against)."""
        unsaved = set(self.unsaved(repo))
        return {rel: doc.source.encode("utf-8", "surrogateescape")
                for rel, doc in self.open_documents(repo).items() if rel in unsaved}

    async def make_change(self, repo: Path, change, label: str) -> str:
        """Have the editor make `change` (apply.PlannedChange); where the editor cannot express
        it (a file that is not UTF-8, a file to create without the client's create support),
        write the files on disk. Returns how it was made, for the message."""
        docs = self.open_documents(repo)
        versions = {rel: doc.version for rel, doc in docs.items() if doc.version is not None}
        capabilities = self.client_capabilities.workspace.workspace_edit
        operations = set(getattr(capabilities, "resource_operations", None) or [])
        edit = workspace_edit(repo, change.before, change.after, versions, operations,
                              self.workspace.position_encoding,
                              document_changes=self.supports(
                                  "workspace.workspace_edit.document_changes"))
        if edit is None:
            dirty = [rel for rel in change.files if rel in self.buffers(repo)]
            if dirty:
                raise SeraError(f"save or revert {', '.join(dirty)} first: this change cannot "
                                f"go through the editor, so sera writes it on disk; nothing "
                                f"was changed")
            write_change(repo, change)
            return " (written on disk)"
        result = await self.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label=label))
        if not result.applied:
            why = result.failure_reason or "no reason given"
            raise SeraError(f"the editor did not make the change ({why}); nothing was changed: "
                            f"try again")
        unsaved = [rel for rel in change.files if rel not in docs]
        return f" in the editor (save {', '.join(unsaved)} to keep it)" if unsaved else \
            " in the editor"


class _Progress:
    """A cancellable work-done progress when the client supports one; else a message that the
    work started (the steps then go to the log; the outcome comes as a message anyway)."""

    def __init__(self, server: SeraServer, token: str | None):
        self.server, self.token = server, token

    @classmethod
    async def start(cls, server: SeraServer, title: str, cancel: threading.Event) -> "_Progress":
        if not server.supports("window.work_done_progress"):
            server.say(f"{title}: started; its steps go to the log, sera.cancel stops it")
            return cls(server, None)
        token = str(uuid.uuid4())
        await server.work_done_progress.create_async(token)
        server.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=title, cancellable=True, message="starting"))
        server.work_done_progress.tokens[token].add_done_callback(
            lambda future: cancel.set() if future.cancelled() else None)
        return cls(server, token)

    def report(self, message: str) -> None:
        self.server.log(message)
        if self.token:
            self.server.work_done_progress.report(self.token, types.WorkDoneProgressReport(
                message=message[:200]))

    def end(self) -> None:
        if self.token:
            self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd())
            self.server.work_done_progress.tokens.pop(self.token, None)


def _candidate_line(candidate: dict[str, Any]) -> dict[str, Any]:
    known = {k: v for k, v in candidate.items() if k in Candidate.__dataclass_fields__}
    try:
        summary = rank_line(Candidate(**known)) if known.get("rank") is not None else \
            f"{known.get('status', '?')}: {known.get('exit_message', '')}"[:200]
    except TypeError:  # a manifest of an older sera
        summary = str(known.get("status", "?"))
    return {"index": candidate.get("index"), "rank": candidate.get("rank"),
            "status": candidate.get("status", "?"),
            "files": changed_files(candidate.get("patch") or ""), "summary": summary}


def _run_summary(result) -> dict[str, Any]:
    return {"run": result.run_id, "cancelled": result.cancelled, "candidates": [
        {"index": c.index, "rank": c.rank, "score": c.score, "votes": c.votes,
         "status": c.status, "files": changed_files(c.patch), "patch": c.patch,
         "duplicate_of": c.duplicate_of, "locations": location_lines(c),
         "summary": rank_line(c) if c.rank is not None else f"{c.status}: {c.exit_message}"}
        for c in result.candidates]}


def guarded(command):
    """An async command whose SeraError goes to the user as an error message (and the command
    returns {"error": message}) instead of a stack trace."""
    @functools.wraps(command)
    async def run(ls: SeraServer, *args):
        try:
            return await command(ls, *args)
        except SeraError as error:
            ls.say(str(error), types.MessageType.Error)
            return {"error": str(error)}
    return run


def build_server(flags: dict[str, Any] | None = None, start_dir: Path | None = None) -> SeraServer:
    server = SeraServer(flags or {}, start_dir or Path.cwd())

    @server.feature(types.INITIALIZE)
    def initialize(ls: SeraServer, params: types.InitializeParams) -> None:
        ls.options, problems = valid_options(params.initialization_options,
                                             "initializationOptions")
        ls.problems = problems  # said once the client is initialized
        if params.process_id:
            watch_client(params.process_id, ls.client_gone)

    @server.feature(types.INITIALIZED)
    def initialized(ls: SeraServer, params: types.InitializedParams) -> None:
        for problem in ls.problems:
            ls.say(problem, types.MessageType.Error)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def configuration(ls: SeraServer, params: types.DidChangeConfigurationParams) -> None:
        """The client's sera settings as they are now (they replace the earlier ones)."""
        settings = params.settings
        if isinstance(settings, dict) and "sera" in settings:
            ls.options, problems = valid_options(settings["sera"], "the client's sera settings")
            for problem in problems:
                ls.say(problem, types.MessageType.Error)

    for event in (types.TEXT_DOCUMENT_DID_OPEN, types.TEXT_DOCUMENT_DID_CLOSE,
                  types.TEXT_DOCUMENT_DID_SAVE):
        server.feature(event)(lambda ls, params: None)  # pygls keeps the documents in sync

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite]))
    def actions(ls: SeraServer, params: types.CodeActionParams):
        doc = ls.workspace.get_text_document(params.text_document.uri)
        try:
            rel = relative(ls.repo_for(params.text_document.uri), Path(doc.path))
        except SeraError:
            return []  # not in a git repository: sera has nothing to offer here
        return candidate_actions(ls.last_solve, rel, params) + code_actions(rel, doc.lines, params)

    @server.command("sera.solve")
    @guarded
    async def solve_command(ls: SeraServer, *args):
        return await ls.solve(solve_request(args))

    @server.command("sera.preview")
    @guarded
    async def preview_command(ls: SeraServer, *args):
        target, uri = target_argument("sera.preview", args)
        return await ls.preview(ls.repo_for(uri), target)

    @server.command("sera.apply")
    @guarded
    async def apply_command(ls: SeraServer, *args):
        target, uri = target_argument("sera.apply", args)
        return await ls.apply(ls.repo_for(uri), target)

    @server.command("sera.undo")
    @guarded
    async def undo_command(ls: SeraServer, *args):
        return await ls.undo(ls.repo_for(uri_option("sera.undo", args)))

    @server.command("sera.specialize")
    @guarded
    async def specialize_command(ls: SeraServer, *args):
        return await ls.specialize(specialize_request(args))

    @server.command("sera.runs")
    @guarded
    async def runs_command(ls: SeraServer, *args):
        return ls.runs(ls.repo_for(uri_option("sera.runs", args)))

    @server.command("sera.cancel")
    def cancel_command(ls: SeraServer, *args):
        if ls.cancel is None:
            ls.say("sera: nothing is running")
            return {"cancelled": False}
        ls.cancel.set()
        ls.say(f"sera: cancelling ({ls.busy}); it stops after its current step")
        return {"cancelled": True}

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: SeraServer, *args) -> None:
        """Answered once the running work has stopped and its work copies are gone."""
        request = ls.protocol.msg_id  # the shutdown's own id: read before any other message
        await ls.stop_work()
        ls.session.close()
        cancel_other_requests(ls.protocol, request)

    return server


def serve(flags: dict[str, Any], start_dir: Path) -> None:
    """Serve over stdio. The protocol gets its own copy of stdout, and fd 1 is pointed at stderr,
    so that nothing else printed (a library, an engine's C code) can corrupt the protocol."""
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    build_server(flags, start_dir).start_io(sys.stdin.buffer, protocol_out)
