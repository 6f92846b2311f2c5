"""The candidate pools of reranker self-training (METHODS.md section 2): which tasks, which
candidates, which labels; as `TaskGroup`s in JSONL files under `<run>/reranker/`.

Round 0 needs no sampling, only what the run already has. Each SVG record with a P1 and an issue
is a task (the issue; P1 the reference) with P1 itself (recall 1.0, source reference), P2 (its
recall, rollout2) and a few other tasks' references as easy negatives (P1's recall in them, usually
0; other_task). Each training history task (the commit message; the real commit the reference) has
the commit itself and other tasks' references. Later rounds sample the current agent:
`sample_round` runs `samples` rollouts per task and labels them (`Labeler`: recall of the
reference, plus the test command when one resolves), and `mine_hard_negatives` keeps the
top-scored failing candidates and every new success (RewardRanker: hard negatives plus new
positives beat hard negatives alone).

    train, heldout = pool_tasks(run_dir, snapshot, heldout_fraction=0.2, seed=0)
    pool = round0_groups(train, seed=0)
    sampled = sample_round(pick_tasks(train, 20, seed=0, round_index=1), sampler, 4,
                           run_dir / "reranker" / "sampled-r1.jsonl", source="sampled-r1")
    pool = merge_rows(pool, mine_hard_negatives(sampled, scores, k=2, recall_threshold=0.5), 1)

Every pool file is rewritten atomically after each task, so a resumed run samples only the tasks
it does not have yet.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from sera.agent.checks import tests_pass
from sera.agent.rollout import rollout
from sera.config import AgentConfig, Settings
from sera.diff import normalize
from sera.errors import SeraError
from sera.models.base import ChatModel
from sera.paths import atomic_write_text
from sera.reranker.labels import LabeledPatch, TaskGroup
from sera.specialize.mining import HistoryTask
from sera.specialize.recall import line_recall

EASY_NEGATIVES = 2  # other tasks' references added to each round-0 task


@dataclass
class PoolTask:
    task_id: str      # svg-<record index> or history-<commit[:12]>
    task: str         # what the agent is given: the synthetic issue or the commit message
    reference: str    # P1, or the commit's patch
    commit: str       # where the agent starts: the run's snapshot, or the commit's parent
    split: str = "train"
    known: list[LabeledPatch] = field(default_factory=list)  # the run's own candidates (rollout 2)


# --- tasks and round 0 -------------------------------------------------------------------------

def pool_tasks(run_dir: Path, snapshot: str, heldout_fraction: float,
               seed: int) -> tuple[list[PoolTask], list[PoolTask]]:
    """(training tasks, held-out tasks): SVG records with a P1 and an issue, a `heldout_fraction`
    share of them held out (chosen with `seed`), plus the history stage's two splits."""
    svg = _svg_tasks(Path(run_dir), snapshot)
    held = set(random.Random(f"{seed}:rerank-heldout").sample(
        [t.task_id for t in svg], round(len(svg) * heldout_fraction)))
    for task in svg:
        task.split = "heldout" if task.task_id in held else "train"
    history = _history_tasks(Path(run_dir))
    train = [t for t in svg if t.split == "train"] + history["train"]
    heldout = [t for t in svg if t.split == "heldout"] + history["heldout"]
    return train, heldout


def round0_groups(tasks: Sequence[PoolTask], seed: int,
                  negatives: int = EASY_NEGATIVES) -> list[TaskGroup]:
    """One group per task: its reference, its known candidates, and `negatives` other tasks'
    references (chosen with `seed`), each labelled by the recall of this task's reference."""
    groups = []
    for task in tasks:
        others = [t.reference for t in tasks if t.task_id != task.task_id
                  and t.reference.strip() != task.reference.strip()]
        picked = random.Random(f"{seed}:{task.task_id}").sample(others, min(negatives, len(others)))
        candidates = [LabeledPatch(task.reference, 1.0, source="reference"), *task.known]
        candidates += [LabeledPatch(p, line_recall(task.reference, p) or 0.0, source="other_task")
                       for p in picked]
        groups.append(TaskGroup(task.task_id, task.task, task.reference, candidates, task.split))
    return groups


