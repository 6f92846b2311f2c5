"""The guided scaffold on held-out fix commits of a real repository (history tasks of the miner).

    python bench/bench_guided.py [--repo .] [--tasks 10] [--model embedded] [--adapter NAME]
    python bench/bench_guided.py --localize-only

For each task (the newest small commits: message = task, diff = reference), in a work copy of the
commit's parent: is an edited file among the localizer's top 5 (against the chance of 5 random
files, measured the same way), and the line-level recall of the guided patch against the real
commit, for the model without and, with --adapter, with the adapter (printed as a ratio).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sera.agent.guided import GuidedAgent  # noqa: E402
from sera.agent.localize import localize  # noqa: E402
from sera.agent.sourcecode import list_source_files  # noqa: E402
from sera.agent.trajectory import Trajectory  # noqa: E402
from sera.agent.workcopy import WorkCopy, find_repo_root  # noqa: E402
from sera.config import load_settings  # noqa: E402
from sera.models.adapters import resolve_adapter  # noqa: E402
from sera.models.registry import load_model  # noqa: E402
from sera.specialize.history import mine_history  # noqa: E402
from sera.specialize.recall import line_recall  # noqa: E402


def localization(repo: Path, tasks) -> tuple[float, float]:
    """(share of tasks with an edited file in the top 5, the same share for 5 random files)."""
    hits, chance = [], []
    rng = random.Random(0)
    for task in tasks:
        with WorkCopy.create(repo, task.parent) as wc:
            top = {loc.path for loc in localize(wc.path, task.message, limit=5)}
            files = list_source_files(wc.path)
        hits.append(bool(top & set(task.files)))
        chance.append(bool(set(rng.sample(files, min(5, len(files)))) & set(task.files)))
    return statistics.mean(hits), statistics.mean(chance)


def guided_recall(repo: Path, tasks, model, settings, adapter: str | None) -> list[float]:
    recalls = []
    for task in tasks:
        with WorkCopy.create(repo, task.parent) as wc:
            trajectory = Trajectory(meta={})
            GuidedAgent(model, wc, trajectory, settings.agent, settings.model, adapter=adapter).run(task.message)
        recalls.append(line_recall(task.patch, trajectory.patch) or 0.0)
    return recalls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", default=".")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--adapter", default="")
    parser.add_argument("--localize-only", action="store_true")
    args = parser.parse_args()
    repo = find_repo_root(Path(args.repo))
    tasks = [t for t in mine_history(repo, limit=args.tasks * 3) if any(
        f.endswith((".py", ".js", ".ts", ".go", ".rs", ".java")) for f in t.files)][:args.tasks]
    print(f"{len(tasks)} held-out fix commits of {repo} (newest first)")
    start = time.perf_counter()
    hit, chance = localization(repo, tasks)
    print(f"edited file in the localizer's top 5: {hit:.0%} of tasks; 5 random files: {chance:.0%}"
          f" ({time.perf_counter() - start:.1f} s)")
    if args.localize_only or not tasks:
        return
    settings = load_settings(repo, {"model.spec": args.model, "model.temperature": 0.0})
    model = load_model(args.model, settings.model)
    try:
        base = guided_recall(repo, tasks, model, settings, None)
        print(f"guided patch recall of the real commit, {args.model}: mean {statistics.mean(base):.3f}")
        if args.adapter:
            adapter = resolve_adapter(repo, args.adapter, args.model)
            tuned = guided_recall(repo, tasks, model, settings, adapter)
            ratio = statistics.mean(tuned) / max(statistics.mean(base), 1e-9)
            print(f"with adapter {args.adapter}: mean {statistics.mean(tuned):.3f} ({ratio:.2f}x base)")
    finally:
        model.close()


if __name__ == "__main__":
    main()
