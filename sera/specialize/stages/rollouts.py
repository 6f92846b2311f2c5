"""Stage 3, rollouts: Soft Verified Generation from each sampled function (svg.py).

    sera specialize . --stage rollouts

Loads the teacher, then for each function in `functions.json` that has no record yet: rollout 1,
self-check, synthetic issue, rollout 2, line-level recall. Records land in `rollouts/`, trajectories
in `trajectories/`; a killed run resumes with the functions that have no record.
"""

from __future__ import annotations

import json
import time

from sera.agent.sourcecode import Function
from sera.specialize.svg import SVGContext, run_svg
from sera.specialize.teacher import example_issues


def run(run) -> dict:
    config = run.settings.specialize
    functions = [Function(**f) for f in json.loads((run.dir / "functions.json").read_text("utf-8"))]
    if not functions:  # nothing sampled: no teacher to load
        run.say("rollouts: no function was sampled")
        return {"records": 0, "skipped_for_time": 0}
    ctx = SVGContext(run.repo_root, run.manifest["snapshot"], run.dir, run.teacher(), run.settings,
                     example_issues(run.repo_root),
                     deadline=time.time() + config.time_budget if config.time_budget else None)
    if run.cancel is not None:  # an editor's cancel stops the rollouts within their step
        ctx.cancel = run.cancel
    advance = run.bar("rollouts", len(functions))
    tally = {"accepted": 0, "done": 0, "tokens_out": 0}
    started = time.time()

    def on_record(record: dict) -> None:
        tally["done"] += 1
        tally["accepted"] += record["status"] == "accepted"
        tally["tokens_out"] += record["tokens_out"]
        rate = tally["tokens_out"] / max(time.time() - started, 1e-9)
        advance(info=f"accepted {tally['accepted']}/{tally['done']}, {rate:.1f} tok/s")

    already = sum(1 for i in range(len(functions)) if (run.dir / "rollouts" / f"{i:05d}.json").exists())
    advance(already)
    records = run_svg(ctx, functions, on_record)
    run.check_cancel()  # a cancelled run_svg returns early: the stage is not done
    statuses = [r["status"] for r in records]
    stats = {status: statuses.count(status) for status in sorted(set(statuses))}
    stats["records"] = len(records)
    stats["skipped_for_time"] = len(functions) - len(records)
    run.say("rollouts: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        run.say(f"warning: {len(failed)} rollouts failed (the first: {failed[0]['reason']}); "
                f"once that is fixed, sera specialize --resume {run.id} tries them again")
    return stats
