"""Fault and soak suite: random sequences of user edits, applies and undos against a fingerprint
of the user's state, and processes killed (SIGKILL) in the middle of apply and undo. Every
outcome is allowed but one: losing what the user had. The figures (runs, faults injected, states
checked, bytes lost) are printed at the end of the test session."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import GIT_IDENTITY, git, user_state
from test_specialize_pipeline import project  # noqa: F401 (a fixture)
from sera.agent.apply import apply_candidate, apply_patch, undo_last
from sera.agent.sandbox import bwrap_problem
from sera.errors import ApplyError

pytestmark = pytest.mark.faults

FILES = 4          # files f0..f3, ten lines each; patch i changes line 5 of f<i>
SEQUENCES = 100
OPERATIONS = 8
FIGURES = {"runs": 0, "faults injected": 0, "states checked": 0, "bytes lost": 0}


def original(i: int) -> list[str]:
    return [f"f{i} line {n}\n" for n in range(10)]


@pytest.fixture
def soak_repo(tmp_path, monkeypatch):
    for name, value in GIT_IDENTITY.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "soak"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for i in range(FILES):
        (root / f"f{i}.txt").write_text("".join(original(i)))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "files")
    patches = []
    for i in range(FILES):
        lines = original(i)
        lines[5] = f"f{i} line 5 PATCHED\n"
        (root / f"f{i}.txt").write_text("".join(lines))
        patches.append(git(root, "diff", f"f{i}.txt"))
        git(root, "checkout", f"f{i}.txt")
    return root, patches


class Soak:
    """One random sequence, with what must hold after each step."""

    def __init__(self, root, patches, rng, solver):
        self.root, self.patches, self.rng, self.solver = root, patches, rng, solver
        self.markers: dict[str, str] = {}   # line the user inserted -> file
        self.applied: list[int] = []        # patches applied, in order
        self.solved: list[tuple[str, int]] = []  # (run, file) of solves whose candidate changed it

    def step(self) -> None:
        kind = self.rng.choice(["edit", "edit", "edit", "apply", "apply", "apply", "undo",
                                "undo", "solve"])
        before = user_state(self.root)
        try:
            getattr(self, kind)()
        except ApplyError:
            assert user_state(self.root) == before, f"a refused {kind} changed the user's state"
        self.check()

    def edit(self) -> None:
        name = f"f{self.rng.randrange(FILES)}.txt"
        path = self.root / name
        lines = path.read_text().splitlines(keepends=True)
        marker = f"user line {len(self.markers)}\n"
        lines.insert(self.rng.randrange(len(lines) + 1), marker)
        path.write_text("".join(lines))
        self.markers[marker] = name

    def apply(self) -> None:
        if self.solved and self.rng.random() < 0.5:  # a candidate of an earlier solve
            run, i = self.rng.choice(self.solved)
            apply_candidate(self.root, f"{run}:0")
        else:
            i = self.rng.randrange(FILES)
            apply_patch(self.root, self.patches[i], f"patch {i}")
        self.applied.append(i)

    def solve(self) -> None:
        """A solve of the tree as it is (user edits, applies and all): it changes nothing of the
        user's; its candidate patches line 5 of one file, unless that line is patched already."""
        i = self.rng.randrange(FILES)
        before = user_state(self.root)
        result = self.solver(i)
        assert user_state(self.root) == before, "a solve changed the user's state"
        if result.candidates[0].patch.strip():
            self.solved.append((result.run_id, i))

    def undo(self) -> None:
        undo_last(self.root)
        i = self.applied.pop()
        assert "PATCHED" not in (self.root / f"f{i}.txt").read_text()

    def check(self) -> None:
        FIGURES["states checked"] += 1
        for marker, name in self.markers.items():
            if marker not in (self.root / name).read_text():
                FIGURES["bytes lost"] += len(marker)
                pytest.fail(f"the user's line {marker.strip()!r} in {name} was lost")
        for i in range(FILES):
            patched = "PATCHED" in (self.root / f"f{i}.txt").read_text()
            assert patched == (i in self.applied), f"f{i}.txt does not match the applies on record"


