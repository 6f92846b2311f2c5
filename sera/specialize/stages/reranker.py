"""Stage 6, reranker: the RewardRanker reranker, trained with iterative self-training.

    sera specialize . --stage reranker

Round 0 trains the reranker (a LoRA reward model on `rerank.base`, default `model.spec`) on what the
run already has: each task's reference, SVG's rollout 2 and other tasks' references
(sera.reranker.pool.round0_groups). Each of `rerank.rounds` self-training rounds then samples
`rerank.samples` candidates for up to `rerank.tasks` training tasks with the current agent
(`model.spec` with this run's adapter), scores them with the current reranker, adds the top
`rerank.hard_negatives` failing candidates per task and every new success, and trains again from
scratch on all rows so far. Last, the held-out tasks (the history stage's held-out split plus a
`specialize.heldout_fraction` share of the SVG tasks, never trained on) get `rerank.samples`
candidates each; the reranker's top-1 is compared with random choice, majority vote and the oracle
(sera.reranker.metrics), its threshold calibrated, and both written into its card.

The reranker is saved in `.sera/reranker/<run id>/` (retrained in place each round). In
`<run>/reranker/`: `train.jsonl` (all training rows), `sampled-r<k>.jsonl`, `heldout.jsonl`,
`rounds.json` (the figures of each finished round) and the rollouts' `trajectories/`; a resumed
run keeps finished rounds and every task already sampled. `sera eval` compares again later.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

from sera.agent.runs import find_run, list_runs
from sera.agent.testcmd import resolve_test_command
from sera.config import RerankTrainConfig, load_settings
from sera.errors import SeraError
from sera.models.local import transformers_folder
from sera.models.registry import load_model
from sera.paths import adapters_dir, atomic_write_json, rerankers_dir
from sera.reranker.labels import TaskGroup
from sera.reranker.metrics import auc, evaluate
from sera.reranker.model import LoraReranker, list_rerankers, resolve_reranker, update_reranker_card
from sera.reranker.pool import (Labeler, PoolTask, Sampler, count_sources, merge_rows,
                                mine_hard_negatives, pick_tasks, pool_tasks, read_groups,
                                round0_groups, sample_round, write_groups)
from sera.reranker.train import group_scores, make_pairs, train_reranker

HELDOUT = "heldout.jsonl"  # the held-out tasks' candidates, sampled with the SFT agent
HELDOUT_POLICY = "heldout-policy.jsonl"  # ... sampled again by the policy stage's agent


def run(run) -> dict:
    settings = run.settings
    folder = run.dir / "reranker"
    train_tasks, heldout_tasks = pool_tasks(run.dir, run.manifest["snapshot"],
                                            settings.specialize.heldout_fraction,
                                            settings.specialize.seed)
    pool = read_groups(folder / "train.jsonl") or round0_groups(train_tasks, settings.specialize.seed)
    if not make_pairs(pool, settings.rerank.min_gap):
        reason = _nothing_to_train(train_tasks)
        run.say(f"reranker: {reason}")
        return {"skipped": reason}
    write_groups(folder / "train.jsonl", pool)
    trainer = RerankerTrainer.for_run(run)
    rounds = read_rounds(folder)
    if 0 not in rounds:
        result = trainer.train(pool, "round 0")
        finish_round(run, rounds, {"round": 0, "rows": _rows(pool), **_trained(result)})
    agent = CurrentAgent(run)
    tasks_by_id = {t.task_id: t for t in train_tasks}
    for index in range(1, settings.rerank.rounds + 1):
        if index not in rounds:
            pool, stats = self_training_round(run, index, pool, train_tasks, tasks_by_id, agent,
                                               trainer)
            finish_round(run, rounds, stats)
    metrics = heldout_comparison(run, heldout_tasks, agent, trainer.out_dir)
    return finish(run, trainer.out_dir, pool, rounds, metrics, len(train_tasks))


def self_training_round(run, index: int, pool: list[TaskGroup], train_tasks: Sequence[PoolTask],
                         tasks_by_id: dict[str, PoolTask], agent: "CurrentAgent",
                         trainer: "RerankerTrainer") -> tuple[list[TaskGroup], dict[str, Any]]:
    """Sample with the current agent, score with the current reranker, add hard negatives and new
    positives, retrain from scratch on every row so far."""
    config, folder = run.settings.rerank, run.dir / "reranker"
    chosen = pick_tasks(train_tasks, config.tasks, run.settings.specialize.seed, index)
    sampled = sample_round(chosen, agent.sampler(), config.samples, folder / f"sampled-r{index}.jsonl",
                           f"sampled-r{index}", progress=run.bar(f"round {index}", len(chosen)))
    scores = trainer.scores(sampled)
    threshold = run.settings.specialize.recall_threshold
    mined = mine_hard_negatives(sampled, scores, config.hard_negatives, threshold)
    before = [g.to_dict() for g in pool]
    pool = merge_rows(pool, mined, index)
    for group in pool:  # groups that gained tested rows: test their earlier rows too
        if any(c.source.endswith(f"-r{index}") for c in group.candidates):
            agent.labeler.complete(group, tasks_by_id[group.task_id].commit)
    write_groups(folder / "train.jsonl", pool)
    successes = [c.succeeded(threshold) for g in sampled for c in g.candidates]
    stats = {"round": index, "tasks": len(sampled), "sampled": len(successes),
             "succeeded": sum(successes),
             "sampled_auc": _round4(auc([s for row in scores for s in row], successes)),
             "hard_negatives": count_sources(pool, f"hard_negative-r{index}"),
             "positives": count_sources(pool, f"positive-r{index}"), "rows": _rows(pool)}
    if [g.to_dict() for g in pool] == before:  # nothing new: the same rows train the same model
        previous = read_rounds(folder)[index - 1]
        return pool, {**stats, **{k: previous[k] for k in _TRAINED}, "retrained": False}
    result = trainer.train(pool, f"round {index}")
    return pool, {**stats, **_trained(result), "retrained": True}


def heldout_comparison(run, tasks: Sequence[PoolTask], agent: "CurrentAgent", out_dir: Path,
             pool_file: str = HELDOUT) -> dict[str, Any] | None:
    """Sample the held-out tasks into `pool_file` (resumably) and compare the reranker with the
    baselines there."""
    if not tasks:
        return None
    groups = sample_round(tasks, agent.sampler(), run.settings.rerank.samples,
                          run.dir / "reranker" / pool_file, pool_file.removesuffix(".jsonl"),
                          progress=run.bar("held out", len(tasks)))
    return score_and_evaluate(out_dir, groups, run.settings)


def score_and_evaluate(reranker_dir: Path, groups: Sequence[TaskGroup], settings) -> dict[str, Any]:
    """The reranker in `reranker_dir` scores `groups`; metrics.evaluate compares it."""
    reranker = LoraReranker.load(reranker_dir, max_tokens=settings.rerank.max_tokens)
    try:
        scores = group_scores(reranker, groups)
    finally:
        reranker.close()
    return evaluate(groups, scores, settings.specialize.recall_threshold, settings.rerank.confidence)


def finish(run, out_dir: Path, pool: list[TaskGroup], rounds: dict[int, dict], metrics,
            train_tasks: int, heldout: str = HELDOUT) -> dict[str, Any]:
    history = [rounds[k] for k in sorted(rounds)]
    threshold = metrics["threshold"] if metrics else None
    update_reranker_card(out_dir, run=run.id, rounds=history, metrics=metrics or {},
                         threshold=threshold, confidence=run.settings.rerank.confidence,
                         recall_threshold=run.settings.specialize.recall_threshold,
                         agent=run.settings.model.spec, heldout_pool=heldout)
    last = history[-1]
    stats = {"tasks": train_tasks, "rows": _rows(pool), "pairs": last["pairs"],
             "pair_accuracy": last["pair_accuracy"], "rounds": history,
             "heldout": metrics, "threshold": threshold, "reranker": str(out_dir)}
    run.say(f"reranker: {out_dir}, {stats['rows']} rows, {stats['pairs']} pairs, "
            f"{len(history) - 1} self-training rounds, held-out "
            + (f"top-1 solved {metrics['top1']['solved']:.2f} vs random "
               f"{metrics['random']['solved']:.2f}" if metrics and metrics["top1"] else "none"))
    return stats


# --- the reranker, trained and scored -----------------------------------------------------------

@dataclasses.dataclass
class RerankerTrainer:
    run: Any
    base_spec: str
    base_folder: Path
    out_dir: Path
    config: RerankTrainConfig

    @classmethod
    def for_run(cls, run) -> "RerankerTrainer":
        base = run.settings.rerank.base or run.settings.model.spec
        config = dataclasses.replace(run.settings.rerank_train,
                                     max_tokens=run.settings.rerank.max_tokens)
        return cls(run, base, transformers_folder(base, "reranker's base model"),
                   rerankers_dir(run.repo_root) / run.id, config)

    def train(self, pool: Sequence[TaskGroup], what: str):
        advance = self.run.bar(f"reranker {what}", 1)
        return train_reranker(self.base_folder, pool, self.out_dir, self.config,
                              base_spec=self.base_spec, min_gap=self.run.settings.rerank.min_gap,
                              progress=lambda info: advance(0, total=info["steps"],
                                                            completed=info["step"],
                                                            info=f"loss {info['loss']:.3f}"))

    def scores(self, groups: Sequence[TaskGroup]) -> list[list[float]]:
        reranker = LoraReranker.load(self.out_dir, max_tokens=self.config.max_tokens)
        try:
            return group_scores(reranker, groups)
        finally:
            reranker.close()


# --- the agent that samples ---------------------------------------------------------------------

class CurrentAgent:
    """The current agent (model.spec with `adapter`, by default this run's adapter when it has one
    for that model), loaded on first use and kept in run.models (closed with the run)."""

    def __init__(self, run, adapter: str | None = None) -> None:
        self.run = run
        self.adapter = adapter or run_adapter(run)
        self._sampler: Sampler | None = None
        command = resolve_test_command(run.repo_root, run.settings.agent.test_command)
        self.labeler = Labeler(run.repo_root, command, run.settings.agent)

    def sampler(self) -> Sampler:
        if self._sampler is None:
            settings = self.run.settings
            if "agent" not in self.run.models:
                self.run.say(f"loading agent {settings.model.spec} ...")
                self.run.models["agent"] = load_model(settings.model.spec, settings.model)
            self._sampler = Sampler(self.run.repo_root, self.run.models["agent"], settings,
                                    self.adapter, self.labeler,
                                    self.run.dir / "reranker" / "trajectories")
        return self._sampler


def run_adapter(run) -> str | None:
    """This run's adapter (`.sera/adapters/<run id>/`) when the train stage made one for model.spec."""
    card_file = adapters_dir(run.repo_root) / run.id / "card.json"
    if not card_file.is_file():
        return None
    card = json.loads(card_file.read_text("utf-8"))
    return str(card_file.parent) if card.get("student") == run.settings.model.spec else None


