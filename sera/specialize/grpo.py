"""Policy optimization of the agent against the reranker (METHODS.md section 2, step 3), with GRPO.

    tasks = policy_tasks(repo_root, history_tasks + svg_records, commit=run_snapshot)
    result = optimize_policy(student_folder(spec), sft_adapter, adapters_dir(repo_root) / name,
                             tasks, reranker.score, PolicyConfig(), student_spec=spec)

The paper optimizes the generator with PPO; TRL 1.16 has no PPOTrainer, so this uses its
GRPOTrainer: per task the policy samples a group of `num_generations` answers, each gets a reward,
and an answer's advantage is its reward against the group's mean (over the group's spread).

A rollout is one-shot, so it runs on a CPU: the prompt is the guided scaffold's edit request
(agent templates guided_system and guided_edit: the task, then the files the reference patch
touches with line numbers, as they are at the task's commit, cut to windows around the changed
lines when they do not fit `code_tokens`); the answer is SEARCH/REPLACE blocks, applied with the
guided scaffold's own lenient `apply_edits` to those files in a scratch git repository, whose
`git diff` (the work copy's diff format) is the candidate patch.

The reward of an answer (`reward`), weighted so that neither part dominates, both lying in 0..1:
- `score_weight` x P(the reranker prefers the patch to the reference), the Bradley-Terry
  probability sigmoid(score(patch) - score(reference)) of the loss the reranker was trained with:
  anchoring on the task's reference removes the per-task offset of raw scores, and a patch
  identical to the reference gets 0.5;
- `recall_weight` x the line recall of the reference in the patch (`recall.line_recall`; removed
  lines count too, so removing the right line and writing a wrong one earns half of it).
With the default 0.5 / 0.5 the reference itself gets 0.75 and a patch with none of the
reference's lines at most 0.5, however much the reranker likes it. An answer that does not parse,
does not apply, or changes nothing gets `fail_reward` (-1). Without a score function the reward is
the recall alone.

The policy is the agent's LoRA adapter (the SFT adapter `sera specialize` trained; a fresh one when
none is given): the same LoRA weights keep training, the base stays frozen. With `beta` > 0, TRL
keeps a frozen copy of the starting adapter as the KL reference. The result is a new adapter
folder (peft files, card.json with the rewards, loss.png) like the SFT one; its card's "student"
says which model it belongs to. The rewards reported (per step, and the first against the last
quarter of the steps) are those of the answers sampled while training.

Cost (`python bench/bench_policy.py --model 0.5b`, 2 CPU cores, the embedded 0.5B): a step of
4 answers of up to 128 tokens takes about 2 minutes, 3.1x the time of sampling those answers
alone, with 7.5 GB peak memory for policy, reranker and the KL reference (beta > 0). A group whose answers all get the same reward (none applies) teaches nothing. torch,
peft, transformers, datasets and trl are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from sera.agent.guided import opening
from sera.agent.localize import Location, changed_locations
from sera.agent.prompts import render
from sera.agent.searchreplace import EditError, apply_edits, parse_edits
from sera.agent.views import Located, located_view, view_lines
from sera.agent.workcopy import git, git_bytes
from sera.config import PolicyConfig
from sera.diff import change_ranges, changed_lines, parse
from sera.errors import RepositoryError, SeraError
from sera.device import pick_device
from sera.models.transformers_backend import load_causal_lm, load_tokenizer, resolve_model_folder
from sera.reranker.labels import TaskGroup
from sera.reranker.pool import PoolTask
from sera.specialize.lora import save_peft_folder
from sera.specialize.mining import HistoryTask
from sera.specialize.recall import line_recall

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ScoreFn = Callable[[str, Sequence[str]], Sequence[float]]  # reranker.score(task, patches)
CHARS_PER_TOKEN = 3  # as the guided scaffold estimates the room code takes
CHANGED = "changed by the reference"
DIFF_OPTIONS = ["--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/",
                "--dst-prefix=b/"]
SCRATCH_GIT = ["-c", "core.autocrlf=false", "-c", "core.safecrlf=false", "-c",
               "init.defaultBranch=main", "-c", f"core.hooksPath={os.devnull}"]


@dataclass
class PolicyTask:
    task: str  # the text the agent is given
    reference: str  # the patch recall and the reranker's preference are measured against
    files: dict[str, str]  # path -> text at the task's commit, for each file the reference changes
    task_id: str = ""


@dataclass
class Reward:
    value: float
    patch: str | None  # None: the answer did not parse, did not apply or changed nothing
    recall: float | None = None
    preference: float | None = None  # sigmoid(score(patch) - score(reference))


@dataclass
class PolicyResult:
    rewards: list[float]  # mean reward of each step's answers
    losses: list[float]
    applied: list[float]  # share of each step's answers that gave a patch
    reward_before: float  # mean reward over the first quarter of the steps (at least one)
    reward_after: float  # ... and over the last quarter
    steps: int
    seconds: float  # the training loop (loading and saving excluded)
    completions: int  # answers sampled
    adapter: Path
    lora_change: float = 0.0  # |LoRA weights after - before| / |before| (L2 over all of them)
    base_changed: bool = False  # whether a frozen weight moved (it must not)


# --- tasks ----------------------------------------------------------------------------------

def policy_tasks(repo_root: Path,
                 items: Iterable[PoolTask | TaskGroup | HistoryTask | Mapping[str, Any]],
                 *, commit: str | None = None) -> list[PolicyTask]:
    """Tasks with the files their reference touches, read with git at the task's commit.

    `items`: history tasks (they start from their parent commit), the reranker's pool tasks (from
    their own commit), labelled task groups and SVG
    records with "issue" and "p1" (they start from `commit`, the specialize run's snapshot).
    Items without a changed line, or whose files are not text at that commit, are skipped.
    """
    tasks = []
    for item in items:
        task_id, text, reference, start = _task_fields(item, commit)
        if text is None or not changed_lines(reference):
            continue
        files = _files_at(Path(repo_root), start, reference)
        if files is None:
            log.info("policy: skipped %s: its files are not text at %s", task_id, start)
            continue
        tasks.append(PolicyTask(text, reference, files, task_id))
    return tasks


def _task_fields(item: Any, commit: str | None) -> tuple[str, str | None, str, str]:
    """(task id, task text or None to skip, reference patch, commit to read the files at)."""
    if isinstance(item, HistoryTask):
        return f"history-{item.commit[:12]}", item.message, item.patch, item.parent
    if isinstance(item, PoolTask):
        return item.task_id, item.task, item.reference, item.commit
    if isinstance(item, TaskGroup):
        task_id, text, reference = item.task_id, item.task, item.reference
    elif isinstance(item, Mapping):
        task_id, text, reference = f"svg-{item.get('index', 0):05d}", item.get("issue"), \
            item.get("p1") or ""
    else:
        raise SeraError(f"cannot make a policy task of {type(item).__name__}; pass history "
                        f"tasks, task groups or SVG records")
    if commit is None:
        raise SeraError(f"task {task_id} starts from the specialize run's snapshot: pass it as "
                        f"commit= (the run manifest's 'snapshot')")
    return task_id, text, reference, commit


def _files_at(repo_root: Path, commit: str, reference: str) -> dict[str, str] | None:
    """The text at `commit` of each file the reference changes (not those it creates: there is
    nothing to show of them yet); None when one is not UTF-8."""
    files = {}
    for old_path in dict.fromkeys(f.old_path for f in parse(reference) if f.old_path):
        try:
            data = git_bytes(["cat-file", "blob", f"{commit}:{old_path}"], repo_root)
            files[old_path] = data.decode("utf-8")
        except (RepositoryError, UnicodeDecodeError):
            return None
    return files


# --- the prompt -----------------------------------------------------------------------------

def policy_prompt(task: PolicyTask, config: PolicyConfig) -> list[dict[str, str]]:
    """The guided scaffold's edit request for the task, as chat messages (after the opening that
    solve's guided conversations have)."""
    return [*opening("blocks"),
            {"role": "user", "content": render("guided_edit", task=task.task,
                                                code=code_view(task, config))}]


def code_view(task: PolicyTask, config: PolicyConfig) -> str:
    """The task's code as solve's guided scaffold shows it (views.located_view): the functions
    the reference changes, and the changed lines outside any function, with the lines around;
    clipped to `code_tokens`."""
    ranges = change_ranges(task.reference)
    files = {path: view_lines(text) for path, text in task.files.items()}
    locations: list[Located] = []
    for path, text in task.files.items():
        if path in ranges:
            locations += changed_locations(path, text, ranges[path], CHANGED)
        else:  # a reference without line numbers: the whole file
            locations.append(Location(path, "", 1, len(files[path]), 1.0, [CHANGED]))
    return located_view(files, locations, config.code_tokens * CHARS_PER_TOKEN) or \
        "(the files are empty)"


# --- the reward -----------------------------------------------------------------------------

def completion_patch(task: PolicyTask, completion: str) -> str | None:
    """The patch an answer's SEARCH/REPLACE blocks make of the task's files (git's diff format,
    as a work copy's diff); None when they do not parse, do not apply or change nothing."""
    default_path = next(iter(task.files)) if len(task.files) == 1 else None
    try:
        edits = parse_edits(completion, default_path)
    except EditError:
        return None
    if not edits:
        return None
    with tempfile.TemporaryDirectory(prefix="sera-policy-") as scratch:
        root = Path(scratch)
        for path, text in task.files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(text.encode("utf-8"))
        git([*SCRATCH_GIT, "init", "-q"], root)
        git([*SCRATCH_GIT, "add", "--all", "--force"], root)
        tree = git(["write-tree"], root).strip()
        try:
            apply_edits(root, edits)
        except EditError:
            return None
        git([*SCRATCH_GIT, "add", "--all", "--force"], root)
        patch = git([*SCRATCH_GIT, "diff", "--cached", *DIFF_OPTIONS, tree], root)
    return patch or None


def reward(task: PolicyTask, completions: Sequence[str], score_fn: ScoreFn | None,
           config: PolicyConfig) -> list[Reward]:
    """The reward of each answer to one task (module docstring); the reranker is asked once, for
    the answers' patches and the reference (last)."""
    patches = [completion_patch(task, text) for text in completions]
    applied = [patch for patch in patches if patch is not None]
    preferences: dict[str, float] = {}
    if score_fn is not None and applied:
        scores = list(score_fn(task.task, [*applied, task.reference]))
        if len(scores) != len(applied) + 1:
            raise SeraError(f"the reranker gave {len(scores)} scores for {len(applied) + 1} "
                            f"patches; it must score every patch it is given")
        preferences = {patch: _sigmoid(score - scores[-1]) for patch, score in zip(applied, scores)}
    rewards = []
    for patch in patches:
        if patch is None:
            rewards.append(Reward(config.fail_reward, None))
            continue
        recall = line_recall(task.reference, patch) or 0.0
        if score_fn is None:
            rewards.append(Reward(recall, patch, recall))
            continue
        value = config.score_weight * preferences[patch] + config.recall_weight * recall
        rewards.append(Reward(value, patch, recall, preferences[patch]))
    return rewards


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _reward_function(tasks: Sequence[PolicyTask], score_fn: ScoreFn | None,
                     config: PolicyConfig) -> Callable[..., list[float]]:
    """The reward as TRL calls it: a batch of answers with their dataset columns; answers are
    scored per task, and the share that applied and their mean recall are logged."""

    def patch_reward(prompts: list, completions: list, task_index: list[int],
                     **kwargs: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        values: list[float] = [0.0] * len(texts)
        details: list[Reward] = []
        for index in dict.fromkeys(task_index):
            positions = [i for i, t in enumerate(task_index) if t == index]
            found = reward(tasks[index], [texts[i] for i in positions], score_fn, config)
            for i, result in zip(positions, found):
                values[i] = result.value
            details += found
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric("applied", sum(r.patch is not None for r in details) / len(details))
            log_metric("recall", sum(r.recall or 0.0 for r in details) / len(details))
        return values

    return patch_reward


# --- optimization ---------------------------------------------------------------------------

def optimize_policy(base_folder: Path, adapter_in: Path | None, out_dir: Path,
                    tasks: Sequence[PolicyTask], score_fn: ScoreFn | None, config: PolicyConfig,
                    *, student_spec: str, card_fields: Mapping[str, Any] | None = None,
                    progress: Callable[[dict], None] | None = None) -> PolicyResult:
    """GRPO on the agent's LoRA adapter (`adapter_in`, or a fresh one) of `base_folder`; the
    result goes to `out_dir` with its card (plus `card_fields`, e.g. the run and the scaffold).
    `progress` gets a dict after every step."""

    config.check()
    if not tasks:
        raise SeraError("no task to optimize the policy on: it needs tasks whose reference patch "
                        "changes text files (history tasks or SVG records)")
    folder = resolve_model_folder(str(base_folder))
    tokenizer = load_tokenizer(folder)
    model = _policy_model(folder, adapter_in, config)
    before = _weights(model)
    with tempfile.TemporaryDirectory(prefix="sera-grpo-") as scratch:
        trainer = _trainer(model, tokenizer, tasks, score_fn, config, Path(scratch), progress)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    result = _result(logs, seconds, config, Path(out_dir))
    result.lora_change, result.base_changed = _weight_change(before, _weights(model))
    if "ref" in model.peft_config:
        model.delete_adapter("ref")  # TRL's frozen copy of the starting adapter (the KL reference)
    card = {**_card(base_folder, folder, adapter_in, tasks, config, result, student_spec),
            **(card_fields or {})}
    save_peft_folder(model, Path(out_dir), card)
    return result


def _weights(model: Any) -> tuple[dict[str, "torch.Tensor"], dict[str, float]]:
    """Copies of the trainable (LoRA) weights of the "default" adapter, and a checksum of each
    frozen one (copying a whole base would double its memory)."""
    trainable, frozen = {}, {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            trainable[name] = param.detach().float().clone()
        elif ".ref." not in name:  # TRL's reference copy of the adapter is frozen on purpose
            frozen[name] = float(param.detach().double().sum())
    return trainable, frozen


def _weight_change(before: tuple[dict, dict], after: tuple[dict, dict]) -> tuple[float, bool]:
    """(relative L2 change of the trainable weights, whether any frozen weight changed)."""
    start, end = before[0], after[0]
    moved = sum(float((end[name] - start[name]).pow(2).sum()) for name in start)
    size = sum(float(start[name].pow(2).sum()) for name in start)
    return math.sqrt(moved / size) if size else math.sqrt(moved), before[1] != after[1]


def _policy_model(folder: Path, adapter_in: Path | None, config: PolicyConfig) -> Any:
    """The frozen base (float32) with the adapter's LoRA weights trainable."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    model = load_causal_lm(folder)
    if adapter_in is None:
        torch.manual_seed(config.seed)
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0,
                          target_modules=config.target_modules, task_type="CAUSAL_LM")
        return get_peft_model(model, lora)
    if not (Path(adapter_in) / "adapter_config.json").is_file():
        raise SeraError(f"adapter {adapter_in} not found: pass the folder that holds "
                        f"adapter_config.json (e.g. .sera/adapters/<name>), or None for a "
                        f"fresh one")
    return PeftModel.from_pretrained(model, str(adapter_in), is_trainable=True)


def _trainer(model: Any, tokenizer: Any, tasks: Sequence[PolicyTask], score_fn: ScoreFn | None,
             config: PolicyConfig, scratch: Path, progress: Callable[[dict], None] | None) -> Any:
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    device = pick_device(config.device, "policy optimization")
    args = GRPOConfig(
        output_dir=str(scratch), max_steps=config.steps, learning_rate=config.lr,
        lr_scheduler_type="constant", num_generations=config.num_generations,
        per_device_train_batch_size=config.micro_batch,
        gradient_accumulation_steps=config.num_generations * config.tasks_per_step
        // config.micro_batch, max_completion_length=config.max_completion_tokens,
        temperature=config.temperature, beta=config.beta, seed=config.seed,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, disable_dropout=True,
        bf16=device == "cuda", use_cpu=device == "cpu", report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True)
    rows = [{"prompt": policy_prompt(task, config), "task_index": index}
            for index, task in enumerate(tasks)]
    trainer = GRPOTrainer(model=model, reward_funcs=[_reward_function(tasks, score_fn, config)],
                          args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=[_progress_callback(progress)])
    trainer.remove_callback(PrinterCallback)  # progress reports instead of printed log dicts
    return trainer


def _progress_callback(progress: Callable[[dict], None] | None) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if progress is not None and logs and "reward" in logs:
                progress({"step": state.global_step, "steps": state.max_steps,
                          "reward": logs["reward"], "loss": logs.get("loss"),
                          "applied": logs.get("applied"),
                          "elapsed": time.perf_counter() - self.started})

    return Progress()


def _result(logs: list[dict], seconds: float, config: PolicyConfig, out_dir: Path) -> PolicyResult:
    rewards = [float(entry["reward"]) for entry in logs]
    window = max(1, len(rewards) // 4)
    return PolicyResult(
        rewards=rewards, losses=[float(entry.get("loss", 0.0)) for entry in logs],
        applied=[float(entry.get("applied", 0.0)) for entry in logs],
        reward_before=sum(rewards[:window]) / window if rewards else 0.0,
        reward_after=sum(rewards[-window:]) / window if rewards else 0.0,
        steps=len(rewards), seconds=seconds,
        completions=len(rewards) * config.num_generations * config.tasks_per_step,
        adapter=out_dir)


def _card(base: Path, folder: Path, adapter_in: Path | None, tasks: Sequence[PolicyTask],
          config: PolicyConfig, result: PolicyResult, student_spec: str) -> dict[str, Any]:
    return {
        "format": "peft-lora",
        "base_model": str(base),
        "base_folder": str(folder),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "student": student_spec,
        "method": "grpo",
        "parent": {"adapter": str(adapter_in) if adapter_in else None,
                   "run": _parent_card(adapter_in).get("run")},
        "data": {"tasks": len(tasks), "completions": result.completions},
        "config": asdict(config),
        "training": {"steps": result.steps, "seconds": round(result.seconds, 3),
                     "seconds_per_step": round(result.seconds / max(1, result.steps), 3),
                     "lora_change": round(result.lora_change, 6)},
        "reward_before": round(result.reward_before, 5),
        "reward_after": round(result.reward_after, 5),
        "reward": [round(v, 5) for v in result.rewards],
        "applied": [round(v, 5) for v in result.applied],
        "loss": [round(v, 5) for v in result.losses],
    }


def _parent_card(adapter_in: Path | None) -> dict[str, Any]:
    if adapter_in is None:
        return {}
    try:
        return json.loads((Path(adapter_in) / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
