"""The language server over stdio with a real LSP client (pygls'): code actions, sera.solve with
its scaffold option and progress, the candidate offer (Preview opens the patch, Apply changes the
file on disk), undo, the unsaved-file guard, and clear errors for bad input."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path, to_fs_path

from conftest import CALC, git, tool_call, write_script
from test_guided import GOOD, block

TIMEOUT = 120


class Client(LanguageClient):
    """Records what the server says and answers its questions from a list of choices."""

    def __init__(self, choices: list[str]):
        super().__init__("sera-test", "1")
        self.choices = list(choices)
        self.messages: list[types.ShowMessageParams] = []
        self.logs: list[str] = []
        self.progress: list[str] = []  # begin / report / end, in order
        self.requests: list[str] = []  # the offers' messages
        self.documents: list[str] = []  # uris the server asked to show
        self.answered = asyncio.Event()

        @self.feature(types.WINDOW_SHOW_MESSAGE)
        def show(ls, params):
            self.messages.append(params)

        @self.feature(types.WINDOW_LOG_MESSAGE)
        def log(ls, params):
            self.logs.append(params.message)

        self.tokens: list = []  # progress tokens the server created

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create(ls, params):
            self.tokens.append(params.token)
            return None

        @self.feature(types.PROGRESS)
        def progress(ls, params):
            self.progress.append(params.value["kind"] if isinstance(params.value, dict)
                                 else params.value.kind)

        @self.feature(types.WINDOW_SHOW_MESSAGE_REQUEST)
        def offer(ls, params):
            self.requests.append(params.message)
            title = self.choices.pop(0) if self.choices else "Dismiss"
            if not self.choices:
                self.answered.set()
            return types.MessageActionItem(title=title)

        @self.feature(types.WINDOW_SHOW_DOCUMENT)
        def document(ls, params):
            self.documents.append(params.uri)
            return types.ShowDocumentResult(success=True)

    def said(self, kind=None) -> str:
        return "\n".join(m.message for m in self.messages if kind is None or m.type == kind)


CAPABILITIES = types.ClientCapabilities(window=types.WindowClientCapabilities(
    work_done_progress=True, show_document=types.ShowDocumentClientCapabilities(support=True)))


async def session(repo: Path, script: str, choices: list[str], body, *flags: str):
    client = Client(choices)
    await client.start_io(sys.executable, "-m", "sera", "-C", str(repo), "lsp", "--model", script,
                          *flags)
    try:
        await client.initialize_async(types.InitializeParams(
            capabilities=CAPABILITIES, root_uri=from_fs_path(str(repo)),
            initialization_options={"candidates": 2}))
        client.initialized(types.InitializedParams())
        await asyncio.wait_for(body(client), TIMEOUT)
    finally:
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    return client


def solve_arguments(action) -> dict:
    """The sera.solve arguments of a code action. lsprotocol 2025.0.0 decodes a CodeAction that
    carries a command as a Command whose `command` is the repr of the inner command (DESIGN.md's
    trap; editors decode the JSON correctly), so the test reads that repr back."""
    if isinstance(action, types.Command):
        command = ast.literal_eval(action.command)
    else:
        command = {"command": action.command.command, "arguments": action.command.arguments}
    assert command["command"] == "sera.solve"
    return command["arguments"][0]


def command(client, name, *arguments):
    return client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=name, arguments=list(arguments)))


def open_file(client, repo, rel, text=None):
    uri = from_fs_path(str(repo / rel))
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=uri, language_id="python", version=1,
        text=(repo / rel).read_text() if text is None else text)))
    return uri


def test_solve_from_a_code_action_preview_apply_and_undo(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}

    async def body(client):
        uri = open_file(client, repo, "calc.py")
        diagnostic = types.Diagnostic(
            range=types.Range(types.Position(2, 4), types.Position(2, 16)),
            message="add(2, 3) returns -1, expected 5", source="pytest")
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri), range=diagnostic.range,
            context=types.CodeActionContext(diagnostics=[diagnostic])))
        assert [a.title for a in actions] == ["sera: fix \u201cadd(2, 3) returns -1, expected 5\u201d"]
        request = solve_arguments(actions[0])
        assert request["task"].startswith("Fix this problem in calc.py at line 3 (reported by "
                                          "pytest): add(2, 3) returns -1, expected 5")
        assert "The line: return a - b" in request["task"]
        # the command's scaffold option wins over `sera lsp --scaffold agent`
        seen["result"] = await command(client, "sera.solve", {**request, "scaffold": "guided"})
        await asyncio.wait_for(client.answered.wait(), TIMEOUT)
        await until(lambda: "applied" in client.said())
        seen["applied"] = (repo / "calc.py").read_text()
        seen["undo"] = await command(client, "sera.undo")

    client = asyncio.run(session(repo, script, ["Preview", "Apply"], body, "--scaffold", "agent"))
    result = seen["result"]
    assert [c["status"] for c in result["candidates"]] == ["submitted", "submitted"]
    top = result["candidates"][0]
    assert top["rank"] == 1 and top["votes"] == 2 and top["files"] == ["calc.py"]
    assert "+    return a + b" in top["patch"]
    assert result["candidates"][1]["duplicate_of"] == top["index"]
    run_dir = repo / ".sera" / "runs" / result["run"]
    trajectory = json.loads((run_dir / "candidates" / f"{top['index']}.json").read_text())
    assert trajectory["meta"]["scaffold"] == "guided"
    assert client.progress[0] == "begin" and client.progress[-1] == "end"
    assert "report" in client.progress
    assert any("candidate 0 step 1: applied edits to calc.py" in line for line in client.logs)
    assert "no reranker is trained yet" in "\n".join(client.logs)
    assert top["locations"][0].startswith("looked at calc.py:1 add (")
    assert f"candidate {top['index']} {top['locations'][0]}" in client.logs
    # the offer: candidate, files, rank line; Preview opened the patch, Apply changed the file
    assert client.requests[0].startswith(f"sera: patch 1 of 1 (candidate {top['index']} of run "
                                         f"{result['run']}) changes calc.py; rank 1:")
    assert len(client.requests) == 2
    preview = Path(to_fs_path(client.documents[0]))
    assert preview == run_dir / f"{top['index']}.diff" and preview.read_text() == top["patch"]
    assert "return a + b" in seen["applied"]
    assert seen["undo"]["files"] == ["calc.py"] and (repo / "calc.py").read_text() == CALC
    assert "undid candidate" in client.said()


async def until(condition, seconds: float = TIMEOUT) -> None:
    for _ in range(int(seconds * 20)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server never got there")


def test_apply_is_refused_while_the_file_has_unsaved_changes(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}

    async def body(client):
        open_file(client, repo, "calc.py", text=CALC + "# typed, not saved\n")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"sera": {"candidates": 1}}))
        seen["solve"] = await command(client, "sera.solve", "calc.add is wrong")
        seen["apply"] = await command(client, "sera.apply")

    client = asyncio.run(session(repo, script, [], body, "--scaffold", "guided"))
    warnings = client.said(types.MessageType.Warning)
    assert "unsaved changes in calc.py are not seen by this solve" in warnings
    assert len(seen["solve"]["candidates"]) == 1  # the client's new setting beat initializationOptions
    assert "save or revert calc.py first" in seen["apply"]["error"]
    assert "nothing was changed" in client.said(types.MessageType.Error)
    assert (repo / "calc.py").read_text() == CALC


@pytest.mark.parametrize("arguments, error", [
    ([], "sera.solve takes one argument"),
    ([{"task": "fix it", "colour": "red"}], "unknown option 'colour' in the command's options"),
    ([{"task": "   "}], "the task is empty"),
    ([{"task": "fix it", "scaffold": "magic"}], "unknown scaffold 'magic'"),
])
def test_bad_solve_requests_say_what_to_do(repo, tmp_path, arguments, error):
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}

    async def body(client):
        seen["result"] = await command(client, "sera.solve", *arguments)
        seen["preview"] = await command(client, "sera.preview", "nosuch:0")
        seen["cancel"] = await command(client, "sera.cancel")

    client = asyncio.run(session(repo, script, [], body))
    assert error in seen["result"]["error"] and error in client.said(types.MessageType.Error)
    assert "no solve runs in" in seen["preview"]["error"]
    assert seen["cancel"] == {"cancelled": False}
    assert not (repo / ".sera" / "runs").exists() or not any((repo / ".sera" / "runs").iterdir())


def test_a_todo_comment_is_offered_as_a_task(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}
    text = CALC + "\n\n# TODO: add a subtract(a, b) function\n"
    (repo / "calc.py").write_text(text)

    async def body(client):
        uri = open_file(client, repo, "calc.py")
        line = len(text.splitlines()) - 1
        seen["actions"] = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri),
            range=types.Range(types.Position(line, 0), types.Position(line, 0)),
            context=types.CodeActionContext(diagnostics=[])))

    asyncio.run(session(repo, script, [], body))
    (action,) = seen["actions"]
    line = len(text.splitlines())
    assert action.title == "sera: do \u201cadd a subtract(a, b) function\u201d"
    assert solve_arguments(action)["task"] == (
        f"In calc.py, line {line} has a to-do comment; do what it says: add a subtract(a, b) "
        f"function")


@pytest.mark.parametrize("how", ["sera.cancel", "the progress's cancel button"])
def test_a_running_solve_is_cancelled(repo, tmp_path, how):
    script = write_script(tmp_path / "slow.json", [tool_call("bash", command="sleep 0.3")] * 60)
    seen = {}

    async def body(client):
        solving = asyncio.ensure_future(command(client, "sera.solve", "calc.add is wrong"))
        await until(lambda: any("step 2" in line for line in client.logs))
        seen["busy"] = await command(client, "sera.solve", "another task")
        if how == "sera.cancel":
            seen["cancel"] = await command(client, "sera.cancel")
        else:
            client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(
                token=client.tokens[0]))
        seen["result"] = await solving

    client = asyncio.run(session(repo, script, [], body, "--scaffold", "agent",
                                 "--max-steps", "60"))
    result = seen["result"]
    assert result["cancelled"] and {c["status"] for c in result["candidates"]} == {"interrupted"}
    assert all(c["rank"] is None for c in result["candidates"])
    assert max(int(line.split("step ")[1].split(":")[0]) for line in client.logs
               if " step " in line) < 30  # stopped well before the script ran out
    assert "still solving 'calc.add is wrong'" in seen["busy"]["error"]
    assert "keeps what had finished" in client.said(types.MessageType.Warning)
    if how == "sera.cancel":
        assert seen["cancel"] == {"cancelled": True} and "cancelling" in client.said()
    manifest = json.loads((repo / ".sera" / "runs" / result["run"] / "manifest.json").read_text())
    assert manifest["status"] == "cancelled"


def fuzzed_arguments(seed: int) -> list[tuple[str, list]]:
    """Commands with malformed arguments: wrong types, unknown keys, bad values for known
    options, odd uris and targets; none of them a solve that would run."""
    import random
    rng = random.Random(seed)
    junk = [None, 0, -1, 3.5, True, "", "  ", "x" * 300, [], [1, "a"], {}, {"a": {"b": []}},
            "../../etc/passwd", "file:///nonexistent/deep/x.py", "not a uri", "run:0:1", ":"]
    bad_options = {"candidates": ["many", -3, 0, None, [2]], "scaffold": [5, "magic", None],
                   "temperature": ["hot", -1], "max_steps": [0, "ten"], "colour": ["red"],
                   "uri": [5, [], "file:///nonexistent/x.py"], "model": [7, "nosuch:thing"]}
    calls = []
    for _ in range(40):
        name = rng.choice(["sera.solve", "sera.preview", "sera.apply", "sera.undo"])
        shape = rng.randrange(4)
        if shape == 0:
            arguments = [rng.choice(junk) for _ in range(rng.randrange(3))]
        elif shape == 1:
            arguments = [{rng.choice(["task", "target", "uri", "run", "x"]): rng.choice(junk)}]
        elif name == "sera.solve":
            key = rng.choice(list(bad_options))
            arguments = [{"task": "fix add", key: rng.choice(bad_options[key])}]
        else:
            arguments = [{"target": rng.choice(junk), "uri": rng.choice(junk)}]
        calls.append((name, arguments))
    return calls


def test_malformed_command_arguments_get_an_error_that_says_what_to_do(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    replies = []

    async def body(client):
        from pygls.exceptions import JsonRpcException
        for name, arguments in fuzzed_arguments(seed=7):
            try:
                reply = await command(client, name, *arguments)
            except JsonRpcException as error:  # an internal error: a crash the user cannot act on
                reply = {"internal error": str(error)}
            replies.append((name, arguments, reply))
        replies.append(("sera.cancel", [], await command(client, "sera.cancel")))

    asyncio.run(session(repo, script, [], body))
    crashed = [(name, arguments, reply) for name, arguments, reply in replies[:-1]
               if not (isinstance(reply, dict) and reply.get("error"))]
    assert not crashed, "\n".join(map(repr, crashed))  # every malformed request is refused with a message
    for name, arguments, reply in replies[:-1]:
        assert "Traceback" not in reply["error"] and len(reply["error"]) < 1000
    assert replies[-1][2] == {"cancelled": False}  # the server still answers
    assert not (repo / ".sera" / "runs").exists() or not any((repo / ".sera" / "runs").iterdir())


# ---------------------------------------------------------------------------------------------
# Edits through the editor (workspace/applyEdit)


class Editor(Client):
    """A client that holds buffers as an editor does: workspace/applyEdit edits them (opening a
    file that is not open, unsaved afterwards), and the server hears of every change."""

    def __init__(self, choices: list[str], refuse: bool = False):
        super().__init__(choices)
        self.buffers: dict[str, list] = {}  # uri -> [version, text]
        self.edits: list[types.ApplyWorkspaceEditParams] = []

        @self.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(ls, params):
            self.edits.append(params)
            if refuse:
                return types.ApplyWorkspaceEditResult(applied=False, failure_reason="user said no")
            for change in params.edit.document_changes:
                problem = self.make(change)
                if problem:
                    return types.ApplyWorkspaceEditResult(applied=False, failure_reason=problem)
            return types.ApplyWorkspaceEditResult(applied=True)

    def open(self, path: Path, text: str | None = None) -> str:
        uri = from_fs_path(str(path))
        self.buffers[uri] = [1, path.read_text() if text is None else text]
        self.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=self.buffers[uri][1])))
        return uri

    def make(self, change) -> str | None:
        if isinstance(change, types.CreateFile):
            Path(to_fs_path(change.uri)).write_text("")
            return None
        if isinstance(change, types.DeleteFile):
            Path(to_fs_path(change.uri)).unlink()
            self.buffers.pop(change.uri, None)
            return None
        uri, version = change.text_document.uri, change.text_document.version
        if uri not in self.buffers:
            self.open(Path(to_fs_path(uri)))
        elif version is not None and version != self.buffers[uri][0]:
            return f"{uri} is at version {self.buffers[uri][0]}, not {version}"
        text = apply_text_edits(self.buffers[uri][1], change.edits)
        self.buffers[uri] = [self.buffers[uri][0] + 1, text]
        self.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri,
                                                                version=self.buffers[uri][0]),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
        return None

    def text(self, path: Path) -> str:
        return self.buffers[from_fs_path(str(path))][1]


def apply_text_edits(text: str, edits) -> str:
    """TextEdits (non-overlapping, positions in UTF-16 units) applied to `text`, as an editor does."""
    lines = text.splitlines(keepends=True)

    def offset(position) -> int:
        before = "".join(lines[:position.line])
        line = lines[position.line] if position.line < len(lines) else ""
        units = line.encode("utf-16-le")[:2 * position.character].decode("utf-16-le")
        return len(before) + len(units)

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character),
                       reverse=True):
        text = text[:offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]
    return text


EDITOR = types.ClientCapabilities(
    window=CAPABILITIES.window,
    workspace=types.WorkspaceClientCapabilities(
        apply_edit=True, workspace_edit=types.WorkspaceEditClientCapabilities(
            document_changes=True, resource_operations=[types.ResourceOperationKind.Create,
                                                        types.ResourceOperationKind.Delete])))


async def editor_session(repo: Path, script: str, body, *flags: str, refuse: bool = False,
                         options: dict | None = None, capabilities=EDITOR) -> Editor:
    client = Editor([], refuse=refuse)
    await client.start_io(sys.executable, "-m", "sera", "-C", str(repo), "lsp", "--model", script,
                          *flags)
    try:
        await client.initialize_async(types.InitializeParams(
            capabilities=capabilities, root_uri=from_fs_path(str(repo)),
            initialization_options=options or {"candidates": 1}))
        client.initialized(types.InitializedParams())
        await asyncio.wait_for(body(client), TIMEOUT)
    finally:
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    return client


UNSAVED = CALC + "# typed, not saved\n"


def test_apply_and_undo_edit_the_unsaved_buffer_through_the_editor(repo, tmp_path):
    """Neovim kept showing the old text after an apply, and refused the next apply after an undo;
    now the editor makes the change in its buffer (unsaved edits kept), and undoes it."""
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}

    async def body(client):
        client.open(repo / "calc.py", UNSAVED)
        await command(client, "sera.solve", "calc.add is wrong")
        seen["apply"] = await command(client, "sera.apply")
        seen["applied"] = client.text(repo / "calc.py")
        seen["undo"] = await command(client, "sera.undo")
        seen["undone"] = client.text(repo / "calc.py")
        seen["again"] = await command(client, "sera.apply")

    client = asyncio.run(editor_session(repo, script, body, "--scaffold", "guided"))
    assert seen["apply"].get("files") == ["calc.py"], seen
    assert "error" not in seen["again"], seen["again"]
    assert seen["applied"] == UNSAVED.replace("return a - b", "return a + b")
    assert seen["undone"] == UNSAVED
    assert (repo / "calc.py").read_text() == CALC  # the editor's buffers, not the disk, changed
    first = client.edits[0].edit.document_changes[0]
    assert first.text_document.version == 1 and len(first.edits) == 1  # versioned, one line
    assert first.edits[0].range.start.line == 2 and first.edits[0].range.end.line == 3
    assert "applied candidate 0 of run" in client.said() and "in the editor" in client.said()
    assert "undid candidate 0" in client.said()


def test_a_file_not_open_is_opened_by_the_edit_and_left_to_save(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}

    async def body(client):
        await command(client, "sera.solve", "calc.add is wrong")
        seen["apply"] = await command(client, "sera.apply")

    client = asyncio.run(editor_session(repo, script, body, "--scaffold", "guided"))
    assert "return a + b" in client.text(repo / "calc.py")
    assert client.edits[0].edit.document_changes[0].text_document.version is None
    assert "save calc.py to keep it" in client.said()


def test_an_edit_the_editor_refuses_changes_nothing_and_records_nothing(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}

    async def body(client):
        await command(client, "sera.solve", "calc.add is wrong")
        seen["apply"] = await command(client, "sera.apply")
        seen["undo"] = await command(client, "sera.undo")

    client = asyncio.run(editor_session(repo, script, body, "--scaffold", "guided", refuse=True))
    assert "the editor did not make the change (user said no)" in seen["apply"]["error"]
    assert "nothing to undo" in seen["undo"]["error"]
    assert (repo / "calc.py").read_text() == CALC


NEW_FILE = """notes.py
```python
<<<<<<< SEARCH
=======
NOTE = "kept"
>>>>>>> REPLACE
```
"""


def test_a_new_file_is_created_through_the_editor_and_deleted_by_undo(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD + "\n" + NEW_FILE])
    seen = {}

    async def body(client):
        await command(client, "sera.solve", "calc.add is wrong; also add notes.py")
        seen["apply"] = await command(client, "sera.apply")
        seen["created"] = client.text(repo / "notes.py")
        seen["undo"] = await command(client, "sera.undo")

    client = asyncio.run(editor_session(repo, script, body, "--scaffold", "guided"))
    kinds = [type(c).__name__ for c in client.edits[0].edit.document_changes]
    assert "CreateFile" in kinds and sorted(seen["apply"]["files"]) == ["calc.py", "notes.py"]
    assert seen["created"] == 'NOTE = "kept"\n'
    assert "DeleteFile" in [type(c).__name__ for c in client.edits[1].edit.document_changes]
    assert not (repo / "notes.py").exists() and "error" not in seen["undo"]


# ---------------------------------------------------------------------------------------------
# Specialize from the editor, and the runs for a picker


def refusing_teacher(path: Path, slow: bool = False) -> str:
    """A teacher whose rollouts are judged not to fix anything: the run ends with nothing to
    train on, in seconds (test_specialize_pipeline trains for real)."""
    t1 = [tool_call("bash", command="sleep 0.5")] * 40 if slow else [
        tool_call("str_replace_editor", command="str_replace", path="calc.py",
                  old_str="return a - b", new_str="return a + b"), tool_call("submit"),
        tool_call("submit")]
    path.write_text(json.dumps({"conversations": [
        {"when": "Answer yes or no.", "replies": ["No."]},
        {"when": "Something may be wrong around", "replies": t1}]}))
    return f"scripted:{path}"


def specialize_options(tmp_path: Path, teacher: str) -> dict:
    from tiny_models import build_tiny_model
    return {"model.spec": f"transformers:{build_tiny_model(tmp_path / 'tiny')}",
            "specialize.teacher": teacher, "specialize.functions": 1, "specialize.history_tasks": 0,
            "specialize.concurrency": 1, "agent.max_steps": 40, "agent.scaffold": "agent"}


def test_specialize_from_the_editor_reports_each_stage_and_the_outcome(repo, tmp_path):
    teacher = refusing_teacher(tmp_path / "teacher.json")
    seen = {}

    async def body(client):
        seen["result"] = await command(client, "sera.specialize",
                                       {"uri": from_fs_path(str(repo)), **specialize_options(tmp_path, teacher)})
        seen["runs"] = await command(client, "sera.runs")

    client = asyncio.run(session(repo, teacher, [], body))
    result = seen["result"]
    assert "error" not in result, result
    assert result["adapter"] is None and "no adapter was trained" in result["report"]
    assert client.progress[0] == "begin" and client.progress[-1] == "end"
    reported = "\n".join(client.logs)
    assert "rollouts 0/1" in reported and "rollouts 1/1" in reported
    assert "rollouts: no_valid_rollout1 1, records 1" in reported  # ran, judged, kept nothing
    assert f"specialized {repo.name}" in client.said()
    (listed,) = seen["runs"]["runs"]
    assert listed["id"] == result["run"] and listed["kind"] == "specialize"
    assert listed["status"] == "done"


def test_a_running_specialize_is_cancelled_and_can_be_resumed(repo, tmp_path):
    teacher = refusing_teacher(tmp_path / "slow.json", slow=True)
    seen = {}

    async def body(client):
        running = asyncio.ensure_future(command(client, "sera.specialize",
                                                specialize_options(tmp_path, teacher)))
        await until(lambda: "rollouts 0/1" in "\n".join(client.logs))
        await asyncio.sleep(1)
        seen["busy"] = await command(client, "sera.solve", "calc.add is wrong")
        seen["cancel"] = await command(client, "sera.cancel")
        seen["result"] = await running

    client = asyncio.run(session(repo, teacher, [], body))
    assert "still specializing project" in seen["busy"]["error"]
    assert seen["cancel"] == {"cancelled": True}
    assert "was cancelled; continue it with: sera specialize --resume" in seen["result"]["error"]
    manifest = json.loads(next((repo / ".sera" / "runs").glob("*/manifest.json")).read_text())
    assert manifest["status"] == "interrupted"
    assert git(repo, "worktree", "list").count("\n") == 1  # no work copy left behind


def test_runs_lists_each_solve_with_its_candidates(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}

    async def body(client):
        seen["solve"] = await command(client, "sera.solve", "calc.add is wrong")
        seen["runs"] = await command(client, "sera.runs", {"uri": from_fs_path(str(repo / "calc.py"))})
        seen["bad"] = await command(client, "sera.specialize", {"preset": "huge"})

    asyncio.run(session(repo, script, [], body, "--scaffold", "guided"))
    (run,) = seen["runs"]["runs"]
    assert run["id"] == seen["solve"]["run"] and run["kind"] == "solve"
    assert run["task"] == "calc.add is wrong" and run["status"] == "done"
    top = min(run["candidates"], key=lambda c: c["rank"] or 99)
    assert top["files"] == ["calc.py"] and top["summary"].startswith("rank 1:")
    assert "unknown preset 'huge'; presets: demo, laptop, gpu" in seen["bad"]["error"]


# ---------------------------------------------------------------------------------------------
# Lifecycle: shutdown during a solve, an editor that dies, settings checked when they arrive

SLOW = [tool_call("bash", command="sleep 0.3")] * 200


def worktrees(repo: Path) -> int:
    return git(repo, "worktree", "list").count("\n")


def test_shutdown_during_a_solve_stops_it_and_removes_its_work_copies_first(repo, tmp_path):
    """Quitting the editor during a solve raised "dictionary changed size during iteration" in
    pygls and left locked worktrees; now the shutdown answers once the work copies are gone."""
    script = write_script(tmp_path / "slow.json", SLOW)
    seen = {}

    async def body(client):
        seen["solving"] = asyncio.ensure_future(command(client, "sera.solve", "calc.add is wrong"))
        await until(lambda: any("step 2" in line for line in client.logs))
        seen["during"] = worktrees(repo)
        await client.shutdown_async(None)
        seen["after shutdown"] = worktrees(repo)
        seen["result"] = await seen["solving"]

    client = Client([])

    async def run():
        await client.start_io(sys.executable, "-m", "sera", "-C", str(repo), "lsp", "--model",
                              script, "--scaffold", "agent", "--max-steps", "200")
        await client.initialize_async(types.InitializeParams(
            capabilities=CAPABILITIES, root_uri=from_fs_path(str(repo))))
        client.initialized(types.InitializedParams())
        await asyncio.wait_for(body(client), TIMEOUT)
        client.exit(None)
        await asyncio.wait_for(client.stop(), 30)

    asyncio.run(run())
    assert seen["during"] == 1 + 3  # the candidates' work copies
    assert seen["after shutdown"] == 1
    assert seen["result"]["cancelled"]
    assert client._server.returncode == 0
    assert b"Traceback" not in client._server.stderr._buffer


async def orphaned_server(repo: Path, script: str, parent: subprocess.Popen, end) -> tuple:
    """A server whose editor is `parent` (its processId); `end(client)` ends the editor mid-solve.
    Returns (seconds until the server exited, its exit code)."""
    client = Client([])
    await client.start_io(sys.executable, "-m", "sera", "-C", str(repo), "lsp", "--model", script,
                          "--scaffold", "agent", "--max-steps", "200")
    await client.initialize_async(types.InitializeParams(
        capabilities=CAPABILITIES, root_uri=from_fs_path(str(repo)), process_id=parent.pid))
    client.initialized(types.InitializedParams())
    asyncio.ensure_future(command(client, "sera.solve", "calc.add is wrong"))
    await until(lambda: any("step 2" in line for line in client.logs))
    assert worktrees(repo) > 1
    started = time.monotonic()
    end(client)
    code = await asyncio.wait_for(client._server.wait(), 60)
    return time.monotonic() - started, code


@pytest.mark.parametrize("how", ["the editor is killed", "stdin closes"])
def test_a_server_whose_editor_is_gone_stops_at_once_and_leaves_no_worktree(repo, tmp_path, how):
    """The editor killed with -9 kept the server solving for 17 s, dying on BrokenPipe
    tracebacks; now it stops within seconds, its work copies removed."""
    script = write_script(tmp_path / "slow.json", SLOW)
    editor = subprocess.Popen(["sleep", "300"])
    try:
        if how == "the editor is killed":
            def end(client):  # the pipe stays open: only the editor's pid tells
                editor.kill()
                editor.wait()  # reaped, as the editor's parent would
        else:
            def end(client):
                client._server.stdin.close()
        seconds, code = asyncio.run(orphaned_server(repo, script, editor, end))
    finally:
        editor.kill()
        editor.wait()
    assert seconds < 15 and code == 0
    assert worktrees(repo) == 1


def test_settings_are_checked_when_they_arrive_and_a_bad_key_can_be_fixed(repo, tmp_path):
    """A bad key in initializationOptions was accepted, failed every solve, and could not be
    cleared; now it is named at once, the other settings apply, and a new configuration
    replaces it."""
    script = write_script(tmp_path / "guided.json", [GOOD, GOOD])
    seen = {}

    async def body(client):
        await until(lambda: client.said(types.MessageType.Error))
        seen["initial"] = client.said(types.MessageType.Error)
        seen["first"] = await command(client, "sera.solve", "calc.add is wrong")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"sera": {"candidates": "many", "scaffold": "guided"}}))
        await until(lambda: "candidates" in client.said(types.MessageType.Error))
        seen["second"] = await command(client, "sera.solve", "calc.add is wrong")

    client = Client([])

    async def run():
        await client.start_io(sys.executable, "-m", "sera", "-C", str(repo), "lsp", "--model",
                              script)
        try:
            await client.initialize_async(types.InitializeParams(
                capabilities=CAPABILITIES, root_uri=from_fs_path(str(repo)),
                initialization_options={"colour": "red", "candidates": 1, "scaffold": "guided"}))
            client.initialized(types.InitializedParams())
            await asyncio.wait_for(body(client), TIMEOUT)
        finally:
            await client.shutdown_async(None)
            client.exit(None)
            await client.stop()

    asyncio.run(run())
    assert "initializationOptions: colour = 'red' is not valid (unknown option 'colour'" in seen["initial"]
    assert "the other settings are applied" in seen["initial"]
    assert len(seen["first"]["candidates"]) == 1  # candidates: 1 applied beside the bad key
    assert "candidates = 'many' is not valid" in client.said(types.MessageType.Error)
    assert "error" not in seen["second"] and len(seen["second"]["candidates"]) == 3  # the default


# ---------------------------------------------------------------------------------------------
# Preview without window/showDocument, and the candidates as code actions


def test_preview_without_show_document_shows_the_patch_in_a_message(repo, tmp_path):
    """Neovim 0.7 has no window/showDocument: the preview showed nothing."""
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}

    async def body(client):
        await command(client, "sera.solve", "calc.add is wrong")
        seen["preview"] = await command(client, "sera.preview")

    plain = types.ClientCapabilities(window=types.WindowClientCapabilities(work_done_progress=True))
    client = asyncio.run(editor_session(repo, script, body, "--scaffold", "guided",
                                        capabilities=plain))
    assert "+    return a + b" in seen["preview"]["patch"]
    shown = client.said(types.MessageType.Info)
    assert "sera: candidate 0 of run" in shown and "-    return a - b\n+    return a + b" in shown


def test_a_client_without_progress_is_told_in_a_message_that_the_solve_started(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])

    async def body(client):
        await command(client, "sera.solve", "calc.add is wrong")

    bare = types.ClientCapabilities()
    client = asyncio.run(editor_session(repo, script, body, "--scaffold", "guided",
                                        capabilities=bare))
    assert "sera: calc.add is wrong: started; its steps go to the log" in client.said()
    assert any("candidate 0 step 1" in line for line in client.logs)
    assert not client.progress


def test_after_a_solve_each_ranked_candidate_is_a_code_action_at_its_lines(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    seen = {}

    async def body(client):
        uri = client.open(repo / "calc.py")
        seen["solve"] = await command(client, "sera.solve", "calc.add is wrong")

        async def actions_at(line):
            return await client.text_document_code_action_async(types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri),
                range=types.Range(types.Position(line, 0), types.Position(line, 0)),
                context=types.CodeActionContext(diagnostics=[])))
        seen["at the change"] = await actions_at(2)
        seen["elsewhere"] = await actions_at(12)
        chosen = seen["at the change"][0]
        arguments = ast.literal_eval(chosen.command)["arguments"] if isinstance(
            chosen, types.Command) else chosen.command.arguments
        seen["apply"] = await command(client, "sera.apply", *arguments)
        seen["text"] = client.text(repo / "calc.py")

    (repo / "calc.py").write_text(CALC + "\n" * 6 + "# the end\n")
    git(repo, "commit", "-qam", "a longer file")
    asyncio.run(editor_session(repo, script, body, "--scaffold", "guided",
                               options={"candidates": 2}))
    top = min(seen["solve"]["candidates"], key=lambda c: c["rank"] or 9)
    # the two candidates wrote the same patch: one action, two votes
    assert [a.title for a in seen["at the change"]] == [
        f"sera: apply candidate {top['index']} (rank 1, 2 votes)"]
    assert not seen["elsewhere"]  # the last line is outside the patch's hunk
    assert seen["apply"]["applied"] == f"candidate {top['index']} of run {seen['solve']['run']}"
    assert "return a + b" in seen["text"]


def test_candidate_actions_follow_rank_and_lines():
    from sera.server.actions import candidate_actions

    def patch(first_line):
        return (f"diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -{first_line},3 "
                f"+{first_line},3 @@\n a\n-b\n+c\n d\n")
    solved = (None, "RUN", [{"index": 3, "rank": 2, "votes": 1, "patch": patch(10)},
                            {"index": 1, "rank": 1, "votes": 2, "patch": patch(11)}])

    def titles(line, path="m.py"):
        params = types.CodeActionParams(
            text_document=types.TextDocumentIdentifier("file:///r/m.py"),
            range=types.Range(types.Position(line, 0), types.Position(line, 0)),
            context=types.CodeActionContext(diagnostics=[]))
        return [a.title for a in candidate_actions(solved, path, params)]
    assert titles(10) == ["sera: apply candidate 1 (rank 1, 2 votes)",
                          "sera: apply candidate 3 (rank 2, 1 vote)"]
    assert titles(9) == ["sera: apply candidate 3 (rank 2, 1 vote)"]  # lines 10-12, 0-based 9-11
    assert titles(13) == [] and titles(10, "other.py") == []