def _svg_tasks(run_dir: Path, snapshot: str) -> list[PoolTask]:
    tasks = []
    for path in sorted((run_dir / "rollouts").glob("*.json")):
        record = json.loads(path.read_text("utf-8"))
        if not record.get("p1") or not record.get("issue"):
            continue
        known = []
        if record.get("p2") is not None and record.get("recall") is not None:
            known.append(LabeledPatch(record["p2"], float(record["recall"]), source="rollout2"))
        tasks.append(PoolTask(f"svg-{path.stem}", record["issue"], record["p1"], snapshot,
                              known=known))
    return tasks


def _history_tasks(run_dir: Path) -> dict[str, list[PoolTask]]:
    path = run_dir / "history" / "tasks.json"
    data = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    found: dict[str, list[PoolTask]] = {}
    for split in ("train", "heldout"):
        tasks = [HistoryTask.from_dict(t) for t in data.get(split, [])]
        found[split] = [PoolTask(f"history-{t.commit[:12]}", t.message, t.patch, t.parent, split)
                        for t in tasks]
    return found


# --- sampling and labels ----------------------------------------------------------------------

@dataclass
class Labeler:
    """Labels a candidate of a task: recall of the reference, and the tests when a command is set
    (a patch that changes nothing fails them: it cannot have fixed anything)."""
    repo_root: Path
    test_command: str | None
    agent_config: AgentConfig

    def label(self, task: PoolTask, patch: str, source: str) -> LabeledPatch:
        recall = line_recall(task.reference, patch) or 0.0
        return LabeledPatch(patch, recall, self.tests(task.commit, patch), source)

    def tests(self, commit: str, patch: str) -> bool | None:
        if not self.test_command:
            return None
        if not patch.strip():
            return False
        return tests_pass(self.repo_root, commit, patch, self.test_command, self.agent_config)[0]

    def complete(self, group: TaskGroup, commit: str) -> None:
        """Run the tests on the candidates of `group` that have no result yet (round-0 rows), so
        that within a group the tests either ran for every candidate or for none."""
        if not self.test_command:
            return
        for index, candidate in enumerate(group.candidates):
            if candidate.tests_passed is None:
                group.candidates[index] = replace(candidate,
                                                  tests_passed=self.tests(commit, candidate.patch))


@dataclass
class Sampler:
    """Candidates of the current agent: one rollout each in a fresh work copy of the task's commit
    (numbered as solve numbers its candidates, so the guided scaffold gives each its own view of
    the localization)."""
    repo_root: Path
    model: ChatModel
    settings: Settings
    adapter: str | None
    labeler: Labeler
    trajectories: Path  # where the rollouts' trajectories are saved

    def candidates(self, task: PoolTask, count: int, source: str) -> list[LabeledPatch]:
        found = []
        for index in range(count):
            path = self.trajectories / f"{source}-{task.task_id}-{index}.json"
            trajectory, _ = rollout(self.repo_root, task.commit, task.task, self.model,
                                    self.settings, path, adapter=self.adapter,
                                    meta={"source": "rerank", "task_id": task.task_id,
                                          "role": source, "candidate": index})
            if trajectory.status == "model_error":
                raise SeraError(f"the agent model failed while sampling candidates of "
                                f"{task.task_id}: {trajectory.meta.get('exit_message')}; check "
                                f"the model (--model), then continue with --resume")
            found.append(self.labeler.label(task, trajectory.patch, source))
        return found


def pick_tasks(tasks: Sequence[PoolTask], count: int, seed: int, round_index: int) -> list[PoolTask]:
    """Up to `count` of `tasks`, a different draw each round, in their original order."""
    chosen = set(random.Random(f"{seed}:rerank-round-{round_index}").sample(
        range(len(tasks)), min(count, len(tasks))))
    return [task for i, task in enumerate(tasks) if i in chosen]


