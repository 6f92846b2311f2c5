"""Stage 6, report: what the run cost and produced, as a table and as `report.json`.

    sera specialize . --stage report

Sums tokens and seconds over every rollout record (per trajectory and per accepted trajectory;
money when `price_per_million_in/out` are set), and gathers each stage's stats. The loss curve is
`loss.png` beside the adapter.
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
        if stats:
            table.add_row(name, ", ".join(f"{k} {_fmt(v)}" for k, v in stats.items()))
    table.add_row("cost", ", ".join(f"{k} {_fmt(v)}" for k, v in report["cost"].items()))
    Console(stderr=True).print(table)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
