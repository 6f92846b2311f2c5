"""Soft Verified Generation (METHODS.md section 1), one starting function at a time.

For each function: rollout 1 on a vague request (retried until the teacher's self-check says yes),
drop a P1 seen before, a synthetic issue written from rollout 1, rollout 2 on the issue alone in a
fresh work copy, and line-level recall of P1 in P2. Each function's outcome is one JSON record in
`<run>/rollouts/<index>.json`, written when it is final, so a killed run resumes where it stopped
without losing or repeating a finished function. Every recall is recorded, kept or not (the reranker
trains on both).
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from sera.agent.rollout import rollout
from sera.agent.sourcecode import Function
from sera.agent.trajectory import Trajectory
from sera.config import Settings
from sera.diff import changed_lines
from sera.errors import SeraError
from sera.models.base import ChatModel, Completion
from sera.paths import atomic_write_json
from sera.specialize import teacher
from sera.specialize.recall import line_recall

Record = dict[str, Any]


@dataclass
class SVGContext:
    repo_root: Path
    commit: str              # the snapshot every rollout starts from
    run_dir: Path
    teacher: ChatModel
    settings: Settings
    examples: list[str]      # issue styles to imitate
    deadline: float | None = None  # time.time() after which no new function starts
    cancel: threading.Event = field(default_factory=threading.Event)
    seen_p1: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def record_path(run_dir: Path, index: int) -> Path:
    return run_dir / "rollouts" / f"{index:05d}.json"


def run_svg(ctx: SVGContext, functions: list[Function],
            on_record: Callable[[Record], None] | None = None) -> list[Record]:
    """Generate (or resume) the records of `functions`; returns all records, in function order."""
    records = {i: _read(record_path(ctx.run_dir, i)) for i in range(len(functions))
               if record_path(ctx.run_dir, i).is_file()}
    # A failed function (the teacher went away) is on record, and a resumed run tries it again.
    records = {i: r for i, r in records.items() if r["status"] != "failed"}
    ctx.seen_p1 |= {_p1_key(r["p1"]) for r in records.values() if r.get("p1")}
    pending = [i for i in range(len(functions)) if i not in records]
    workers = ctx.settings.specialize.concurrency if ctx.teacher.concurrent else 1

    def work(index: int) -> None:
        if ctx.cancel.is_set() or (ctx.deadline and time.time() > ctx.deadline):
            return
        try:
            record = generate(ctx, index, functions[index])
        except _Cancelled:
            return
        atomic_write_json(record_path(ctx.run_dir, index), record)
        records[index] = record
        if on_record:
            on_record(record)

    if workers <= 1:
        for index in pending:
            work(index)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sera-svg") as pool:
            try:
                list(pool.map(work, pending))
            except BaseException:
                ctx.cancel.set()  # Ctrl-C reaches only this thread: stop the others too
                raise
    return [records[i] for i in sorted(records)]


def generate(ctx: SVGContext, index: int, fn: Function) -> Record:
    """The whole SVG pipeline for one function; failures become a record, never an exception."""
    record: Record = {"index": index, "function": asdict(fn), "attempts": [], "tokens_in": 0,
                      "tokens_out": 0, "seconds": 0.0, "recall": None, "status": "running"}
    started = time.time()
    try:
        _rollout1_until_checked(ctx, index, fn, record)
        if record["status"] == "running":
            _rollout2_and_verify(ctx, index, record)
    except SeraError as error:  # an unreachable teacher, a vanished repository: recorded, not fatal
        record.update(status="failed", reason=str(error))
    record["seconds"] = round(time.time() - started, 2)
    return record


def _rollout1_until_checked(ctx: SVGContext, index: int, fn: Function, record: Record) -> None:
    rng = random.Random(f"{ctx.settings.specialize.seed}:{index}")
    temperature = ctx.settings.model.temperature
    for attempt in range(ctx.settings.specialize.self_check_attempts):
        request = teacher.rollout1_request(fn.qualified_name, fn.path, rng)
        path = ctx.run_dir / "trajectories" / f"{index:05d}-t1-{attempt}.json"
        t1 = _run(ctx, request, path, record, {"role": "t1", "function": fn.qualified_name})
        entry = {"request": request, "trajectory": str(path), "status": t1.status,
                 "changed_lines": len(changed_lines(t1.patch)), "self_check": None}
        record["attempts"].append(entry)
        if t1.status == "model_error":
            raise SeraError(f"the teacher failed during rollout 1: {t1.meta.get('exit_message')}")
        if entry["changed_lines"] == 0:
            continue  # a P1 with no changed lines cannot be verified: SERA rejects it
        verdict, completion = teacher.self_check(ctx.teacher, request, t1.messages, t1.patch,
                                                 temperature)
        _count(record, completion)
        entry["self_check"] = verdict
        if verdict:
            record.update(request=request, t1=str(path), p1=t1.patch)
            return
    record.update(status="no_valid_rollout1",
                  reason=f"no rollout 1 passed the self-check in {len(record['attempts'])} attempts")


def _rollout2_and_verify(ctx: SVGContext, index: int, record: Record) -> None:
    key = _p1_key(record["p1"])
    with ctx.lock:
        duplicate = key in ctx.seen_p1
        ctx.seen_p1.add(key)
    if duplicate:
        record.update(status="duplicate_p1", reason="the same change was made for another function")
        return
    t1 = Trajectory.load(Path(record["t1"]))
    example = random.Random(f"{ctx.settings.specialize.seed}:{index}:issue").choice(ctx.examples)
    issue, completion = teacher.synthetic_issue(ctx.teacher, t1.messages, record["p1"], example,
                                                ctx.settings.model.temperature)
    _count(record, completion)
    record["issue"] = issue
    path = ctx.run_dir / "trajectories" / f"{index:05d}-t2.json"
    t2 = _run(ctx, issue, path, record, {"role": "t2", "function": record["function"]["name"]})
    if t2.status == "model_error":
        raise SeraError(f"the teacher failed during rollout 2: {t2.meta.get('exit_message')}")
    recall = line_recall(record["p1"], t2.patch)
    accepted = recall is not None and recall >= ctx.settings.specialize.recall_threshold
    record.update(t2=str(path), p2=t2.patch, t2_status=t2.status, recall=recall,
                  status="accepted" if accepted else "rejected",
                  reason="" if accepted else f"recall {recall} below the threshold")


def _run(ctx: SVGContext, task: str, path: Path, record: Record, meta: dict) -> Trajectory:
    trajectory, _ = rollout(ctx.repo_root, ctx.commit, task, ctx.teacher, ctx.settings, path,
                            meta={"source": "svg", **meta}, cancel=ctx.cancel)
    if trajectory.status == "interrupted":
        raise _Cancelled()
    record["tokens_in"] += int(trajectory.meta.get("prompt_tokens", 0))
    record["tokens_out"] += int(trajectory.meta.get("completion_tokens", 0))
    return trajectory


def _count(record: Record, completion: Completion) -> None:
    record["tokens_in"] += completion.prompt_tokens
    record["tokens_out"] += completion.completion_tokens


def _p1_key(patch: str) -> str:
    """Two P1s are the same change when their changed lines are the same."""
    return "\n".join(changed_lines(patch))


def _read(path: Path) -> Record:
    return json.loads(path.read_text("utf-8"))


class _Cancelled(Exception):
    """A rollout was stopped by Ctrl-C in another thread: the function gets no record, so a resumed
    run does it again."""
