"""A specialize run: its folder, its manifest, and the order of its stages.

`.sera/runs/<id>/manifest.json` holds the settings the run started with and each stage's status
(pending, running, done, failed) with its stats. Stages write their outputs atomically and mark
themselves done last, so after a kill `sera specialize --resume` redoes at most the stage that was
running, and the rollouts stage skips every function that already has its record.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Callable

from sera.agent.runs import find_run, list_runs, new_run_id, read_manifest, write_manifest
from sera.agent.workcopy import cleanup_stale, ensure_state_dir, snapshot_commit
from sera.config import Settings, apply_device_profile, load_settings
from sera.errors import SeraError
from sera.models.registry import load_model
from sera.paths import claim_run, claimed, runs_dir
from sera.specialize.presets import preset
from sera.specialize.stages import (dataset, functions, history, policy, report, reranker, rollouts,
                                    train)


def _no_training(run: "SpecializeRun") -> bool:
    """Started (or resumed) with --no-train: the run stays without training when resumed,
    from any front end."""
    return bool(run.manifest["options"].get("no_train"))


def _no_reranker(run: "SpecializeRun") -> str | None:
    return "the run was started with --no-reranker" if run.manifest["options"].get(
        "no_reranker") else None


def _no_policy(run: "SpecializeRun") -> str | None:
    if run.settings.rerank.policy_steps > 0:
        return _no_reranker(run)
    return "policy optimization is opt-in: start a run with --policy-steps N"


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: its module's `run(run)` does it."""

    name: str
    module: ModuleType
    # why this run goes without the stage (it is marked done, its stats say why); None: it runs
    without: Callable[["SpecializeRun"], str | None] | None = None
    # the stage needs training: a --no-train run leaves it pending and finishes without it
    trains: bool = False


PIPELINE = [Stage("functions", functions), Stage("history", history),
            Stage("rollouts", rollouts), Stage("dataset", dataset),
            Stage("train", train, trains=True),
            Stage("reranker", reranker, without=_no_reranker, trains=True),
            Stage("policy", policy, without=_no_policy, trains=True),
            Stage("report", report)]
STAGES = [stage.name for stage in PIPELINE]


class Cancelled(SeraError):
    """The run was asked to stop (an editor's cancel); it stops at the next progress tick."""


@dataclass
class SpecializeRun:
    repo_root: Path
    dir: Path
    settings: Settings
    manifest: dict[str, Any]
    say: Callable[[str], None] = print           # one-line progress messages
    progress: Any = None                          # a rich Progress, or None
    models: dict[str, Any] = field(default_factory=dict)  # loaded once, shared by stages
    lock: IO[str] | None = None                   # this process's claim on the run (claim_run)
    cancel: threading.Event | None = None         # set to stop the run at its next progress tick

    @property
    def id(self) -> str:
        return self.manifest["id"]

    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest["stages"][name]

    def save(self) -> None:
        write_manifest(self.dir, self.manifest)

    def teacher(self):
        """The teacher model, loaded on first use."""
        if "teacher" not in self.models:
            spec = self.settings.specialize.teacher or self.settings.model.spec
            self.say(f"loading teacher {spec} ...")
            self.models["teacher"] = load_model(spec, self.settings.model)
        return self.models["teacher"]

    def bar(self, description: str, total: int) -> Callable[..., None]:
        """A progress bar of this stage; returns `advance(n=1, **fields)`, which also stops a
        cancelled run (raises Cancelled)."""
        self.check_cancel()
        task = None if self.progress is None else \
            self.progress.add_task(description, total=total, info="")

        def advance(n=1, **fields) -> None:
            if task is not None:
                self.progress.update(task, advance=n, **fields)
            self.check_cancel()
        return advance

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"specialize run {self.id} was cancelled; continue it with: sera "
                            f"specialize --resume {self.id}")

    def close(self) -> None:
        for model in self.models.values():
            model.close()
        self.models.clear()
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def new_run(repo_root: Path, settings: Settings, commit: str, options: dict[str, Any]) -> SpecializeRun:
    run_id = new_run_id("specialize")
    manifest = {"id": run_id, "kind": "specialize", "status": "running", "created": time.time(),
                "snapshot": commit, "options": options, "settings": _settings_dict(settings),
                "stages": {name: {"status": "pending"} for name in STAGES}}
    run = SpecializeRun(repo_root, runs_dir(repo_root) / run_id, settings, manifest)
    run.save()
    run.lock = claim_run(run.dir, "specialize run")
    return run


def start_run(repo_root: Path, preset_name: str | None, flags: dict[str, Any],
              options: dict[str, Any]) -> SpecializeRun:
    """A new run of the working tree as it is: the preset's settings under `flags` (explicit
    settings win), the GPU's training defaults where training will run on one
    (config.apply_device_profile); `options` are kept in the manifest."""
    chosen = preset(preset_name)
    settings = load_settings(repo_root, {**chosen, **flags})
    for key in set(chosen) - {k for k, v in flags.items() if v is not None}:
        settings.sources[key] = f"preset {preset_name}"
    ensure_state_dir(repo_root)  # a repository that cannot be written to says so first
    apply_device_profile(settings)
    return new_run(repo_root, settings, snapshot_commit(repo_root),
                   {"preset": preset_name, **options})


