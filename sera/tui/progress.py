"""What the TUI shows while a solve or a specialize run runs.

A solve: the time since it started and each candidate's state (waiting, step n of the limit with
its tokens so far, or how it ended). Steps arrive through `Session.solve`'s `on_step`; how a
candidate ended does not (no step event follows a submit or a stop), so `refresh_finished` reads
it from the candidate's trajectory file, which the agent rewrites after every step and once more
when it stops.

A specialize run: the time, the stage it is in (read from its manifest, which `run_stages`
rewrites at each stage's start and end) and its stages' progress bars ("rollouts 3/20"), which
`StageBars` receives in the run's thread as the rich Progress calls the stages make.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sera.agent.runs import read_manifest
from sera.paths import runs_dir
from sera.specialize.progress import StageBars  # noqa: F401 - shared with the language server
from sera.specialize.run import STAGES

RUNNING, WAITING = "running", "waiting"
SHOWN_BARS = 6  # the newest bars: the progress pane has about 8 rows on an 80x24 terminal


@dataclass
class CandidateState:
    steps: int = 0
    tokens: int = 0  # prompt and completion tokens so far, as a candidate's cost counts them
    status: str = WAITING  # waiting, running, then how it ended (submitted, step_limit, ...)

    @property
    def finished(self) -> bool:
        return self.status not in (WAITING, RUNNING)

    def line(self, index: int, max_steps: int) -> str:
        if self.status == WAITING:
            return f"candidate {index}: waiting for its first step"
        tokens = f"{self.tokens:,} tokens"
        if self.status == RUNNING:
            return f"candidate {index}: step {self.steps} of {max_steps}, {tokens}, running"
        plural = "" if self.steps == 1 else "s"
        return f"candidate {index}: {self.status} after {self.steps} step{plural}, {tokens}"


class SolveProgress:
    """The state of one solve, updated from the UI thread only."""

    def __init__(self, repo_root: Path, task: str, candidates: int, max_steps: int,
                 clock: Callable[[], float] = time.monotonic):
        self.runs_root = runs_dir(repo_root)
        self.runs_before = _run_names(self.runs_root)  # the solve's run is the new one
        self.task, self.max_steps, self.clock = task.strip(), max_steps, clock
        self.started = clock()
        self.states = [CandidateState() for _ in range(candidates)]
        self.last_note = ""
        self.run_dir: Path | None = None
        self._read_at: dict[int, float] = {}  # trajectory mtimes already read

    def stepped(self, index: int, event) -> None:
        """One step of candidate `index` (a StepEvent)."""
        state = self.states[index]
        state.status, state.steps = RUNNING, event.step
        state.tokens += event.completion.prompt_tokens + event.completion.completion_tokens
        self.last_note = ""  # a note from before this step (loading the model) is old news

    def noted(self, note: str) -> None:
        self.last_note = note

    def text(self) -> str:
        lines = [f"solving for {elapsed(self.clock() - self.started)} (Escape cancels)"]
        lines += [state.line(index, self.max_steps) for index, state in enumerate(self.states)]
        if self.last_note:
            lines.append(f"now: {self.last_note}")
        return "\n".join(lines)

    def refresh_finished(self) -> None:
        """Learn from the trajectory files which candidates have ended, and how."""
        run_dir = self._find_run_dir()
        if run_dir is None:
            return
        for index, state in enumerate(self.states):
            if not state.finished:
                self._read_trajectory(index, run_dir / "candidates" / f"{index}.json")

    def _read_trajectory(self, index: int, path: Path) -> None:
        try:
            modified = path.stat().st_mtime
            if self._read_at.get(index) == modified:
                return
            meta = json.loads(path.read_text(encoding="utf-8")).get("meta", {})
        except (OSError, ValueError):  # not written yet
            return
        self._read_at[index] = modified
        if meta.get("status", RUNNING) == RUNNING:
            return
        state = self.states[index]
        state.status, state.steps = meta["status"], int(meta.get("steps", state.steps))
        state.tokens = int(meta.get("prompt_tokens", 0)) + int(meta.get("completion_tokens", 0))

    def _find_run_dir(self) -> Path | None:
        """The run folder this solve created: a new one whose manifest names this task."""
        if self.run_dir is None:
            for name in sorted(_run_names(self.runs_root) - self.runs_before, reverse=True):
                try:
                    manifest = read_manifest(self.runs_root / name)
                except (OSError, ValueError):
                    continue
                if manifest.get("kind") == "solve" and manifest.get("task") == self.task:
                    self.run_dir = self.runs_root / name
                    break
        return self.run_dir


class SpecializeProgress:
    """The state of one specialize run, updated from the UI thread only."""

    def __init__(self, repo_name: str, preset: str | None,
                 clock: Callable[[], float] = time.monotonic):
        self.what = f"specializing {repo_name}" + (f" ({preset} preset)" if preset else "")
        self.clock, self.started = clock, clock()
        self.run_dir: Path | None = None  # known once the run has started
        self.stage = ""
        self.bars: dict[int, str] = {}
        self.last_note = ""

    def started_run(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def bar_changed(self, bar: int, line: str) -> None:
        if bar not in self.bars:
            self.last_note = ""  # a note from before a new bar (loading the teacher) is old news
        self.bars[bar] = line

    def noted(self, note: str) -> None:
        self.last_note = note

    def text(self) -> str:
        lines = [f"{self.what} for {elapsed(self.clock() - self.started)} (Escape cancels)"]
        if self.run_dir is not None:
            lines.append(f"run {self.run_dir.name}" + (f", {self.stage}" if self.stage else ""))
        lines += [self.bars[bar] for bar in sorted(self.bars)[-SHOWN_BARS:]]
        if self.last_note:
            lines.append(f"now: {self.last_note}")
        return "\n".join(lines)

    def refresh_finished(self) -> None:
        """Learn from the run's manifest which stage it is in."""
        if self.run_dir is None:
            return
        try:
            stages = read_manifest(self.run_dir)["stages"]
        except (OSError, ValueError, KeyError):  # not written yet
            return
        running = [name for name in STAGES if stages.get(name, {}).get("status") == RUNNING]
        if running:
            self.stage = f"stage {STAGES.index(running[0]) + 1} of {len(STAGES)}: {running[0]}"


def elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _run_names(root: Path) -> set[str]:
    return {path.name for path in root.iterdir()} if root.is_dir() else set()
