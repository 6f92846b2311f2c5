"""Solve a task: N candidates, each an agent rollout in its own work copy, ranked (ranking.py:
votes, filters, the reranker's score) and saved as one run.

Shared by every front end (`sera solve`, the language server, the TUI). The user's checkout is
never touched here: candidates live in work copies of a snapshot of the working tree.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from sera.agent.loop import StepEvent
from sera.agent.ranking import Ranked, Ranking, rank_candidates
from sera.agent.repostate import unsafe_state
from sera.agent.rollout import choose_scaffold, rollout
from sera.agent.runs import new_run_id, write_manifest
from sera.agent.trajectory import Trajectory
from sera.agent.workcopy import cleanup_stale, ensure_state_dir, snapshot_commit
from sera.config import Settings, replace_section
from sera.errors import RepositoryError, SeraError
from sera.models.adapters import resolve_adapter
from sera.models.base import ChatModel, Reranker
from sera.paths import runs_dir

CANDIDATE_SEED_STRIDE = 1000  # candidate k: model.seed + 1000 k (a reply's samples: + i)
MIN_CANDIDATE_SECONDS = 5.0  # less than this left of solve.time_limit: a candidate is not started


@dataclass
class Candidate(Ranked):  # the ranking's fields are set once the candidates are ranked
    index: int
    status: str
    exit_message: str
    patch: str
    steps: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    trajectory: str  # path of the trajectory file
    locations: list = field(default_factory=list)  # guided scaffold: where it looked, and why


@dataclass
class SolveResult:
    run_id: str
    run_dir: Path
    candidates: list[Candidate]  # best first when ranked, else in the order they finished
    ranked: bool = False  # a reranker scored them
    sandbox_warning: str | None = None
    ranking: Ranking | None = None  # None when the ranking failed (ranking_error says why)
    ranking_error: str | None = None  # the ranking or the reranker failed; candidates are kept
    cancelled: bool = False  # `cancel` was set: candidates stopped early, none ranked


ProgressFn = Callable[[int, StepEvent], None]  # (candidate index, step event)


def check_request(repo_root: Path, task: str, settings: Settings,
                  working_tree: bool = True) -> tuple[str, str | None]:
    """The cleaned task and the adapter path; raises before anything is loaded or written, also
    when the working tree (which the run will snapshot, `working_tree`) is mid-merge or conflicted."""
    task = task.strip()
    if not task:
        raise SeraError('the task is empty; describe what to change, e.g. sera solve "fix the crash in parse()"')
    if settings.solve.candidates < 1:
        raise SeraError(f"candidates must be at least 1 (got {settings.solve.candidates})")
    problem = unsafe_state(repo_root) if working_tree else None
    if problem:
        raise RepositoryError(problem)
    adapter = resolve_adapter(repo_root, settings.model.adapter, settings.model.spec)
    choose_scaffold(settings.agent.scaffold, settings.model.spec, adapter)  # a bad name fails here
    return task, adapter


def solve(repo_root: Path, task: str, settings: Settings, model: ChatModel,
          on_step: ProgressFn | None = None, reranker: Reranker | None = None,
          on_note: Callable[[str], None] | None = None,
          cancel: threading.Event | None = None, at: str | None = None,
          run_dir: Path | None = None, locations: list | None = None) -> SolveResult:
    """Run `settings.solve.candidates` rollouts of `task`, rank them (scored by `reranker` when
    given) and save them as one run. `on_note` hears what the ranking is doing. Setting `cancel`
    stops every candidate after its current step (they end as interrupted; the run is kept).
    `at`: start from this commit instead of a snapshot of the working tree (`sera bench`: a task
    of the repository's past; "applies" is then checked against it); `run_dir`: where the run is
    saved (default: a new run in .sera/runs); `locations`: the guided scaffold shows these
    functions instead of the localizer's picks (`sera bench`'s oracle view)."""
    task, adapter = check_request(repo_root, task, settings, working_tree=at is None)
    ensure_state_dir(repo_root)
    cleanup_stale(repo_root)  # work copies left by a crashed or killed earlier run
    commit = at or snapshot_commit(repo_root)
    run_dir = Path(run_dir) if run_dir is not None else runs_dir(repo_root) / new_run_id("solve")
    run_id = run_dir.name
    manifest = {"id": run_id, "kind": "solve", "task": task, "model": model.spec, "adapter": adapter,
                "snapshot": commit, "status": "running", "created": time.time(), "ranked": False,
                "candidates": []}
    write_manifest(run_dir, manifest)
    runner = _CandidateRunner(repo_root, commit, run_dir, task, settings, model, adapter, on_step)
    runner.cancel = cancel or runner.cancel
    runner.locations = locations
    try:
        candidates = runner.run_all(settings.solve.candidates)
        # Saved before ranking, so a failing reranker or check loses no candidate.
        manifest.update(status="ranking", candidates=[asdict(c) for c in candidates])
        write_manifest(run_dir, manifest)
        if runner.cancel.is_set():  # cancelled: keep what finished, skip the checks
            ranking, error = None, "cancelled before the candidates were ranked"
        else:
            ranking, error = _rank(repo_root, commit, task, candidates, reranker, settings, on_note,
                                   working_tree=at is None)
    except BaseException:
        manifest.update(status="interrupted", candidates=[asdict(c) for c in runner.finished])
        write_manifest(run_dir, manifest)
        raise
    candidates = _in_ranked_order(candidates, ranking)
    error = error or (ranking.error if ranking else None)
    status = "cancelled" if runner.cancel.is_set() else "done"
    manifest.update(status=status, candidates=[asdict(c) for c in candidates],
                    ranked=bool(ranking and ranking.scored), ranking_error=error,
                    confident=ranking.confident if ranking else None,
                    ranking=ranking.to_dict() if ranking else None)
    write_manifest(run_dir, manifest)
    return SolveResult(run_id, run_dir, candidates, ranked=manifest["ranked"],
                       sandbox_warning=runner.sandbox_warning, ranking=ranking,
                       ranking_error=error, cancelled=status == "cancelled")


def _rank(repo_root, commit, task, candidates, reranker, settings, on_note,
          working_tree: bool) -> tuple[Ranking | None, str | None]:
    """The ranking, or (None, why) when checking the candidates failed (git, the sandbox)."""
    try:
        return rank_candidates(repo_root, commit, task, candidates, reranker, settings,
                               progress=on_note, working_tree=working_tree), None
    except SeraError as error:
        return None, f"the candidates could not be checked: {error}"


def _in_ranked_order(candidates: list[Candidate], ranking: Ranking | None) -> list[Candidate]:
    """The candidates best first, each with its rank, votes, filters and score."""
    if ranking is None:
        return candidates
    by_index = {c.index: c for c in candidates}
    return [replace(by_index[e.index], **e.ranked_fields()) for e in ranking.entries]


class _CandidateRunner:
    def __init__(self, repo_root, commit, run_dir, task, settings, model, adapter, on_step):
        self.repo_root, self.commit, self.run_dir, self.task = repo_root, commit, run_dir, task
        self.settings, self.model, self.adapter, self.on_step = settings, model, adapter, on_step
        self.finished: list[Candidate] = []
        self.sandbox_warning: str | None = None
        self._lock = threading.Lock()
        self.cancel = threading.Event()
        self.locations: list | None = None  # guided: shown instead of the localizer's picks
        limit = settings.solve.time_limit
        self.deadline = time.monotonic() + limit if limit > 0 else None

    def run_all(self, count: int) -> list[Candidate]:
        workers = self.settings.solve.parallel or count
        if not self.model.concurrent or workers <= 1:
            for index in range(count):
                self._record(self.run_one(index))
            return self.finished
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sera-candidate")
        try:
            futures = [pool.submit(self.run_one, index) for index in range(count)]
            for future in as_completed(futures):
                self._record(future.result())
        except BaseException:
            # Ctrl-C reaches only this thread: tell the others to stop after their current step.
            self.cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        return self.finished

    def _within_deadline(self) -> Settings | None:
        """The settings for the next candidate: agent.time_limit cut to the solve's time left;
        None when none is left."""
        if self.deadline is None:
            return self.settings
        left = self.deadline - time.monotonic()
        if left < MIN_CANDIDATE_SECONDS:
            return None
        limit = self.settings.agent.time_limit
        return replace_section(self.settings, "agent",
                               time_limit=min(limit, left) if limit > 0 else left)

    def _record(self, candidate: Candidate) -> None:
        with self._lock:
            self.finished.append(candidate)

    def run_one(self, index: int) -> Candidate:
        path = self.run_dir / "candidates" / f"{index}.json"
        on_step = (lambda event: self.on_step(index, event)) if self.on_step else None
        settings = self._within_deadline()
        if settings is not None and settings.model.seed >= 0:
            # candidate k samples with its own seed, the same in every run with this model.seed:
            # two configurations compared on one task sample alike wherever their prompts agree
            settings = replace_section(settings, "model",
                                       seed=settings.model.seed + CANDIDATE_SEED_STRIDE * index)
        meta = {"run": self.run_dir.name, "candidate": index}
        if settings is None:
            trajectory = Trajectory(path=path, meta={**meta, "status": "time_limit", "exit_message": (
                f"not started: the solve ran past its time limit of "
                f"{self.settings.solve.time_limit:g} s (solve.time_limit)")})
            trajectory.save()
        else:
            trajectory, warning = rollout(
                self.repo_root, self.commit, self.task, self.model, settings, path, meta=meta,
                adapter=self.adapter, on_step=on_step, cancel=self.cancel,
                locations=self.locations)
            self.sandbox_warning = self.sandbox_warning or warning
        meta = trajectory.meta
        return Candidate(index=index, status=meta["status"], exit_message=meta.get("exit_message", ""),
                         patch=meta.get("patch", ""), steps=trajectory.steps,
                         prompt_tokens=int(meta.get("prompt_tokens", 0)),
                         completion_tokens=int(meta.get("completion_tokens", 0)),
                         seconds=round(meta.get("seconds", 0.0), 2), trajectory=str(path),
                         locations=meta.get("locations", []))
