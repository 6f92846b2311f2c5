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
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sera.agent.tools import ToolEnvironment
from sera.agent.guided import GuidedAgent  # noqa: E402
from sera.agent.localize import VIEW_POOL, localize, pick_view  # noqa: E402
from sera.agent.sourcecode import list_source_files  # noqa: E402
from sera.agent.trajectory import Trajectory  # noqa: E402
from sera.agent.workcopy import WorkCopy, find_repo_root  # noqa: E402
from sera.config import load_settings  # noqa: E402
from sera.models.adapters import resolve_adapter  # noqa: E402
from sera.models.registry import load_model  # noqa: E402
from sera.specialize.mining import mine_history  # noqa: E402
from sera.specialize.recall import line_recall  # noqa: E402


HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@")


def touched_lines(patch: str) -> dict[str, set[int]]:
    """Per file, the lines of the old version that the patch changes: removed lines, and for an
    insertion the lines on both sides of it (an insertion belongs to the code around it)."""
    touched: dict[str, set[int]] = {}
    path, line = None, 0
    for text in patch.splitlines():
        if text.startswith("--- "):
            path = None
        elif text.startswith("+++ "):
            path = text[6:] if text.startswith("+++ b/") else None
        elif (match := HUNK.match(text)) and path:
            line = int(match.group(1)) if match.group(2) != "0" else int(match.group(1)) + 1
        elif path and text.startswith("-"):
            touched.setdefault(path, set()).add(line)
            line += 1
        elif path and text.startswith("+"):
            touched.setdefault(path, set()).update({line - 1, line})
        elif path and text.startswith(" "):
            line += 1
    return touched


def _hit(locations, touched: dict[str, set[int]]) -> bool:
    return any(any(loc.start_line <= n <= loc.end_line for n in touched.get(loc.path, ()))
               for loc in locations)


def localization(repo: Path, tasks) -> dict[str, float]:
    """Shares of tasks where the localizer finds the code the real commit changed: a changed line
    inside the top-ranked function, inside a function shown to candidate 0 or to candidate 1, a
    changed file among the top 5 files, and (the baseline) among 5 random files."""
    rows = {"top-1 function": [], "candidate 0 view": [], "candidate 1 view": [],
            "either view": [], "top-1 file": [], "file in top 5": [], "5 random files": []}
    rng = random.Random(0)
    for task in tasks:
        touched = touched_lines(task.patch)
        with WorkCopy.create(repo, task.parent) as wc:
            ranked = localize(wc.path, task.message, limit=VIEW_POOL * 5)
            views = [pick_view(ranked, candidate, 5).locations for candidate in (0, 1)]
            files = list_source_files(wc.path)
        rows["top-1 function"].append(_hit(ranked[:1], touched))
        rows["candidate 0 view"].append(_hit(views[0], touched))
        rows["candidate 1 view"].append(_hit(views[1], touched))
        rows["either view"].append(_hit(views[0] + views[1], touched))
        rows["top-1 file"].append(bool(ranked) and ranked[0].path in task.files)
        rows["file in top 5"].append(bool({loc.path for loc in ranked[:5]} & set(task.files)))
        rows["5 random files"].append(bool(set(rng.sample(files, min(5, len(files))))
                                           & set(task.files)))
    return {name: statistics.mean(hits) for name, hits in rows.items()}


def guided_recall(repo: Path, tasks, model, settings, adapter: str | None) -> list[float]:
    recalls = []
    for task in tasks:
        with WorkCopy.create(repo, task.parent) as wc:
            trajectory = Trajectory(meta={})
            GuidedAgent(model, ToolEnvironment(wc, settings.agent), trajectory, settings.agent,
                        settings.model, adapter=adapter).run(task.message)
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
    shares = localization(repo, tasks)
    print("localization, share of tasks (" + f"{time.perf_counter() - start:.1f} s): "
          + ", ".join(f"{name} {share:.0%}" for name, share in shares.items()))
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
