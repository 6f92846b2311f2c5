"""`sera bench`: how well the agent fixes the repository's own held-out commits, per configuration.

    sera bench [--tasks 10] [--candidates 2] [--config NAME[:key=value,...]]... [--resume [ID]]

Setup: the newest small commits that change code become tasks at their parents, verified by
their own tests where they have them (bench_tasks.py); the configurations to compare are fixed
(by default `base`, plus `adapter` and `adapter+reranker` when the repository has them, each
checked not to have trained on a task's commit). All of it goes to `.sera/bench/<id>/bench.json`.

Loop: the (configuration, task) pairs not scored yet, in `bench_order` (configurations that load
the same models take turns task by task): `solve` at the task's parent (candidates in work
copies, ranked as `sera solve` ranks them, the run saved under the bench's folder), then `score`:
the top-ranked patch's test verdict (FAIL_TO_PASS and PASS_TO_PASS pass), its line
recall of the reference, the best recall of any candidate (the oracle), whether it touches a file
of the reference; edit failures, seconds and tokens, and the sera build that scored it. One line
per (configuration, task) is appended to `results.jsonl`, so a killed bench resumes where it
stopped; a configuration another build began is left for that build to finish.

Save: `report.json` and the table (`format_report`): per configuration, resolved (test-verified
tasks) and recall >= 0.5 (the others) kept apart, and each configuration's paired difference from
the first with a bootstrap 95% interval.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from sera.agent.rollout import choose_scaffold
from sera.agent.runs import new_run_id
from sera.agent.session import Session, loaded_keys
from sera.agent.solve import SolveResult, solve
from sera.agent.summary import top_candidate
from sera.agent.workcopy import ensure_state_dir, run_git
from sera.build import build_id
from sera.config import Settings, load_settings
from sera.diff import changed_files
from sera.errors import SeraError
from sera.models.adapters import resolve_adapter
from sera.paths import atomic_write_json, claim_run, state_dir
from sera.reranker.model import resolve_reranker
from sera.specialize.bench_tasks import BenchTask, bench_tasks, bench_test_command, resolves
from sera.specialize.guided_rows import commit_locations
from sera.specialize.mining import HistoryTask
from sera.specialize.recall import line_recall

Note = Callable[[str], None]
PAIRED_SEED = 0  # the seed every configuration samples with, unless one is set
RECALL_SOLVED = 0.5  # a recall-scored task counts as solved from this line recall of the reference
STANDARD_CONFIGS: dict[str, dict[str, Any]] = {
    "base": {"model.adapter": "none", "rerank.reranker": "none"},
    "adapter": {"model.adapter": "", "rerank.reranker": "none"},
    "adapter+reranker": {"model.adapter": "", "rerank.reranker": ""},
}


@dataclass
class Score:
    """One configuration on one task."""

    task: str
    config: str
    kind: str  # the task's kind: tests, recall or broken
    resolved: bool | None  # test-verified tasks: the top-ranked patch passes their tests
    detail: str  # what failed, when it did not resolve
    top1_recall: float  # line recall of the reference by the top-ranked patch
    oracle_recall: float  # the best recall of any candidate
    file_hit: bool  # the top-ranked patch touches a file of the reference
    candidates: int
    edit_failed: int  # candidates whose edits never applied
    empty: int  # candidates without a patch
    seconds: float
    tokens: int
    top_status: str
    build: str = ""  # the sera that scored it (sera.build.build_id); rows before it have ""


def bench_dir(repo_root: Path) -> Path:
    return state_dir(repo_root) / "bench"


# --- setup ----------------------------------------------------------------------------------

def new_bench(repo_root: Path, settings: Settings, flags: dict[str, Any],
              configs: dict[str, dict[str, Any]] | None, note: Note) -> Path:
    """A new bench folder with its tasks and configurations; returns the folder. Unless a seed is
    set, every configuration samples with model.seed PAIRED_SEED: where two configurations show
    the model the same prompt they get the same reply, so their difference is theirs, not the
    sampler's (unseeded, two runs of one configuration differed by 4 of 10 failed edits)."""
    ensure_state_dir(repo_root)
    if settings.model.seed < 0 and "model.seed" not in flags:
        flags = {**flags, "model.seed": PAIRED_SEED}
        note(f"configurations sample with model.seed {PAIRED_SEED} (paired; set model.seed to "
             f"change it)")
    command = bench_test_command(repo_root, settings)
    note(f"test command: {command or 'none (every task is scored by line recall)'}")
    tasks = bench_tasks(repo_root, settings, settings.bench.tasks, progress=note)
    if not tasks:
        raise SeraError("no held-out task: the history has no small commit that changes source "
                        "code (1 to bench.max_changed_lines changed non-test lines, not a release "
                        "or dependency bump)")
    chosen = configs or default_configs(repo_root, settings, flags)
    for name, config_flags in chosen.items():
        check_config(repo_root, load_settings(repo_root, {**flags, **config_flags}), tasks, name,
                     note)
    folder = bench_dir(repo_root) / new_run_id("bench")
    atomic_write_json(folder / "bench.json", {
        "id": folder.name, "created": time.time(), "flags": flags, "test_command": command,
        "configs": chosen, "tasks": [task.to_dict() for task in tasks]})
    return folder


