"""The language server's latency while a solve runs, against the same requests on an idle server.

    python bench/bench_lsp_latency.py [--requests 200]

`sera lsp` with the scripted model (its agent steps run a short shell command, so the solve keeps
a worker thread, git work copies and the shell busy) is sent code-action requests and
`sera.runs` commands, first with nothing running (the baseline), then while a solve of several
candidates runs. Prints p50 and p99 in ms for both and the ratio busy / idle: editors send code
actions on every cursor move, so a solve must not make them wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path

ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@b"}
SOURCE = "def add(a, b):\n    return a - b\n\n\n" + "".join(
    f"def f{i}(x):\n    # TODO: handle negative x in f{i}\n    return x + {i}\n\n\n" for i in range(200))


def make_repo(root: Path) -> Path:
    root.mkdir()
    (root / "calc.py").write_text(SOURCE)
    subprocess.run("git init -q && git add -A && git commit -qm init", shell=True, cwd=root,
                   check=True, env=ENV)
    return root


def slow_script(path: Path, steps: int) -> str:
    call = '<tool_call>{"name": "bash", "arguments": {"command": "sleep 0.2; git status"}}</tool_call>'
    path.write_text(json.dumps({"replies": [call] * steps}))
    return f"scripted:{path}"


async def timed(requests: int, send) -> list[float]:
    """Milliseconds of each of `requests` requests, one after another."""
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        await send()
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


async def measure(repo: Path, script: str, requests: int) -> dict[str, list[float]]:
    client = LanguageClient("bench", "1")
    for quiet in (types.WINDOW_SHOW_MESSAGE_REQUEST, types.WINDOW_SHOW_MESSAGE,
                  types.WINDOW_LOG_MESSAGE):
        client.feature(quiet)(lambda ls, params: None)
    await client.start_io(sys.executable, "-m", "sera", "-C", str(repo), "lsp", "--model", script,
                          "--scaffold", "agent", "--max-steps", "400", "--candidates", "3")
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), root_uri=from_fs_path(str(repo))))
    client.initialized(types.InitializedParams())
    uri = from_fs_path(str(repo / "calc.py"))
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=SOURCE)))

    async def code_action():
        line = 5
        await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri),
            range=types.Range(types.Position(line, 0), types.Position(line, 0)),
            context=types.CodeActionContext(diagnostics=[])))

    async def runs():
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="sera.runs", arguments=[]))

    found = {"code action idle": await timed(requests, code_action),
             "sera.runs idle": await timed(requests // 4, runs)}
    solving = asyncio.ensure_future(client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="sera.solve", arguments=["handle negative x in f1"])))
    await asyncio.sleep(3)  # the model is loaded and the candidates are stepping
    found["code action busy"] = await timed(requests, code_action)
    found["sera.runs busy"] = await timed(requests // 4, runs)
    await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="sera.cancel", arguments=[]))
    await solving
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        repo = make_repo(Path(folder) / "repo")
        script = slow_script(Path(folder) / "slow.json", 400)
        found = asyncio.run(measure(repo, script, args.requests))
    print(f"{'requests':<20} {'p50 ms':>8} {'p99 ms':>8}")
    for name, times in found.items():
        print(f"{name:<20} {percentile(times, 0.5):>8.2f} {percentile(times, 0.99):>8.2f}")
    for kind in ("code action", "sera.runs"):
        idle, busy = found[f"{kind} idle"], found[f"{kind} busy"]
        print(f"{kind}: busy / idle = p50 {statistics.median(busy) / statistics.median(idle):.2f}x, "
              f"p99 {percentile(busy, 0.99) / percentile(idle, 0.99):.2f}x")


if __name__ == "__main__":
    main()
