"""Stage 2, history: the repository's own small commits as teacher-free tasks.

    sera specialize . --stage history

Mines up to `history_tasks` commits of at most `max_patch_lines` changed non-test lines (the commit
message is the task, its diff the reference patch), holds out the newest `heldout_fraction` for
evaluation, and writes each as a trajectory in the format the student solves in: a guided exchange
answered by the commit's edit when it runs in the guided scaffold (guided_rows.py; the embedded
models), else a replay with the agent's real tools. Writes `history/tasks.json`,
`history/train/*.json` and `history/heldout/*.json`.
"""

from __future__ import annotations

from dataclasses import asdict

from sera.paths import atomic_write_json
from sera.specialize.guided_rows import guided_history_trajectory, writes_guided_rows
from sera.specialize.mining import mine_history, reconstruct_trajectory, split_by_date


def run(run) -> dict:
    config = run.settings.specialize
    tasks = mine_history(run.repo_root, config.max_patch_lines, limit=config.history_tasks)
    train, heldout = split_by_date(tasks, config.heldout_fraction) if tasks else ([], [])
    folder = run.dir / "history"
    atomic_write_json(folder / "tasks.json", {"train": [asdict(t) for t in train],
                                              "heldout": [asdict(t) for t in heldout]})
    advance = run.bar("history", len(tasks))
    replayed = {"train": 0, "heldout": 0}
    guided = writes_guided_rows(run.settings)
    for split, split_tasks in (("train", train), ("heldout", heldout)):
        for task in split_tasks:
            if guided:
                trajectory = guided_history_trajectory(run.repo_root, task, run.settings)
            else:
                trajectory = reconstruct_trajectory(run.repo_root, task, run.settings.agent)
            if trajectory is not None:
                trajectory.path = folder / split / f"{task.commit[:12]}.json"
                trajectory.save()
                replayed[split] += 1
            advance()
    stats = {"format": "guided" if guided else "agent", "tasks": len(tasks),
             "train": replayed["train"], "heldout": replayed["heldout"],
             "not_replayable": len(tasks) - sum(replayed.values())}
    run.say("history: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return stats
