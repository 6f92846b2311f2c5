"""The guided scaffold's edit applier replayed on the replies a `sera bench` recorded (no model).

    python bench/bench_replay_edits.py --repo /path/to/repo [--bench ID] [--config NAME]

For each candidate of the bench (all configurations, or --config), the model's first edit reply
is read as the scaffold reads it (`GuidedAgent.read_edits`) and applied, in a work copy of the
task's parent, twice: all blocks or none with the shown functions as focus (`apply_edits`, the
baseline), and each block on its own (`apply_what_applies`, what the scaffold does). Only the
first reply is replayed: later ones answer feedback that depends on how the first one fared.
Prints, for both, the replies that changed some file and the blocks that landed, with the ratio
to the baseline, and the line recall of the landed change against the real commit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sera.agent.example import without_examples  # noqa: E402
from sera.agent.guided import GuidedAgent  # noqa: E402
from sera.agent.localize import Location  # noqa: E402
from sera.agent.searchreplace import EditError, apply_edits, apply_what_applies  # noqa: E402
from sera.agent.tools import ToolEnvironment  # noqa: E402
from sera.agent.trajectory import Trajectory  # noqa: E402
from sera.agent.workcopy import WorkCopy  # noqa: E402
from sera.config import load_settings  # noqa: E402
from sera.specialize.recall import line_recall  # noqa: E402


def first_reply(candidate: dict) -> str | None:
    """The first answer to the edit request (the conversation after the worked example)."""
    talk = without_examples(candidate["messages"])
    return next((m["content"] for m in talk if m["role"] == "assistant"), None)


def replay(repo: Path, task: dict, candidate: dict, settings) -> dict[str, tuple[int, int, float]]:
    """Per applier: (blocks read, blocks landed, line recall of the change) for the first reply."""
    meta = candidate["meta"]
    shown = [Location(l["path"], l["name"], l["start_line"], l["end_line"], l.get("score", 0.0),
                      l.get("reasons", [])) for l in meta.get("locations", [])]
    focus: dict[str, set[str]] = {}
    for loc in shown:
        focus.setdefault(loc.path, set()).add(loc.name)
    paths = list(dict.fromkeys(loc.path for loc in shown))
    reply = first_reply(candidate)
    results = {}
    for name in ("all or none", "each block"):
        with WorkCopy.create(repo, task["parent"]) as workcopy:
            agent = GuidedAgent(None, ToolEnvironment(workcopy, settings.agent), Trajectory(),
                                settings.agent, settings.model)
            agent.shown = shown
            try:
                edits = agent.read_edits(reply or "", paths[0] if len(paths) == 1 else None)
            except EditError:
                results[name] = (0, 0, 0.0)
                continue
            if name == "all or none":
                try:
                    apply_edits(workcopy.path, edits, None, focus=focus)
                    landed = len(edits)
                except EditError:
                    landed = 0
            else:
                landed = len(edits) - len(apply_what_applies(workcopy.path, edits, focus).failed)
            patch = workcopy.diff()
            recall = line_recall(task["patch"], patch) or 0.0  # as sera bench scores it
            results[name] = (len(edits), landed, recall)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--bench", default="", help="bench id; the newest by default")
    parser.add_argument("--config", default="", help="one configuration; all by default")
    args = parser.parse_args()
    repo = args.repo.resolve()
    benches = sorted((repo / ".sera" / "bench").glob(args.bench + "*" if args.bench else "*"))
    if not benches:
        sys.exit(f"no bench under {repo / '.sera' / 'bench'}: run `sera bench` there first")
    bench = benches[-1]
    tasks = {t["commit"][:12]: t for t in json.loads((bench / "bench.json").read_text())["tasks"]}
    settings = load_settings(repo)
    totals = {name: [0, 0, 0, 0.0] for name in ("all or none", "each block")}  # replies, read, landed, recall
    counted = 0
    for path in sorted((bench / "runs").glob(f"{args.config or '*'}/*/candidates/*.json")):
        task = tasks.get(path.parent.parent.name)
        candidate = json.loads(path.read_text())
        if task is None or first_reply(candidate) is None:
            continue
        counted += 1
        for name, (read, landed, recall) in replay(repo, task, candidate, settings).items():
            row = totals[name]
            row[0] += landed > 0
            row[1] += read
            row[2] += landed
            row[3] += recall
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    base = totals["all or none"]
    print(f"bench {bench.name}: {counted} first replies ({args.config or 'all configurations'})")
    for name, (replies, read, landed, recall) in totals.items():
        print(f"{name:12}  replies that changed a file {replies:3d} ({replies / max(base[0], 1):.2f}x)"
              f"  blocks landed {landed:3d}/{read} ({landed / max(base[2], 1):.2f}x)"
              f"  mean line recall {recall / max(counted, 1):.3f}")


if __name__ == "__main__":
    main()