def soak_solver(root, tmp_path):
    """solve(i): a real solve of the working tree by a scripted agent that patches f<i>."""
    from conftest import tool_call, write_script
    from sera.agent.solve import solve
    from sera.config import load_settings
    from sera.models.registry import load_model
    models = []
    for i in range(FILES):
        spec = write_script(tmp_path / f"patch{i}.json", [
            tool_call("str_replace_editor", command="str_replace", path=f"f{i}.txt",
                      old_str=f"f{i} line 5\n", new_str=f"f{i} line 5 PATCHED\n"),
            tool_call("submit"), tool_call("submit")])
        settings = load_settings(root, {"model.spec": spec, "agent.scaffold": "agent",
                                        "solve.candidates": 1, "agent.test_command": ""})
        models.append((load_model(spec, settings.model), settings))
    return lambda i: solve(root, f"patch f{i}", models[i][1], models[i][0])


def test_random_edits_solves_applies_and_undos_never_lose_the_users_lines(soak_repo, tmp_path):
    root, patches = soak_repo
    solver = soak_solver(root, tmp_path)
    for seed in range(SEQUENCES):
        soak = Soak(root, patches, random.Random(seed), solver)
        for _ in range(OPERATIONS):
            soak.step()
        while soak.applied:  # wind back: every apply of the sequence undoes
            soak.undo()
            soak.check()
        FIGURES["runs"] += 1
        git(root, "checkout", "--", ".")  # the next sequence starts from the commit
    assert FIGURES["bytes lost"] == 0


def two_file_setup(soak_repo, call: str):
    """(root, a patch of two files, the user's state before it) with a user edit in a third
    file; for an undo, the patch is applied first."""
    root, patches = soak_repo
    two = patches[0] + patches[1]
    (root / "f2.txt").write_text("user edit\n" + (root / "f2.txt").read_text())
    before = user_state(root)
    if call == "undo":
        apply_patch(root, two, "two files")
    return root, two, before


@pytest.mark.parametrize("fault, call", [("apply-recorded", "apply"), ("apply-written", "apply"),
                                         ("undo-restoring", "undo")])
def test_killed_applies_and_undos_are_settled_without_loss(soak_repo, fault, call):
    root, two, before = two_file_setup(soak_repo, call)
    code = ("import sys; from pathlib import Path; from sera.agent.apply import apply_patch, "
            "undo_last\nrepo = Path(sys.argv[1])\n"
            + ("apply_patch(repo, sys.stdin.read(), 'two files')" if call == "apply"
               else "undo_last(repo)"))
    done = subprocess.run([sys.executable, "-c", code, str(root)], input=two, text=True,
                          capture_output=True, env={**os.environ, "SERA_FAULT": fault})
    assert done.returncode == -signal.SIGKILL, done.stderr
    FIGURES["faults injected"] += 1
    try:  # whatever the kill left, the next calls bring the user back to where they were
        undo_last(root)
    except ApplyError as error:
        assert "nothing to undo" in str(error)
    FIGURES["states checked"] += 1
    assert user_state(root) == before


def test_a_solve_killed_with_a_work_copy_on_disk_leaves_the_user_as_they_were(repo, tmp_path):
    """kill -9 while a candidate's work copy exists: the user's state is untouched, and the next
    solve removes the orphaned work copy before it runs."""
    from conftest import FIX_SCRIPT_REPLIES, write_script
    script = write_script(tmp_path / "fix.json", FIX_SCRIPT_REPLIES)
    before = user_state(repo)

    def sera_solve(**env):
        return subprocess.run([sys.executable, "-m", "sera", "-C", str(repo), "solve", "--model",
                               script, "-n", "1", "fix add"], capture_output=True, text=True,
                              env={**os.environ, **env})

    killed = sera_solve(SERA_FAULT="solve-candidate")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    FIGURES["faults injected"] += 1
    assert user_state(repo) == before
    assert git(repo, "worktree", "list").count("\n") == 2  # the killed candidate's work copy
    done = sera_solve()
    assert done.returncode == 0, done.stderr
    assert git(repo, "worktree", "list").count("\n") == 1  # the orphan is gone, and the new one
    FIGURES["states checked"] += 1
    assert user_state(repo) == before


