"""Stage 7, policy (opt-in): optimize the agent against the reranker with GRPO, then mine hard
negatives again and retrain the reranker (METHODS.md section 2, steps 3-5).

    sera specialize . --policy-steps 8
    sera specialize --resume RUN --stage policy

Skipped unless `rerank.policy_steps` > 0 (and with --no-reranker). Setup: the reranker stage's
training tasks and reranker, the train stage's adapter (a fresh LoRA when there is none). Then:

1. GRPO (specialize/policy.py) on `rerank.policy_steps` steps of one-shot SEARCH/REPLACE answers
   to the training tasks, reward = the reranker's preference over the task's reference plus line
   recall of the reference. The optimized adapter is saved as `.sera/adapters/<run id>-policy/`
   (its card says `scaffold` guided, the format it was optimized in): the newest adapter for
   `model.spec`, so `sera solve` uses it from now on.
2. One more self-training round (numbered after the reranker stage's), sampled with the optimized
   agent: its top-scored failures become hard negatives, its successes positives, and the reranker
   is retrained on every row so far (in place, `.sera/reranker/<run id>/`).
3. The held-out tasks are sampled again with the optimized agent (`<run>/reranker/
   heldout-policy.jsonl`) and the comparison with random choice, majority vote and the oracle is
   written into the reranker's card, with its recalibrated threshold; `sera eval` reads that pool.

Resumable: a saved policy adapter is not optimized again, a finished round not redone, sampled
tasks not sampled again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sera.paths import adapters_dir
from sera.reranker.model import LoraReranker
from sera.reranker.pool import pool_tasks, read_groups
from sera.specialize.grpo import optimize_policy, policy_tasks
from sera.specialize.stages import reranker as stage
from sera.specialize.student import student_folder


def run(run) -> dict:
    settings = run.settings
    trained = run.stage("reranker").get("stats", {})
    if not trained.get("reranker"):
        reason = ("no policy optimization: the reranker stage trained no reranker to optimize "
                  f"against ({trained.get('skipped', 'see its stats')})")
        run.say(f"policy: {reason}")
        return {"skipped": reason}
    folder = run.dir / "reranker"
    train_tasks, heldout_tasks = pool_tasks(run.dir, run.manifest["snapshot"],
                                            settings.specialize.heldout_fraction,
                                            settings.specialize.seed)
    trainer = stage.RerankerTrainer.for_run(run)
    policy = _optimize(run, train_tasks, trainer.out_dir)

    rounds = stage.read_rounds(folder)
    index = settings.rerank.rounds + 1  # the round after the reranker stage's last
    pool = read_groups(folder / "train.jsonl")
    agent = stage.CurrentAgent(run, adapter=policy["adapter"])
    if index not in rounds:
        pool, stats = stage.self_training_round(
            run, index, pool, train_tasks, {t.task_id: t for t in train_tasks}, agent, trainer)
        stage.finish_round(run, rounds, {**stats, "policy": True})
    metrics = stage.heldout_comparison(run, heldout_tasks, agent, trainer.out_dir,
                                       stage.HELDOUT_POLICY)
    final = stage.finish(run, trainer.out_dir, pool, rounds, metrics, len(train_tasks),
                         heldout=stage.HELDOUT_POLICY)
    return {"policy": policy, "round": rounds[index], "heldout": metrics,
            "threshold": final["threshold"], "reranker": final["reranker"]}


def _optimize(run, tasks, reranker_dir: Path) -> dict[str, Any]:
    """The policy adapter of this run: optimized now, or as an earlier attempt saved it."""
    out_dir = adapters_dir(run.repo_root) / f"{run.id}-policy"
    card_file = out_dir / "card.json"
    if card_file.is_file():
        card = json.loads(card_file.read_text("utf-8"))
        if card.get("run") == run.id and card.get("method") == "grpo":
            return _summary(card, out_dir)

    settings = run.settings
    config = dataclasses.replace(settings.policy, steps=settings.rerank.policy_steps,
                                 seed=settings.specialize.seed)
    problems = policy_tasks(run.repo_root, tasks)
    start = stage.run_adapter(run)
    if "agent" in run.models:  # the sampling agent makes room for policy and reranker
        run.models.pop("agent").close()
    advance = run.bar("policy (GRPO)", config.steps)
    reranker = LoraReranker.load(reranker_dir, max_tokens=settings.rerank.max_tokens)
    try:
        optimize_policy(student_folder(settings.model.spec), Path(start) if start else None,
                        out_dir, problems, reranker.score, config,
                        student_spec=settings.model.spec,
                        card_fields={"run": run.id, "scaffold": "guided",
                                     "reranker": str(reranker_dir)},
                        progress=lambda info: advance(
                            info=f"reward {info['reward']:.3f}, applied {info['applied'] or 0:.2f}"))
    finally:
        reranker.close()
    card = json.loads(card_file.read_text("utf-8"))
    run.say(f"policy: {out_dir}, reward {card['reward_before']:.3f} -> {card['reward_after']:.3f}")
    return _summary(card, out_dir)


def _summary(card: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    training = card.get("training", {})
    return {"adapter": str(out_dir), "steps": training.get("steps"),
            "seconds_per_step": training.get("seconds_per_step"),
            "tasks": card.get("data", {}).get("tasks"),
            "reward_before": card.get("reward_before"), "reward_after": card.get("reward_after"),
            "applied_last": (card.get("applied") or [None])[-1]}
