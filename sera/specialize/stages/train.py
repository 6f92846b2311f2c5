"""Stage 5, train: LoRA fine-tuning of the student on `dataset.jsonl`.

    sera specialize . --stage train

The student is `model.spec` as a transformers folder (a GGUF is dequantized once). Measures the
mean negative log-likelihood of the held-out history trajectories with the base model, trains,
measures it again with the adapter, and saves the adapter with its card in
`.sera/adapters/<run id>/` (the newest adapter is what `sera solve` uses by default). The card's
`scaffold` is the scaffold the SVG rollouts of the kept rows ran in (their trajectories'
meta["scaffold"]; `--scaffold auto` runs the adapter in it), "agent" when only history replays
(written with the agent's tools) were kept; `scaffold_rows` counts the rows of each format.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

from sera.agent.trajectory import Trajectory
from sera.config import TrainConfig
from sera.paths import adapters_dir
from sera.specialize.lora import mean_nll, train_lora, update_card
from sera.specialize.rows import load_rows
from sera.specialize.student import student_folder


def run(run) -> dict:
    rows = load_rows([run.dir / "dataset.jsonl"])
    if not rows:
        reason = ("no training rows were kept, so no adapter was trained: sample more functions "
                  "(--functions), give the agent more steps (--max-steps), or use a stronger "
                  "teacher (--teacher)")
        run.say(f"train: {reason}")
        return {"skipped": reason}
    heldout = load_rows([run.dir / "heldout.jsonl"])
    folder = student_folder(run.settings.model.spec)
    config = dataclasses.replace(run.settings.train,
                                 max_tokens=run.settings.specialize.context_tokens)
    out_dir = adapters_dir(run.repo_root) / run.id
    nll_before = _heldout_nll(run, folder, heldout, None, config)
    advance = run.bar("training", 1)

    def show(info: dict) -> None:
        said = [f"loss {info['loss']:.3f}" if info["loss"] is not None else "first step"]
        if "tokens_per_second" in info:
            said.append(f"{info['tokens_per_second']:.0f} tok/s")
        advance(0, total=info["steps"], completed=info["step"], info=", ".join(said))

    result = train_lora(folder, rows, out_dir, config, progress=show)
    nll_after = _heldout_nll(run, folder, heldout, out_dir, config)
    stats = {"rows": len(rows), "examples": result.examples, "steps": result.steps,
             "first_loss": result.losses[0], "last_loss": result.losses[-1],
             "tokens_per_second": round(result.tokens_per_second, 1),
             "heldout_rows": len(heldout), "heldout_nll_base": nll_before,
             "heldout_nll_adapter": nll_after, "adapter": str(out_dir)}
    svg = run.stage("rollouts").get("stats", {})
    update_card(out_dir, run=run.id, snapshot=run.manifest["snapshot"],
                student=run.settings.model.spec,
                accept_rate=round(svg.get("accepted", 0) / svg["records"], 3) if svg.get("records") else None,
                teacher=run.settings.specialize.teacher or run.settings.model.spec,
                svg=svg, dataset=run.stage("dataset").get("stats", {}),
                **_scaffolds(run.dir / "dataset-meta.jsonl"),
                heldout={"rows": len(heldout), "nll_base": nll_before, "nll_adapter": nll_after})
    run.say("train: " + json.dumps(stats))
    return stats


def _heldout_nll(run, folder: Path, heldout: list, adapter: Path | None,
                 config: TrainConfig) -> float | None:
    """mean_nll of the held-out rows (None without any), in training's device and dtype, with a
    bar: on a CPU it takes minutes."""
    if not heldout:
        return None
    advance = run.bar("held-out", 1)
    return mean_nll(folder, heldout, adapter, config.max_tokens, device=config.device,
                    precision=config.precision, progress=lambda done, total: advance(
        0, total=total, completed=done, info="loss before training" if adapter is None
        else "loss with the adapter"))


def _scaffolds(meta_file: Path) -> dict:
    """{"scaffold": ..., "scaffold_rows": {scaffold: rows}} of the kept rows (dataset-meta.jsonl
    names each row's trajectory; one without meta["scaffold"] is in the agent's format); {} when
    that file is missing. Mixed SVG rollouts (a run resumed with another scaffold): the most
    rows' scaffold, ties to agent."""
    if not meta_file.is_file():
        return {}
    rows: Counter = Counter()
    rollouts: Counter = Counter()
    for line in filter(str.strip, meta_file.read_text("utf-8").splitlines()):
        row = json.loads(line)
        if not row.get("path") or not Path(row["path"]).is_file():
            continue
        scaffold = Trajectory.load(Path(row["path"])).meta.get("scaffold", "agent")
        rows[scaffold] += 1
        if row.get("source") != "history":
            rollouts[scaffold] += 1
    if not rows:
        return {}
    counts = rollouts or rows
    return {"scaffold": max(sorted(counts), key=lambda name: counts[name]),
            "scaffold_rows": dict(sorted(rows.items()))}
