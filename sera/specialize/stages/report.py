"""Stage 8, report: what the run cost and produced, as a table and as `report.json`.

    sera specialize . --stage report

Sums tokens and seconds over every rollout record (per trajectory and per accepted trajectory;
money when `price_per_million_in/out` are set), and gathers each stage's stats (the reranker's
self-training rounds, the policy stage and the held-out comparisons one row each). The loss curves are `loss.png` beside
the adapter and the reranker.
"""

from __future__ import annotations

import json

from sera.paths import atomic_write_json


def run(run) -> dict:
    config = run.settings.specialize
    records = [json.loads(p.read_text("utf-8")) for p in sorted((run.dir / "rollouts").glob("*.json"))]
    accepted = [r for r in records if r["status"] == "accepted"]
    tokens_in = sum(r["tokens_in"] for r in records)
    tokens_out = sum(r["tokens_out"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    trajectories = sum(len(r["attempts"]) + ("t2" in r) for r in records)
    cost = {"functions": len(records), "accepted": len(accepted),
            "accept_rate": round(len(accepted) / len(records), 3) if records else 0.0,
            "trajectories": trajectories, "tokens_in": tokens_in, "tokens_out": tokens_out,
            "seconds": round(seconds, 1),
            "tokens_per_trajectory": round((tokens_in + tokens_out) / max(trajectories, 1)),
            "seconds_per_accepted": round(seconds / len(accepted), 1) if accepted else None}
    if config.price_per_million_in or config.price_per_million_out:
        money = (tokens_in * config.price_per_million_in + tokens_out * config.price_per_million_out) / 1e6
        cost.update(money=round(money, 4), money_per_accepted=round(money / len(accepted), 4) if accepted else None)
    stages = {name: stage.get("stats", {}) for name, stage in run.manifest["stages"].items()}
    report = {"run": run.id, "cost": cost, "stages": stages,
              "recalls": [r["recall"] for r in records if r["recall"] is not None]}
    atomic_write_json(run.dir / "report.json", report)
    _print_table(run, report)
    return cost


def _print_table(run, report: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"sera specialize {run.id}")
    table.add_column("stage")
    table.add_column("figures")
    for name, stats in report["stages"].items():
        if name == "reranker" and "rounds" in stats:
            for row in _reranker_rows(stats):
                table.add_row(*row)
        elif name == "policy" and "policy" in stats:
            for row in _policy_rows(stats):
                table.add_row(*row)
        elif stats:
            table.add_row(name, ", ".join(f"{k} {_fmt(v)}" for k, v in stats.items()))
    table.add_row("cost", ", ".join(f"{k} {_fmt(v)}" for k, v in report["cost"].items()))
    Console(stderr=True).print(table)


def _reranker_rows(stats: dict) -> list[tuple[str, str]]:
    """The reranker: its totals, one row per round, the held-out comparison."""
    totals = {k: v for k, v in stats.items() if k not in ("rounds", "heldout")}
    rows = [("reranker", ", ".join(f"{k} {_fmt(v)}" for k, v in totals.items()))]
    rows += [_round_row(r) for r in stats["rounds"]]
    return rows + _heldout_rows(stats.get("heldout"))


def _policy_rows(stats: dict) -> list[tuple[str, str]]:
    """The policy stage: GRPO's figures, its hard-negative round, the held-out comparison again."""
    policy = stats["policy"]
    rows = [("policy", f"{policy['steps']} GRPO steps on {policy['tasks']} tasks, "
                       f"{_fmt(policy['seconds_per_step'])} s a step, reward "
                       f"{_fmt(policy['reward_before'])} -> {_fmt(policy['reward_after'])}, "
                       f"adapter {policy['adapter']}")]
    return rows + [_round_row(stats["round"])] + _heldout_rows(stats.get("heldout"))


def _round_row(r: dict) -> tuple[str, str]:
    added = (f"+{r['hard_negatives']} hard negatives, +{r['positives']} positives "
             f"({r['succeeded']}/{r['sampled']} sampled succeeded), " if r["round"] else "")
    return (f"  round {r['round']}" + (" (policy)" if r.get("policy") else ""),
            f"{added}{r['rows']} rows, {r['pairs']} pairs, "
            f"pair accuracy {_fmt(r['pair_accuracy'])}")


def _heldout_rows(heldout: dict | None) -> list[tuple[str, str]]:
    if not heldout or not heldout.get("top1"):
        return []
    shares = ", ".join(f"{m} {heldout[m]['solved']:.2f}/{heldout[m]['recall']:.2f}"
                       for m in ("top1", "random", "majority", "oracle"))
    return [("  held out", f"{heldout['tasks']} tasks, solved/recall@1: {shares}; "
                           f"AUC {_fmt(heldout['auc'])}")]


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