def sample_round(tasks: Sequence[PoolTask], sampler: Sampler, count: int, out: Path, source: str,
                 progress: Callable[[], None] | None = None) -> list[TaskGroup]:
    """`count` labelled candidates of each task (source `source`), one group per task. Groups
    already in `out` are kept as they are; `out` is rewritten after each newly sampled task."""
    done = {g.task_id: g for g in read_groups(out)}
    for task in tasks:
        if task.task_id not in done:
            done[task.task_id] = TaskGroup(task.task_id, task.task, task.reference,
                                           sampler.candidates(task, count, source), task.split)
            write_groups(out, [done[t.task_id] for t in tasks if t.task_id in done])
        if progress:
            progress()
    return [done[task.task_id] for task in tasks]


# --- mining and merging -----------------------------------------------------------------------

def mine_hard_negatives(groups: Sequence[TaskGroup], scores: Sequence[Sequence[float]], k: int,
                        recall_threshold: float) -> list[TaskGroup]:
    """Per task: the `k` top-scored failing candidates (hard_negative-...) and every succeeded one
    (positive-...), distinct patches only, each with the score it had; tasks with neither are left
    out. A candidate's source `sampled-r<n>` becomes `hard_negative-r<n>` / `positive-r<n>`.
    An empty patch is never mined: it is no convincing mistake (solve ranks it last unscored)."""
    mined = []
    for group, group_scores in zip(groups, scores, strict=True):
        ranked = sorted(((s, c) for s, c in zip(group_scores, group.candidates) if c.patch.strip()),
                        key=lambda pair: -pair[0])
        failing = _distinct([(s, c) for s, c in ranked if not c.succeeded(recall_threshold)])[:k]
        passing = _distinct([(s, c) for s, c in ranked if c.succeeded(recall_threshold)])
        rows = ([_mined(c, s, "hard_negative") for s, c in failing]
                + [_mined(c, s, "positive") for s, c in passing])
        if rows:
            mined.append(TaskGroup(group.task_id, group.task, group.reference, rows, group.split))
    return mined


def merge_rows(pool: Sequence[TaskGroup], mined: Sequence[TaskGroup],
               round_index: int) -> list[TaskGroup]:
    """`pool` plus the mined rows of round `round_index`, each patch at most once per task; rows
    of that round already in the pool are replaced (merging a round again changes nothing)."""
    suffix = f"-r{round_index}"
    merged = {g.task_id: replace(g, candidates=[c for c in g.candidates
                                                if not c.source.endswith(suffix)])
              for g in pool}
    for group in mined:
        target = merged.setdefault(group.task_id, replace(group, candidates=[]))
        have = {_key(c.patch) for c in target.candidates}
        for candidate in group.candidates:
            if _key(candidate.patch) not in have:
                target.candidates.append(candidate)
                have.add(_key(candidate.patch))
    return list(merged.values())


def count_sources(groups: Sequence[TaskGroup], prefix: str) -> int:
    """How many candidates have a source starting with `prefix` (e.g. hard_negative-r1)."""
    return sum(1 for g in groups for c in g.candidates if c.source.startswith(prefix))


def _mined(candidate: LabeledPatch, score: float, kind: str) -> LabeledPatch:
    return replace(candidate, source=candidate.source.replace("sampled", kind, 1), score=score)


def _distinct(pairs: list[tuple[float, LabeledPatch]]) -> list[tuple[float, LabeledPatch]]:
    seen, kept = set(), []
    for score, candidate in pairs:
        if _key(candidate.patch) not in seen:
            seen.add(_key(candidate.patch))
            kept.append((score, candidate))
    return kept


def _key(patch: str) -> str:
    return normalize(patch)


# --- files ------------------------------------------------------------------------------------

def read_groups(path: Path) -> list[TaskGroup]:
    """The groups of a pool file, one JSON object per line; [] when there is no file yet."""
    path = Path(path)
    if not path.is_file():
        return []
    return [TaskGroup.from_dict(json.loads(line))
            for line in path.read_text("utf-8").splitlines() if line.strip()]


def write_groups(path: Path, groups: Sequence[TaskGroup]) -> None:
    atomic_write_text(Path(path), "".join(json.dumps(g.to_dict()) + "\n" for g in groups))