def outcome(run: SpecializeRun) -> list[str]:
    """What a finished run produced (adapter, reranker, policy adapter), or why not, a line each."""
    lines = [f"run {run.id} saved in {run.dir}"]
    trained = run.stage("train").get("stats", {})
    if trained.get("adapter"):
        lines.append(f"adapter: {trained['adapter']} (sera solve uses the newest adapter)")
    elif trained.get("skipped"):
        lines.append(f"warning: {trained['skipped']}")
    reranked = run.stage("reranker").get("stats", {})
    if reranked.get("reranker"):
        lines.append(f"reranker: {reranked['reranker']} (compare it with: sera eval {run.id})")
    elif reranked.get("skipped") and not run.manifest["options"].get("no_reranker"):
        lines.append(f"warning: {reranked['skipped']}")
    optimized = run.stage("policy").get("stats", {}).get("policy")
    if optimized:
        lines.append(f"policy adapter: {optimized['adapter']} (GRPO reward "
                     f"{optimized['reward_before']:.3f} -> {optimized['reward_after']:.3f}; sera "
                     f"solve uses it as the newest adapter)")
    return lines


def resume_run(repo_root: Path, run_id: str | None) -> SpecializeRun:
    """The run to continue: `run_id` (a prefix is enough) or the newest unfinished one."""
    if run_id:
        manifest = find_run(repo_root, run_id, kind="specialize")
    else:
        runs = _specialize_runs(repo_root)
        unfinished = [m for m in runs if m.get("status") != "done"]
        if not unfinished:
            failed = failed_rollouts(Path(runs[0]["dir"])) if runs else 0
            retry = (f"; run {runs[0]['id']} finished with {failed} failed rollouts: sera "
                     f"specialize --resume {runs[0]['id']} tries them again" if failed else "")
            raise SeraError(f"no unfinished specialize run to resume{retry}; start one with: "
                            f"sera specialize .")
        # the newest one no other process is running (a run in use is named by claim_run below)
        manifest = next((m for m in unfinished if not claimed(Path(m["dir"]))), unfinished[0])
    run_dir = Path(manifest.pop("dir"))
    lock = claim_run(run_dir, "specialize run")
    try:
        manifest = read_manifest(run_dir)
        settings = load_settings(None, _run_settings(manifest))  # as it started, whatever changed since
    except BaseException:
        lock.close()
        raise
    for name in STAGES:  # a run from before a stage was added
        manifest["stages"].setdefault(name, {"status": "pending"})
    if manifest["status"] == "done":
        _reopen_failed_rollouts(run_dir, manifest, lock)
    return SpecializeRun(repo_root, run_dir, settings, manifest, lock=lock)


def _run_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """The settings a run started with, as flags; a run from before training knobs were settings
    kept them as options ("train": {"epochs": 1}, ...)."""
    flags = dict(manifest["settings"])
    for section in ("train", "rerank_train", "policy"):
        for name, value in (manifest.get("options", {}).get(section) or {}).items():
            flags.setdefault(f"{section}.{name}", value)
    return flags


def failed_rollouts(run_dir: Path) -> int:
    """Rollouts of the run that failed (an unreachable or broken teacher): the ones a resume
    tries again."""
    count = 0
    for path in (run_dir / "rollouts").glob("*.json"):
        try:
            count += json.loads(path.read_text("utf-8")).get("status") == "failed"
        except (OSError, ValueError):
            continue
    return count


def _reopen_failed_rollouts(run_dir: Path, manifest: dict[str, Any], lock: IO[str]) -> None:
    """A finished run is resumed only to try its failed rollouts again: the rollouts stage and
    every stage after it run again (the data changes), the rest is kept."""
    if not failed_rollouts(run_dir):
        lock.close()
        raise SeraError(f"specialize run {manifest['id']} is finished and none of its rollouts "
                        f"failed: nothing to resume; start a new one with: sera specialize .")
    for name in STAGES[STAGES.index("rollouts"):]:
        manifest["stages"][name] = {"status": "pending"}
    manifest["status"] = "running"


def run_stages(run: SpecializeRun, only: str | None = None, skip: tuple[str, ...] = ()) -> None:
    """Run every stage not done yet, in order (or just `only`), marking each in the manifest;
    `skip` (tests) and the run's own options (`Stage.trains`, `Stage.without`) leave stages out."""
    cleanup_stale(run.repo_root)  # work copies of a killed earlier process
    skip = (*skip, *(s.name for s in PIPELINE if s.trains and _no_training(run)))
    for stage in PIPELINE:
        status = run.stage(stage.name)["status"]
        if (only and stage.name != only) or stage.name in skip or (status == "done" and not only):
            continue
        _require_earlier_stages(run, stage.name, skip)
        run.check_cancel()
        _run_stage(run, stage)
    if all(run.stage(n)["status"] == "done" or n in skip for n in STAGES):
        run.manifest["status"] = "done"
        run.save()


def _run_stage(run: SpecializeRun, stage: Stage) -> None:
    record = run.stage(stage.name)
    record.update(status="running", started=time.time())
    run.save()
    try:
        reason = stage.without(run) if stage.without else None
        stats = {"skipped": reason} if reason else stage.module.run(run) or {}
    except BaseException as error:
        stopped = isinstance(error, (KeyboardInterrupt, Cancelled))
        record.update(status="interrupted" if stopped else "failed", error=str(error))
        run.manifest["status"] = record["status"]
        run.save()
        raise
    record.update(status="done", finished=time.time(), stats=stats)
    run.save()


def _require_earlier_stages(run: SpecializeRun, name: str, skip: tuple[str, ...]) -> None:
    for earlier in STAGES[:STAGES.index(name)]:
        if earlier not in skip and run.stage(earlier)["status"] != "done":
            raise SeraError(f"stage {name} needs stage {earlier} first; run "
                            f"`sera specialize --resume {run.id}`")


def _specialize_runs(repo_root: Path) -> list[dict[str, Any]]:
    return [m for m in list_runs(repo_root) if m.get("kind") == "specialize"]


def _settings_dict(settings: Settings) -> dict[str, Any]:
    return {key: value for key, value, _, _ in settings.items()}