# --- rounds on disk -----------------------------------------------------------------------------

def read_rounds(folder: Path) -> dict[int, dict[str, Any]]:
    path = folder / "rounds.json"
    rounds = json.loads(path.read_text("utf-8")) if path.is_file() else []
    return {r["round"]: r for r in rounds}


def finish_round(run, rounds: dict[int, dict[str, Any]], stats: dict[str, Any]) -> None:
    rounds[stats["round"]] = stats
    atomic_write_json(run.dir / "reranker" / "rounds.json", [rounds[k] for k in sorted(rounds)])
    run.say("reranker: " + ", ".join(f"{k} {v}" for k, v in stats.items()))


_TRAINED = ("pairs", "steps", "pair_accuracy_before", "pair_accuracy", "seconds")


def _trained(result) -> dict[str, Any]:
    return {"pairs": result.pairs, "steps": result.steps,
            "pair_accuracy_before": _round4(result.accuracy_before),
            "pair_accuracy": _round4(result.accuracy_after), "seconds": round(result.seconds, 1)}


def _rows(groups: Sequence[TaskGroup]) -> int:
    return sum(len(g.candidates) for g in groups)


def _round4(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 4)


def _nothing_to_train(tasks: Sequence[PoolTask]) -> str:
    if not tasks:
        return ("no reranker was trained: the run has no task to learn from (no SVG record with a "
                "synthetic issue, no history task); sample more functions (--functions) or use a "
                "stronger teacher (--teacher)")
    return (f"no reranker was trained: the {len(tasks)} training tasks give no pair of candidates "
            f"whose labels differ by rerank.min_gap; it takes at least two tasks (each task's "
            f"reference is the others' negative): sample more functions (--functions)")