# Runs inside bubblewrap: a copy of the repository on a small tmpfs (a full disk) or the repository
# with a read-only .sera; each step is a sera command or "fill"/"free" (the disk), and after each
# the user's state fingerprint is taken there, since the tmpfs is gone when bubblewrap exits.
DISK_STEPS = r'''
import hashlib, json, shutil, subprocess, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from conftest import user_state
repo, disk, steps = Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
if disk:
    repo = Path(shutil.copytree(repo, Path(disk) / repo.name, symlinks=True))
filler = repo.parent / "filler"

def fill():
    with open(filler, "ab", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass

def fingerprint():
    return hashlib.sha256(repr(sorted(user_state(repo).items())).encode()).hexdigest()

results = [{"step": "start", "state": fingerprint()}]
for step in steps:
    if step == ["fill"]:
        fill()
        continue
    if step == ["free"]:
        filler.unlink()
        continue
    done = subprocess.run([sys.executable, "-m", "sera", "-C", str(repo), *step],
                          capture_output=True, text=True)
    results.append({"step": step[0], "rc": done.returncode, "stderr": done.stderr,
                    "state": fingerprint()})
print(json.dumps(results))
'''


def run_in_bwrap(mounts: list[str], repo, disk: str, steps: list[list[str]]) -> list[dict]:
    from pathlib import Path
    tests = str(Path(__file__).parent)
    done = subprocess.run(["bwrap", "--dev-bind", "/", "/", *mounts, sys.executable, "-c",
                           DISK_STEPS, tests, str(repo), disk, json.dumps(steps)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def solved(repo, tmp_path) -> tuple[str, list[str]]:
    """A run with a fix of calc.py in `repo`; its id and the argv that solves it again."""
    from conftest import FIX_SCRIPT_REPLIES, write_script
    script = write_script(tmp_path / "fix.json", FIX_SCRIPT_REPLIES)
    solve = ["solve", "--model", script, "-n", "1", "--scaffold", "agent", "fix add"]
    done = subprocess.run([sys.executable, "-m", "sera", "-C", str(repo), *solve],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return solve


needs_bwrap = pytest.mark.skipif(bwrap_problem() is not None or shutil.which("bwrap") is None,
                                 reason=f"bubblewrap does not work here: {bwrap_problem()}")


@needs_bwrap
def test_a_full_disk_refuses_apply_undo_and_solve_and_loses_nothing(repo, tmp_path):
    solve = solved(repo, tmp_path)
    disk = tmp_path / "disk"
    disk.mkdir()
    results = run_in_bwrap(["--size", str(8 << 20), "--tmpfs", str(disk)], repo, str(disk), [
        ["fill"], ["apply"], solve, ["undo"],
        ["free"], ["apply"],
        ["fill"], ["undo"],
        ["free"], ["undo"]])
    start, apply_full, solve_full, undo_nothing, applied, undo_full, undone = results
    FIGURES["faults injected"] += 3
    for refused in (apply_full, solve_full, undo_full):
        FIGURES["states checked"] += 1
        assert refused["rc"] == 1 and "free some space" in refused["stderr"], refused
        assert "Traceback" not in refused["stderr"]
    assert apply_full["state"] == solve_full["state"] == undo_nothing["state"] == start["state"]
    assert "nothing to undo" in undo_nothing["stderr"]  # the refused apply left no record
    assert applied["rc"] == 0 and applied["state"] != start["state"]
    assert undo_full["state"] == applied["state"]      # a refused undo keeps the patch applied
    assert undone["rc"] == 0, undone["stderr"]
    assert undone["state"] == start["state"]


@needs_bwrap
def test_a_read_only_sera_folder_refuses_before_anything_is_loaded_or_written(repo, tmp_path):
    solve = solved(repo, tmp_path)
    sera_dir = str(repo / ".sera")
    read_only = ["--ro-bind", sera_dir, sera_dir]
    start, apply_ro, solve_ro = run_in_bwrap(read_only, repo, "", [["apply"], solve])
    for refused in (apply_ro, solve_ro):
        FIGURES["faults injected"] += 1
        FIGURES["states checked"] += 1
        assert refused["rc"] == 1 and "make it writable" in refused["stderr"], refused
        assert refused["state"] == start["state"]
    assert "loading model" not in solve_ro["stderr"]  # refused before the slow load
    before = user_state(repo)
    sera_cli = [sys.executable, "-m", "sera", "-C", str(repo)]
    assert subprocess.run([*sera_cli, "apply"], capture_output=True).returncode == 0
    _, undo_ro = run_in_bwrap(read_only, repo, "", [["undo"]])
    assert undo_ro["rc"] == 1 and "make it writable" in undo_ro["stderr"], undo_ro
    assert subprocess.run([*sera_cli, "undo"], capture_output=True).returncode == 0
    assert user_state(repo) == before


# Imports first and says so, then works: the kill's random moment falls in the work, not in
# Python's start-up. With "time" it reports how long the work took instead (the calibration).
KILLABLE = r'''
import sys, time
from pathlib import Path
from sera.agent.apply import apply_candidate, apply_patch, undo_last
repo, call = Path(sys.argv[1]), sys.argv[2]
patch = sys.stdin.read()
print("ready", flush=True)
started = time.perf_counter()
apply_patch(repo, patch, "two files") if call == "apply" else undo_last(repo)
print(time.perf_counter() - started, flush=True)
'''
KILLS = 12


def killed_at(root, patch: str, call: str, delay: float | None) -> float:
    """Run `call` in a process and kill it `delay` seconds into its work (None: let it finish);
    the seconds the work took, or the delay."""
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(root), call],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    process.stdin.write(patch)
    process.stdin.close()
    assert process.stdout.readline() == "ready\n"
    if delay is None:
        seconds = float(process.stdout.readline())
        assert process.wait() == 0
        return seconds
    time.sleep(delay)
    process.kill()
    process.wait()
    return delay


@pytest.mark.parametrize("call", ["apply", "undo"])
def test_applies_and_undos_killed_at_random_moments_are_settled_without_loss(soak_repo, call):
    """kill -9 at a random moment of the work (not at a named point): whatever it left, the next
    undo brings the user's state back exactly, and the undo record stays consistent."""
    root, two, before = two_file_setup(soak_repo, call)
    took = killed_at(root, two, call, None)  # calibration: how long the work takes unkilled
    if call == "apply":
        undo_last(root)
    assert user_state(root) == before
    rng = random.Random(call)
    for _ in range(KILLS):
        if call == "undo":
            apply_patch(root, two, "two files")
        killed_at(root, two, call, rng.uniform(0, 1.2 * took))
        FIGURES["faults injected"] += 1
        try:
            undo_last(root)
        except ApplyError as error:
            assert "nothing to undo" in str(error)
        FIGURES["states checked"] += 1
        assert user_state(root) == before
        with pytest.raises(ApplyError, match="nothing to undo"):
            undo_last(root)  # and no entry is left behind


def test_solves_killed_at_random_moments_leave_the_user_as_they_were(repo, tmp_path):
    """kill -9 at random moments of a whole `sera solve` (snapshot, work copy, agent commands,
    ranking, saving): the user's state is untouched each time, and the next solve cleans up."""
    from conftest import FIX_SCRIPT_REPLIES, write_script
    script = write_script(tmp_path / "fix.json", FIX_SCRIPT_REPLIES)
    argv = [sys.executable, "-m", "sera", "-C", str(repo), "solve", "--model", script, "-n", "2",
            "--scaffold", "agent", "fix add"]
    before = user_state(repo)
    started = time.perf_counter()
    assert subprocess.run(argv, capture_output=True).returncode == 0
    took = time.perf_counter() - started
    rng = random.Random(7)
    for _ in range(4):
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2 * took, took))
        process.kill()
        process.wait()
        FIGURES["faults injected"] += 1
        FIGURES["states checked"] += 1
        assert user_state(repo) == before
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert git(repo, "worktree", "list").count("\n") == 1  # every killed solve's copy is gone
    assert user_state(repo) == before


