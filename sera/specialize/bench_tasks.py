"""The tasks of `sera bench`: the repository's newest small commits, each at its parent, verified
by the commit's own tests where it has them (as SWE-bench does).

    tasks = bench_tasks(repo_root, settings, count=10)

A task is a `HistoryTask` (mining.py mines them: small, no chores, message = issue, non-test
diff = reference) that changes source code. Where the commit also changes test files, its tests
decide (`verify`):

1. at the parent, with the commit's test changes applied, the test files it touched are run with
   the test command: the outcomes "before";
2. at the commit itself, the same files: the outcomes "after";
3. FAIL_TO_PASS = tests that pass after and did not pass before (failed, errored or were absent),
   PASS_TO_PASS = tests that pass at both.

A candidate resolves such a task when, applied at the parent with the same test changes, every
FAIL_TO_PASS and PASS_TO_PASS test passes (`resolves`). A task whose tests do not run here (no test
passes at the commit: a missing dependency, a collection error) is `broken`: reported, not counted.
A task without test changes, or whose tests already pass at the parent, is scored by line recall
of the reference (`kind` "recall").

Per-test outcomes come from pytest's JUnit XML when the test command runs pytest; any other
command is one test, named by the command, that passes when the command exits 0.
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from sera.agent.checks import workcopy_sandbox
from sera.agent.sourcecode import LANGUAGE_BY_EXTENSION, is_test_path
from sera.agent.testcmd import resolve_test_command
from sera.agent.workcopy import WorkCopy, git, run_git
from sera.config import AgentConfig, Settings
from sera.specialize.mining import DIFF_OPTIONS, HistoryTask, mine_history

JUNIT_FILE = ".sera-bench-junit.xml"  # written in the work copy, read, then removed
MINE_FACTOR = 4  # commits mined per task wanted: some change no source file
PASSED = "passed"
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ERROR_LINE = re.compile(r"\b\w*(Error|Exception|Failed|Interrupt)\b:.*")


@dataclass
class BenchTask:
    commit: str
    parent: str
    date: int
    message: str  # the task text
    patch: str  # the reference: the commit's non-test changes
    files: list[str]  # the non-test files the reference touches
    kind: str = "recall"  # "tests" (scored by FAIL_TO_PASS / PASS_TO_PASS), "recall" or "broken"
    why: str = ""  # why the task is scored by recall, or why its tests are broken here
    test_patch: str = ""  # the commit's changes to test files
    test_files: list[str] = field(default_factory=list)  # the test files run
    fail_to_pass: list[str] = field(default_factory=list)
    pass_to_pass: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.commit[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchTask":
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TestRun:
    outcomes: dict[str, str]  # test id -> passed, failed, error or skipped
    exit_code: int | None
    output: str

    @property
    def passed(self) -> set[str]:
        return {test for test, outcome in self.outcomes.items() if outcome == PASSED}


def bench_tasks(repo_root: Path, settings: Settings, count: int,
                progress: Callable[[str], None] | None = None) -> list[BenchTask]:
    """The newest `count` commits that change source code, oldest first, each verified."""
    mined = mine_history(repo_root, settings.bench.max_changed_lines, limit=count * MINE_FACTOR)
    chosen = [task for task in mined if _changes_code(task.files)][:count]
    command = bench_test_command(repo_root, settings)
    tasks = []
    for number, task in enumerate(reversed(chosen), 1):  # mined newest first
        if progress:
            progress(f"task {number}/{len(chosen)} {task.commit[:12]}: checking its tests")
        tasks.append(verify(repo_root, task, command, settings.agent))
    return tasks


def bench_test_command(repo_root: Path, settings: Settings) -> str | None:
    """bench.test_command, else agent.test_command, else one detected from the files."""
    setting = settings.bench.test_command or settings.agent.test_command or "auto"
    return resolve_test_command(repo_root, setting)


def _changes_code(files: list[str]) -> bool:
    return any(PurePosixPath(path).suffix in LANGUAGE_BY_EXTENSION for path in files)


def verify(repo_root: Path, history: HistoryTask, command: str | None,
           config: AgentConfig) -> BenchTask:
    """The task of one commit, with FAIL_TO_PASS and PASS_TO_PASS when its tests tell them."""
    task = BenchTask(history.commit, history.parent, history.date, history.message,
                     history.patch, list(history.files))
    task.test_files = _touched_tests(repo_root, history)
    if not task.test_files:
        task.why = "the commit changes no test file"
        return task
    if command is None:
        task.why = "no test command (set bench.test_command or agent.test_command)"
        return task
    task.test_patch = git(["diff", *DIFF_OPTIONS, history.parent, history.commit, "--",
                           *(f":(literal){path}" for path in task.test_files)], repo_root)
    after = run_test_files(repo_root, history.commit, "", command, task.test_files, config)
    if not after.passed:
        task.kind = "broken"
        task.why = "no test passes at the commit itself: " + failure_summary(after.output)
        return task
    before = run_test_files(repo_root, history.parent, task.test_patch, command,
                            task.test_files, config)
    task.fail_to_pass = sorted(after.passed - before.passed)
    task.pass_to_pass = sorted(after.passed & before.passed)
    if not task.fail_to_pass:
        task.why = "its tests pass at the parent too"
        return task
    task.kind = "tests"
    return task


def _touched_tests(repo_root: Path, history: HistoryTask) -> list[str]:
    """The test files the commit adds or modifies (deleted ones cannot run)."""
    names = git(["-c", "core.quotePath=false", "diff", "--name-only", "--diff-filter=AM",
                 "--no-renames", history.parent, history.commit], repo_root).splitlines()
    return sorted(name for name in names if is_test_path(name))


def resolves(repo_root: Path, task: BenchTask, patch: str, command: str,
             config: AgentConfig) -> tuple[bool, str]:
    """(resolved, what failed) of `patch` for a test-verified task."""
    if not patch.strip():
        return False, "the patch is empty"
    run = run_test_files(repo_root, task.parent, patch, command, task.test_files, config,
                         then=task.test_patch)
    if run.exit_code is None and not run.outcomes:
        return False, _tail(run.output)
    failing = [test for test in task.fail_to_pass + task.pass_to_pass
               if run.outcomes.get(test) != PASSED]
    if failing:
        shown = ", ".join(failing[:5]) + (f" and {len(failing) - 5} more" if len(failing) > 5 else "")
        return False, f"{len(failing)} test(s) do not pass: {shown}"
    return True, ""


def run_test_files(repo_root: Path, commit: str, patch: str, command: str, files: list[str],
                   config: AgentConfig, then: str = "") -> TestRun:
    """Run `command` on the test `files` in a fresh work copy of `commit` with `patch` and then
    `then` applied (a patch that does not apply: no outcomes, exit code None, the reason)."""
    with WorkCopy.create(repo_root, commit) as workcopy:
        for step in (patch, then):
            problem = _apply(workcopy, step)
            if problem:
                return TestRun({}, None, problem)
        junit = workcopy.path / JUNIT_FILE
        pytest = _is_pytest(command)
        line = _pytest_line(command, files, junit) if pytest else command
        result = workcopy_sandbox(workcopy, config).run(
            line, config.command_timeout, config.output_chars)
        if result.timed_out:
            return TestRun({}, None, f"the tests did not finish within "
                                     f"{config.command_timeout:g} s\n{result.output}")
        if pytest:
            outcomes = read_junit(junit) if junit.is_file() else {}
        else:
            outcomes = {command: PASSED if result.exit_code == 0 else "failed"}
        return TestRun(outcomes, result.exit_code, result.output)


def _apply(workcopy: WorkCopy, patch: str) -> str | None:
    if not patch.strip():
        return None
    done = run_git(["apply", "--whitespace=nowarn"], workcopy.path,
                   stdin=patch.encode("utf-8", "surrogateescape"))
    if done.returncode != 0:
        error = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"the patch does not apply: {error[-1] if error else 'git apply failed'}"
    return None


def _is_pytest(command: str) -> bool:
    return "pytest" in command


def _pytest_line(command: str, files: list[str], junit: Path) -> str:
    """The test command for these files with every outcome recorded: a later --maxfail undoes
    a stop-at-first-failure -x, the JUnit report is asked for, the files pytest collects are
    appended (the command is kept as written: it may hold shell syntax)."""
    collected = [shlex.quote(path) for path in files if _collectable(path)]
    return " ".join([command, "--maxfail=1000000", "-p", "no:cacheprovider",
                     shlex.quote(f"--junitxml={junit}"), "-o", "junit_family=xunit1", *collected])


def _collectable(path: str) -> bool:
    name = PurePosixPath(path).name
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def read_junit(path: Path) -> dict[str, str]:
    """{test id: outcome} from a JUnit XML report (test id = file or class :: name)."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return {}
    outcomes: dict[str, str] = {}
    for case in root.iter("testcase"):
        test = f"{case.get('file') or case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        outcome = ("error" if "error" in kinds else "failed" if "failure" in kinds
                   else "skipped" if "skipped" in kinds else PASSED)
        if outcomes.get(test, PASSED) == PASSED:  # a parametrized name seen twice: worst wins
            outcomes[test] = outcome
    return outcomes


def failure_summary(output: str) -> str:
    """The first error a test run names (e.g. `ModuleNotFoundError: No module named 'x'`), else
    its last lines; terminal colour codes removed."""
    output = ANSI_CODE.sub("", output)
    for line in output.splitlines():
        found = ERROR_LINE.search(line)
        if found:
            return found.group(0).strip()
    return _tail(output)


def _tail(output: str, lines: int = 3) -> str:
    kept = [line for line in output.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(no output)"