def add_configs(repo_root: Path, folder: Path, configs: dict[str, dict[str, Any]],
                note: Note) -> None:
    """Add configurations to a bench, to be scored on its tasks (those it has keep their
    scores); a name it has with other settings is refused."""
    spec = json.loads((folder / "bench.json").read_text("utf-8"))
    tasks = [BenchTask.from_dict(task) for task in spec["tasks"]]
    for name, config_flags in configs.items():
        if name in spec["configs"] and spec["configs"][name] != config_flags:
            raise SeraError(f"bench {folder.name} already has a configuration {name!r} with "
                            f"other settings ({spec['configs'][name]}); give the new one "
                            f"another name")
        check_config(repo_root, load_settings(repo_root, {**spec["flags"], **config_flags}),
                     tasks, name, note)
        spec["configs"][name] = config_flags
    atomic_write_json(folder / "bench.json", spec)


def default_configs(repo_root: Path, settings: Settings,
                    flags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """base, plus adapter when the model has one, plus adapter+reranker when it has a reranker."""
    chosen = {"base": STANDARD_CONFIGS["base"]}
    spec = settings.model.spec
    if resolve_adapter(repo_root, "", spec):
        chosen["adapter"] = STANDARD_CONFIGS["adapter"]
        if resolve_reranker(repo_root, "", settings.rerank.base or spec):
            chosen["adapter+reranker"] = STANDARD_CONFIGS["adapter+reranker"]
    return chosen


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME` (a standard one) or `NAME:key=value,key=value` (dotted settings) -> (name, flags)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not rest:
        if name not in STANDARD_CONFIGS:
            raise SeraError(f"unknown configuration {name!r}; use one of "
                            f"{', '.join(STANDARD_CONFIGS)} or NAME:key=value,... with settings "
                            f"that `sera config` lists, e.g. small:model.spec=embedded:0.5b")
        return name, dict(STANDARD_CONFIGS[name])
    flags = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals or "." not in key:
            raise SeraError(f"configuration {name!r}: {item!r} is not key=value with a dotted "
                            f"setting, e.g. agent.scaffold=guided")
        flags[key.strip()] = value.strip()
    return name, flags


def check_config(repo_root: Path, settings: Settings, tasks: list[BenchTask], name: str,
                 note: Note) -> None:
    """Refuse a configuration that cannot be scored as asked: one trained on a task's commit,
    an oracle view for a scaffold that shows no view."""
    check_no_leak(repo_root, settings, tasks, name, note)
    if not settings.bench.oracle_view:
        return
    adapter = resolve_adapter(repo_root, settings.model.adapter, settings.model.spec)
    scaffold = choose_scaffold(settings.agent.scaffold, settings.model.spec, adapter)
    if scaffold != "guided":
        raise SeraError(f"configuration {name!r}: bench.oracle_view shows functions to the guided "
                        f"scaffold, and this configuration runs the {scaffold} scaffold; add "
                        f"agent.scaffold=guided or leave bench.oracle_view out")


def check_no_leak(repo_root: Path, settings: Settings, tasks: list[BenchTask], name: str,
                  note: Note) -> None:
    """Refuse a configuration whose adapter or reranker was trained on a snapshot that contains a
    task's commit: it would be scored on what it learned. One whose snapshot is unknown (an
    older card, a run folder gone) is measured with a warning."""
    adapter = resolve_adapter(repo_root, settings.model.adapter, settings.model.spec)
    reranker = resolve_reranker(repo_root, settings.rerank.reranker,
                                settings.rerank.base or settings.model.spec)
    for folder in filter(None, (adapter, reranker)):
        snapshot = training_snapshot(Path(folder))
        if snapshot is None:
            note(f"warning: configuration {name!r}: cannot tell what {Path(folder).name} was "
                 f"trained on (no snapshot in its card or run); its scores may include tasks "
                 f"it learned")
            continue
        seen = [task.id for task in tasks if _is_ancestor(repo_root, task.commit, snapshot)]
        if seen:
            raise SeraError(
                f"configuration {name!r}: {Path(folder).name} was trained on snapshot "
                f"{snapshot[:12]}, which already contains {len(seen)} of the tasks "
                f"({', '.join(seen[:3])}...); to measure it, specialize a checkout from before "
                f"them (git worktree add ../before {tasks[0].parent[:12]}; cd ../before; sera "
                f"specialize .) and pass --config adapter:model.adapter=<that adapter's folder>")


def training_snapshot(folder: Path) -> str | None:
    """The commit a specialize run trained from: its card's `snapshot`, else its run's manifest
    (found beside the adapter's .sera folder); None when neither says."""
    try:
        card = json.loads((folder / "card.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if card.get("snapshot"):
        return str(card["snapshot"])
    manifest = folder.parent.parent / "runs" / str(card.get("run", "")) / "manifest.json"
    try:
        return json.loads(manifest.read_text("utf-8")).get("snapshot")
    except (OSError, ValueError):
        return None


def _is_ancestor(repo_root: Path, commit: str, snapshot: str) -> bool:
    done = run_git(["merge-base", "--is-ancestor", commit, snapshot], repo_root)
    return done.returncode == 0


# --- loop -----------------------------------------------------------------------------------

def run_bench(repo_root: Path, folder: Path, note: Note, session: Session | None = None) -> dict:
    """Score every (configuration, task) not yet in results.jsonl; returns the report."""
    spec = json.loads((folder / "bench.json").read_text("utf-8"))
    tasks = [task for task in map(BenchTask.from_dict, spec["tasks"])
             if task.kind != "broken"]  # reported, not solved or counted
    own_session = session is None
    lock = claim_run(folder, "bench")  # two processes would score the same tasks twice
    try:
        session = session or Session()
        scores = read_scores(folder)
        done = {(s.config, s.task) for s in scores}
        # Only the configurations left to score are loaded: a finished one may hold settings that
        # this sera no longer knows (one measured with a build since reverted).
        settings_of = {name: load_settings(repo_root, {**spec["flags"], **config_flags})
                       for name, config_flags in spec["configs"].items()
                       if any((name, task.id) not in done for task in tasks)}
        todo = [(name, task) for name, task in bench_order(repo_root, tasks, settings_of)
                if (name, task.id) not in done]
        foreign = begun_by_another_build(spec, scores, {name for name, _ in todo}, note)
        todo = [(name, task) for name, task in todo if name not in foreign]
        started = time.monotonic()
        for finished, (name, task) in enumerate(todo, 1):
            score = score_task(repo_root, folder, task, name, settings_of[name], session,
                               spec["test_command"], note)
            _append(folder / "results.jsonl", asdict(score))
            note(_progress_line(score, finished, len(todo), time.monotonic() - started))
    finally:
        lock.close()
        if own_session and session is not None:
            session.close()
    resamples = load_settings(repo_root, spec["flags"]).bench.resamples
    report = build_report(spec, read_scores(folder), resamples)
    atomic_write_json(folder / "report.json", report)
    return report


def bench_order(repo_root: Path, tasks: list[BenchTask],
                settings_of: dict[str, Settings]) -> list[tuple[str, BenchTask]]:
    """(configuration, task) in the order they are scored: configurations that load the same
    model and reranker (they differ by adapter or agent settings) take turns on each task, so a
    bench stopped early still compares them on the tasks it reached; a configuration that loads
    other models comes after, so that each is loaded once."""
    groups: dict[tuple, list[str]] = {}
    for name, settings in settings_of.items():
        groups.setdefault(loaded_keys(repo_root, settings), []).append(name)
    return [(name, task) for names in groups.values() for task in tasks for name in names]


def score_task(repo_root: Path, folder: Path, task: BenchTask, name: str, settings: Settings,
               session: Session, command: str | None, note: Note) -> Score:
    """Solve the task at its parent with this configuration and score the candidates."""
    model, reranker = session.load(repo_root, settings, note)
    locations = oracle_locations(repo_root, task) if settings.bench.oracle_view else None
    result = solve(repo_root, task.message, settings, model, reranker=reranker, at=task.parent,
                   run_dir=folder / "runs" / name / task.id, locations=locations)
    return score(repo_root, task, name, result, command, settings)


def oracle_locations(repo_root: Path, task: BenchTask) -> list | None:
    """What the oracle view shows: the functions the reference changes; None (the localizer's
    picks) when it changes none that exists at the parent (it only adds files)."""
    history = HistoryTask(task.commit, task.parent, task.date, task.message, task.patch,
                          list(task.files))
    return commit_locations(repo_root, history) or None


def begun_by_another_build(spec: dict, scores: list[Score], unfinished: set[str],
                           note: Note) -> set[str]:
    """The unfinished configurations another sera began, each named in a note: finishing them here
    would score their tasks with two harnesses, and their figures would belong to neither."""
    current, foreign = build_id(), set()
    for name in spec["configs"]:
        began = {s.build for s in scores if s.config == name and s.build}
        if name in unfinished and began and began != {current}:
            foreign.add(name)
            settings = ",".join(f"{k}={v}" for k, v in spec["configs"][name].items())
            note(f"configuration {name!r} left unfinished: sera {', '.join(sorted(began))} began "
                 f"it, and this is sera {current}; finish it with that sera, or score this one "
                 f"under a new name: sera bench --resume {spec['id']} --config "
                 f"{name}-new:{settings}")
    return foreign


def score(repo_root: Path, task: BenchTask, name: str, result: SolveResult,
          command: str | None, settings: Settings) -> Score:
    top = top_candidate(result.candidates)
    patch = top.patch if top is not None else ""
    recalls = [line_recall(task.patch, c.patch) or 0.0 for c in result.candidates]
    resolved, detail = None, ""
    if task.kind == "tests" and command:
        resolved, detail = resolves(repo_root, task, patch, command, settings.agent)
    return Score(
        task=task.id, config=name, kind=task.kind, resolved=resolved, detail=detail,
        top1_recall=round(line_recall(task.patch, patch) or 0.0, 4),
        oracle_recall=round(max(recalls, default=0.0), 4),
        file_hit=bool(set(changed_files(patch)) & set(task.files)),
        candidates=len(result.candidates),
        edit_failed=sum(c.status == "edit_failed" for c in result.candidates),
        empty=sum(not c.patch.strip() for c in result.candidates),
        seconds=round(sum(c.seconds for c in result.candidates), 2),
        tokens=sum(c.prompt_tokens + c.completion_tokens for c in result.candidates),
        top_status=top.status if top is not None else "no patch", build=build_id())


def _append(path: Path, row: dict) -> None:
    """One JSON line, flushed to disk: a kill leaves at worst a cut last line, which is skipped."""
    cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(("\n" if cut else "") + json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_scores(folder: Path) -> list[Score]:
    path = folder / "results.jsonl"
    if not path.is_file():
        return []
    scores = []
    for line in path.read_text("utf-8").splitlines():
        try:
            scores.append(Score(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line cut by a kill: that pair is scored again
    return scores


def _progress_line(score: Score, finished: int, total: int, elapsed: float) -> str:
    left = (total - finished) * elapsed / finished
    verdict = {True: "resolved", False: "not resolved", None: ""}[score.resolved]
    return (f"[{finished}/{total}] {score.config} {score.task}: {verdict + ', ' if verdict else ''}"
            f"top-1 recall {score.top1_recall:.2f}, oracle {score.oracle_recall:.2f}, "
            f"{score.edit_failed}/{score.candidates} edits failed, {score.seconds:.0f} s "
            f"(ETA {left / 60:.0f} min)")


# --- report ---------------------------------------------------------------------------------

def build_report(spec: dict, scores: list[Score], resamples: int) -> dict:
    """Per configuration: the metrics over the counted tasks (broken ones left out), and the
    paired difference from the first configuration with a bootstrap interval."""
    tasks = {task["commit"][:12]: task for task in spec["tasks"]}
    names = list(spec["configs"])
    by_config = {name: {s.task: s for s in scores if s.config == name} for name in names}
    report: dict[str, Any] = {
        "id": spec["id"], "test_command": spec["test_command"],
        "tasks": {kind: sum(t["kind"] == kind for t in tasks.values())
                  for kind in ("tests", "recall", "broken")},
        "broken": {tid: t["why"] for tid, t in tasks.items() if t["kind"] == "broken"},
        "configs": {}, "differences": {}}
    for name in names:
        report["configs"][name] = _metrics(list(by_config[name].values()))
    base = names[0]
    for name in names[1:]:
        report["differences"][name] = _differences(by_config[base], by_config[name], resamples)
    return report


def _metrics(scores: list[Score]) -> dict[str, Any]:
    counted = [s for s in scores if s.kind != "broken"]
    tested = [s for s in counted if s.kind == "tests"]
    recall_scored = [s for s in counted if s.kind == "recall"]
    candidates = sum(s.candidates for s in counted)
    return {
        "scored": len(counted),
        "resolved": _share([s.resolved for s in tested]), "resolved_of": len(tested),
        "recall_solved": _share([s.top1_recall >= RECALL_SOLVED for s in recall_scored]),
        "recall_solved_of": len(recall_scored),
        "top1_recall": _mean([s.top1_recall for s in counted]),
        "oracle_recall": _mean([s.oracle_recall for s in counted]),
        "file_hit": _share([s.file_hit for s in counted]),
        "edit_failed": _per_candidate(sum(s.edit_failed for s in counted), candidates),
        "empty": _per_candidate(sum(s.empty for s in counted), candidates),
        "seconds_per_task": _mean([s.seconds for s in counted]),
        "tokens_per_task": _mean([s.tokens for s in counted]),
        "builds": sorted({s.build or "unrecorded" for s in scores}),
    }


def _per_candidate(count: int, candidates: int) -> float | None:
    return round(count / candidates, 4) if candidates else None


def _share(values: list[Any]) -> float | None:
    return round(sum(bool(v) for v in values) / len(values), 4) if values else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.mean(values), 4) if values else None


DIFFERENCE_METRICS: dict[str, Callable[[Score], float | None]] = {
    "resolved": lambda s: float(bool(s.resolved)) if s.kind == "tests" else None,
    "recall_solved": lambda s: float(s.top1_recall >= RECALL_SOLVED) if s.kind == "recall" else None,
    "top1_recall": lambda s: s.top1_recall if s.kind != "broken" else None,
}


def _differences(base: dict[str, Score], other: dict[str, Score], resamples: int) -> dict:
    """Mean paired difference (other - base) per metric over the tasks both scored, with a
    percentile bootstrap 95% interval (seeded: the same scores give the same interval)."""
    out = {}
    for metric, value in DIFFERENCE_METRICS.items():
        pairs = [(value(base[t]), value(other[t])) for t in base if t in other]
        deltas = [b - a for a, b in pairs if a is not None and b is not None]
        out[metric] = {"delta": _mean(deltas), "tasks": len(deltas),
                       "interval": bootstrap_interval(deltas, resamples)}
    return out


def bootstrap_interval(deltas: list[float], resamples: int, seed: int = 0) -> list[float] | None:
    """The 2.5th and 97.5th percentiles of the mean of `deltas` resampled with replacement."""
    if not deltas:
        return None
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(deltas, k=len(deltas))) for _ in range(resamples))
    low, high = means[int(0.025 * (resamples - 1))], means[int(0.975 * (resamples - 1))]
    return [round(low, 4), round(high, 4)]


def format_report(report: dict) -> str:
    """The report as a table, then the differences from the first configuration."""
    counts = report["tasks"]
    lines = [f"bench {report['id']}: {counts['tests']} test-verified tasks, {counts['recall']} "
             f"scored by line recall, {counts['broken']} with tests that do not run here "
             f"(not counted); test command: {report['test_command'] or 'none'}"]
    lines += [f"  broken {tid}: {why}" for tid, why in report["broken"].items()]
    header = (f"{'configuration':<18} {'resolved':>10} {'recall>=.5':>11} {'top-1 rec':>9} "
              f"{'oracle':>7} {'file-hit':>8} {'edit-fail':>9} {'no patch':>8} {'s/task':>7} "
              f"{'tok/task':>8}")
    lines += [header, "-" * len(header)]
    for name, m in report["configs"].items():
        lines.append(
            f"{name:<18} {_cell(m['resolved'], m['resolved_of']):>10} "
            f"{_cell(m['recall_solved'], m['recall_solved_of']):>11} {_num(m['top1_recall']):>9} "
            f"{_num(m['oracle_recall']):>7} {_pct(m['file_hit']):>8} {_pct(m['edit_failed']):>9} "
            f"{_pct(m['empty']):>8} "
            f"{_num(m['seconds_per_task'], 0):>7} {_num(m['tokens_per_task'], 0):>8}")
    builds = {name: ", ".join(m["builds"]) for name, m in report["configs"].items() if m["builds"]}
    if len(set(builds.values())) > 1:  # the differences are then the harnesses' too
        lines.append("scored by: " + "; ".join(f"{name} sera {b}" for name, b in builds.items()))
    for name, diffs in report["differences"].items():
        first = next(iter(report["configs"]))
        parts = [f"{metric} {_signed(d['delta'])} [{_interval(d['interval'])}] over {d['tasks']}"
                 for metric, d in diffs.items()]
        lines.append(f"{name} - {first}: " + "; ".join(parts))
    return "\n".join(lines)


def _cell(share: float | None, of: int) -> str:
    return "-" if share is None else f"{share:.0%} of {of}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _interval(interval: list[float] | None) -> str:
    return "-" if interval is None else f"{interval[0]:+.3f}, {interval[1]:+.3f}"


# --- resume ---------------------------------------------------------------------------------

def find_bench(repo_root: Path, wanted: str | None) -> Path:
    """The bench `wanted` (an id or its prefix), or the newest one."""
    folders = sorted((p for p in bench_dir(repo_root).glob("*") if (p / "bench.json").is_file()),
                     key=lambda p: p.name)  # ids start with their creation time
    if wanted:
        folders = [p for p in folders if p.name.startswith(wanted)]
    if not folders:
        which = f" {wanted!r}" if wanted else ""
        raise SeraError(f"no bench{which} in {bench_dir(repo_root)}; start one with: sera bench")
    return folders[-1]