def test_a_specialize_killed_at_a_random_moment_resumes_to_the_end(tmp_path, monkeypatch):
    """kill -9 at a random moment of a whole `sera specialize` (rollouts, dataset, training):
    `--resume` finishes the run with an adapter, and the user's state never changed."""
    from test_specialize_pipeline import commit, teacher_script
    from tiny_models import build_tiny_model
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    projects = []
    for name in ("calibration", "killed"):
        root = tmp_path / name
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        (root / "calc.py").write_text("def add(a, b):\n    return a - b\n\n\n"
                                      "def scale(values, factor):\n    return [v * factor for v in values]\n")
        git(root, "add", "-A")
        commit(root, "calc: add and scale", day=1)
        projects.append(root)
    args = ["--model", f"transformers:{build_tiny_model(tmp_path / 'tiny')}",
            "--teacher", teacher_script(tmp_path / "teacher.json"), "--functions", "2",
            "--concurrency", "1", "--max-steps", "7", "--epochs", "1", "--no-reranker"]
    env = {**os.environ, **GIT_IDENTITY, "SERA_SPECIALIZE_HISTORY_TASKS": "0"}

    def specialize(root, *extra):
        return [sys.executable, "-m", "sera", "specialize", str(root), *args, *extra]

    def started(root, known: set) -> float:
        """Seconds until a new run's manifest appears under `root` (the run has begun)."""
        begin = time.perf_counter()
        while not set((root / ".sera" / "runs").glob("*/manifest.json")) - known:
            assert time.perf_counter() - begin < 120, "specialize began no run in 2 minutes"
            time.sleep(0.02)
        return time.perf_counter() - begin

    log = tmp_path / "calibration.log"
    with open(log, "w") as sink:
        calibration = subprocess.Popen(specialize(projects[0]), env=env, stderr=sink)
        begin = time.perf_counter() + started(projects[0], set())
        assert calibration.wait() == 0, log.read_text()
    took = time.perf_counter() - begin  # from the manifest to the end
    root = projects[1]
    before = user_state(root)
    delay = random.Random(3).uniform(0, 0.8 * took)
    while True:  # a run that finished before its kill was no fault: again, killed sooner
        known = set((root / ".sera" / "runs").glob("*/manifest.json"))
        process = subprocess.Popen(specialize(root), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        started(root, known)
        time.sleep(delay)
        if process.poll() is None:
            break
        assert process.returncode == 0
        delay /= 2
    process.kill()
    process.wait()
    FIGURES["faults injected"] += 1
    assert user_state(root) == before
    done = subprocess.run(specialize(root, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    FIGURES["states checked"] += 1
    assert user_state(root) == before
    for run in (root / ".sera" / "runs").iterdir():
        assert json.loads((run / "manifest.json").read_text())["status"] == "done"
    assert list((root / ".sera" / "adapters").glob("*/card.json"))
    assert git(root, "worktree", "list").count("\n") == 1


class FlakyTeacher:
    """An OpenAI-compatible teacher that answers as the scripted teacher of `script` does, except
    at the requests `faults` names: 'drop' (the connection closes unanswered), 'busy' (HTTP 503),
    'garbage' (an HTML page with status 200), 'empty' (JSON without choices)."""

    def __init__(self, script: str, faults: dict[int, str]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from sera.config import ModelConfig
        from sera.models import scripted
        self.model = scripted.load(script.removeprefix("scripted:"), ModelConfig())
        self.faults, self.requests, self.served = dict(faults), 0, {}
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send(200, json.dumps({"data": [{"id": "teacher"}]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                teacher.requests += 1
                fault = teacher.faults.pop(teacher.requests, None)
                if fault:
                    teacher.served[fault] = teacher.served.get(fault, 0) + 1
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault in ("busy", "garbage", "empty"):
                    status, data = {"busy": (503, b'{"error": {"message": "overloaded"}}'),
                                    "garbage": (200, b"<html>502 Bad Gateway</html>"),
                                    "empty": (200, b'{"choices": []}')}[fault]
                    return self.send(status, data)
                [done] = teacher.model.complete(body["messages"])
                self.send(200, json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": done.text}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode())

            def send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        import threading
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None
        self.spec = f"openai:http://127.0.0.1:{self.httpd.server_address[1]}/v1#teacher"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_teacher_that_drops_connections_and_answers_garbage_costs_no_work(project, tmp_path):
    """Dropped connections and 503s are retried; garbage and empty answers fail that function's
    rollout as a record with the reason (not the run); --resume with the teacher well again
    finishes it; the user's state never changes and no work copy is left."""
    from test_specialize_pipeline import teacher_script
    teacher = FlakyTeacher(teacher_script(tmp_path / "teacher.json"),
                           {1: "drop", 2: "busy", 4: "garbage", 9: "empty"})
    before = user_state(project)
    env = {**os.environ, **GIT_IDENTITY, "SERA_SPECIALIZE_HISTORY_TASKS": "0"}
    from tiny_models import build_tiny_model
    argv = [sys.executable, "-m", "sera", "specialize", str(project), "--teacher", teacher.spec,
            "--model", f"transformers:{build_tiny_model(tmp_path / 'tiny')}", "--functions", "2",
            "--concurrency", "1", "--max-steps", "7", "--no-train"]
    try:
        first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert teacher.served == {"drop": 1, "busy": 1, "garbage": 1, "empty": 1}
        FIGURES["faults injected"] += 4
        assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
        [run] = (project / ".sera" / "runs").iterdir()
        records = [json.loads(p.read_text()) for p in sorted((run / "rollouts").glob("*.json"))]
        failed = [r for r in records if r["status"] == "failed"]
        assert failed and all("JSON" in r["reason"] or "choices" in r["reason"] for r in failed)
        said = " ".join(first.stdout.split())  # the console wraps long lines
        assert f"warning: {len(failed)} rollouts failed (the first: the teacher" in said
        assert f"sera specialize --resume {run.name} tries them again" in said
        FIGURES["states checked"] += 1
        assert user_state(project) == before
        told = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True)
        assert f"finished with {len(failed)} failed rollouts" in told.stderr
        resumed = subprocess.run([*argv, "--resume", run.name], env=env, capture_output=True,
                                 text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr
    finally:
        teacher.close()
    records = [json.loads(p.read_text()) for p in sorted((run / "rollouts").glob("*.json"))]
    assert not [r for r in records if r["status"] == "failed"]
    again = subprocess.run([*argv, "--resume", run.name], env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "none of its rollouts failed: nothing to resume" in again.stderr
    FIGURES["states checked"] += 1
    assert user_state(project) == before
    assert git(project, "worktree", "list").count("\n") == 1


def test_two_solves_and_an_apply_at_once_corrupt_nothing(repo, tmp_path):
    """Two `sera solve` processes and an apply/undo loop in one repository at the same time: each
    solve saves a whole run, the applies serialize, a bare `sera apply` takes the newest finished
    run (never one still being solved), and the user's index and files come back."""
    from conftest import FIX_SCRIPT_REPLIES, tool_call, write_script
    from sera.agent.runs import list_runs
    quick = write_script(tmp_path / "fix.json", FIX_SCRIPT_REPLIES)
    slow = write_script(tmp_path / "slow.json", [tool_call("bash", command="sleep 2"),
                                                  *FIX_SCRIPT_REPLIES])
    sera = [sys.executable, "-m", "sera", "-C", str(repo)]

    def solve(script):
        return [*sera, "solve", "--model", script, "-n", "2", "--scaffold", "agent", "fix add"]

    assert subprocess.run(solve(quick), capture_output=True).returncode == 0
    before = user_state(repo)
    solves = [subprocess.Popen(solve(slow), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    deadline = time.time() + 60
    while len(list_runs(repo)) < 3:  # both have snapshotted the tree (before any apply below)
        assert time.time() < deadline, "the solves did not start"
        time.sleep(0.05)
    applies = 0
    while any(p.poll() is None for p in solves):
        for command in ("apply", "undo"):
            done = subprocess.run([*sera, command], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        applies += 1
    for process in solves:
        assert process.wait() == 0, process.stderr.read()
    FIGURES["states checked"] += 1
    assert applies and user_state(repo) == before
    runs = list_runs(repo)
    assert len(runs) == 3 and all(len(m["candidates"]) == 2 for m in runs)
    assert git(repo, "worktree", "list").count("\n") == 1