def evaluate_run(repo_root: Path, run_id: str | None, reranker: str) -> dict[str, Any]:
    """`sera eval`: the held-out pool of a specialize run (default: the newest that has one;
    the policy-optimized agent's pool when the policy stage sampled one) scored by a reranker
    (default: the newest for the run's base, else the newest of all)."""
    if run_id:
        manifest = find_run(repo_root, run_id, kind="specialize")
    else:
        pooled = [m for m in list_runs(repo_root)
                  if m.get("kind") == "specialize" and heldout_pool(Path(m["dir"]))]
        if not pooled:
            raise SeraError("no specialize run has held-out candidates yet; run `sera specialize .` "
                            "(its reranker stage samples them)")
        manifest = pooled[0]
    pool = heldout_pool(Path(manifest["dir"]))
    groups = read_groups(pool) if pool else []
    if not groups:
        raise SeraError(f"run {manifest['id']} has no held-out candidates; finish it with "
                        f"`sera specialize --resume {manifest['id']}`")
    settings = load_settings(None, manifest["settings"])
    folder = resolve_reranker(repo_root, reranker, settings.rerank.base or settings.model.spec)
    if folder is None and reranker != "none":
        folder = next((f for f, _ in list_rerankers(repo_root)), None)
    if folder is None:
        raise SeraError("no reranker to evaluate; `sera specialize .` trains one, or name one with "
                        "--reranker NAME")
    metrics = score_and_evaluate(folder, groups, settings)
    return {"run": manifest["id"], "reranker": Path(folder).name, "metrics": metrics,
            "confidence": settings.rerank.confidence, "pool": pool.name}


def heldout_pool(run_dir: Path) -> Path | None:
    """The run's held-out candidates of its final agent: the policy stage's when it sampled them,
    else the reranker stage's; None when neither exists."""
    for name in (HELDOUT_POLICY, HELDOUT):
        if (run_dir / "reranker" / name).is_file():
            return run_dir / "reranker" / name
    return None
