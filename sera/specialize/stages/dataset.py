"""Stage 4, dataset: the training rows, filtered, cut to the context and mixed.

    sera specialize . --stage dataset

Rows: rollout 1 and rollout 2 of every accepted function (SVG), and the reconstructed trajectories
of the training history tasks. Dropped: patches over `max_patch_lines` changed lines, replies of
more than `max_answer_blocks` SEARCH/REPLACE blocks, trajectories whose tool outputs average over
`max_tool_output_tokens`; trajectories longer than `context_tokens` are cut after their last
complete assistant turn and kept when the truncation ratio is at least `truncation_threshold`,
most complete first. Then `alpha` mixes in the user's
general data. Writes `dataset.jsonl` (training rows, shuffled), `dataset-meta.jsonl` (line by line
where each row came from) and `heldout.jsonl` (held-out history tasks).
"""

from __future__ import annotations

import json
from pathlib import Path

from sera.agent.trajectory import Trajectory
from sera.paths import atomic_write_text
from sera.specialize.filters import (select_by_truncation, too_long_tool_outputs,
                                     too_many_changed_lines, too_many_edit_blocks,
                                     truncate_to_context)
from sera.specialize.rows import load_rows, mix_rows
from sera.specialize.student import student_folder, token_counter


def run(run) -> dict:
    config = run.settings.specialize
    candidates = _svg_trajectories(run.dir) + _history_trajectories(run.dir / "history" / "train")
    # the student's tokenizer (seconds to load, a conversion the first time) only when needed
    count_tokens = token_counter(student_folder(run.settings.model.spec)) if candidates else len
    rows, dropped = [], {"patch_too_large": 0, "answer_too_long": 0, "tool_output_too_long": 0,
                         "truncated_too_much": 0}
    for trajectory in candidates:
        if too_many_changed_lines(trajectory.patch, config.max_patch_lines):
            dropped["patch_too_large"] += 1
            continue
        if too_many_edit_blocks(trajectory.messages, config.max_answer_blocks):
            dropped["answer_too_long"] += 1
            continue
        if too_long_tool_outputs(trajectory.messages, count_tokens, config.max_tool_output_tokens):
            dropped["tool_output_too_long"] += 1
            continue
        messages, ratio = truncate_to_context(trajectory.messages, config.context_tokens, count_tokens)
        rows.append({"messages": messages, "meta": _row_meta(trajectory, ratio)})
    kept = select_by_truncation(rows, config.truncation_threshold,
                                ratio=lambda row: row["meta"]["truncation_ratio"])
    dropped["truncated_too_much"] = len(rows) - len(kept)
    general = load_rows([config.general_data]) if config.general_data else []
    general = [{"messages": messages, "meta": {"source": "general"}} for messages in general]
    mixed = mix_rows(kept, general, config.alpha, config.seed)
    _write_jsonl(run.dir / "dataset.jsonl", [{"messages": row["messages"]} for row in mixed])
    # line n of dataset-meta.jsonl describes line n of dataset.jsonl
    _write_jsonl(run.dir / "dataset-meta.jsonl", [row["meta"] for row in mixed])
    heldout = _history_trajectories(run.dir / "history" / "heldout")
    _write_jsonl(run.dir / "heldout.jsonl", [{"messages": t.messages, "meta": t.meta} for t in heldout])
    stats = {"candidates": len(candidates), "kept": len(kept), "general": len(mixed) - len(kept),
             "rows": len(mixed), "heldout": len(heldout), **dropped}
    run.say("dataset: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return stats


def _svg_trajectories(run_dir: Path) -> list[Trajectory]:
    """Rollout 1 and rollout 2 of each accepted function, in function order."""
    found = []
    for path in sorted((run_dir / "rollouts").glob("*.json")):
        record = json.loads(path.read_text("utf-8"))
        if record["status"] != "accepted":
            continue
        for role in ("t1", "t2"):
            trajectory = Trajectory.load(Path(record[role]))
            trajectory.meta.update(recall=record["recall"], role=role)
            found.append(trajectory)
    return found


def _history_trajectories(folder: Path) -> list[Trajectory]:
    return [Trajectory.load(path) for path in sorted(folder.glob("*.json"))]


def _row_meta(trajectory: Trajectory, ratio: float) -> dict:
    meta = trajectory.meta
    return {"source": meta.get("source", "svg"), "role": meta.get("role"), "recall": meta.get("recall"),
            "commit": meta.get("commit"), "function": meta.get("function"),
            "truncation_ratio": ratio, "path": str(trajectory.path)}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
