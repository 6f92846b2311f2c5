"""Training the RewardRanker reranker: a second LoRA adapter on the agent's base, pairwise loss.

    config = RerankTrainConfig.for_device("auto")
    result = train_reranker(base_folder, groups, rerankers_dir(repo) / name, config,
                            base_spec="embedded", min_gap=settings.rerank.min_gap, progress=print)
    pair_accuracy(LoraReranker.load(rerankers_dir(repo) / name), heldout_groups, min_gap=0.1)

(`sera specialize .` runs this in its reranker stage.) Pairs are made only within one task, of
candidates whose labels (`LabeledPatch.label`: recall, plus 1 when the tests passed) differ by at
least `min_gap`. The loss is Bradley-Terry with the label gap as margin,
`-log sigmoid(r(task, good) - r(task, bad) - (label_good - label_bad))`: a pair whose labels are
far apart must be scored further apart. `pairs_per_step` pairs are accumulated per optimizer step
(in micro-batches under `batch_tokens` padded tokens); the step's loss is their mean.

Only the LoRA weights and the score head train (sera.reranker.model describes the model); the
base is frozen. The folder (peft's files with the head, `card.json`, `loss.png`) is written to a
temporary sibling and renamed into place. torch and peft are imported inside functions.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from sera.config import RerankTrainConfig
from sera.errors import SeraError
from sera.device import dtype_name, pick_device, torch_dtype
from sera.models.transformers_backend import load_tokenizer, resolve_model_folder
from sera.reranker.labels import TaskGroup
from sera.reranker.model import LoraReranker, collate, encode_candidate, load_reward_base
from sera.specialize.lora import add_lora, lr_schedule, save_peft_folder

GAP_TOLERANCE = 1e-9  # labels are sums of floats: a gap of exactly min_gap must count


@dataclass(frozen=True)
class Pair:
    task: str
    good: str  # the patch with the higher label
    bad: str
    margin: float  # label(good) - label(bad), >= min_gap


@dataclass
class RerankTrainResult:
    losses: list[float]  # mean pair loss, one per optimizer step
    pairs: int  # distinct training pairs
    tasks: int  # groups with at least one pair
    candidates: int  # candidates of those groups
    steps: int
    seconds: float  # the training loop (loading, accuracy and saving excluded)
    pairs_per_second: float  # pairs trained (each epoch counts) per second of the loop
    accuracy_before: float  # share of the training pairs ranked right by the untrained model
    accuracy_after: float  # ... by the trained one
    # The trained model's score of every candidate: one list per group given, in order.
    scores: list[list[float]] = field(default_factory=list)


def make_pairs(groups: Sequence[TaskGroup], min_gap: float) -> list[Pair]:
    """Every pair of candidates of one task whose labels differ by at least `min_gap`, better one
    first; identical patches never pair. Deterministic: groups, then candidates, in order."""
    pairs = []
    for group in groups:
        for i, first in enumerate(group.candidates):
            for second in group.candidates[i + 1:]:
                gap = first.label - second.label
                if abs(gap) + GAP_TOLERANCE < min_gap or first.patch == second.patch:
                    continue
                good, bad = (first, second) if gap > 0 else (second, first)
                pairs.append(Pair(group.task, good.patch, bad.patch, abs(gap)))
    return pairs


def pair_accuracy(reranker: Any, groups: Sequence[TaskGroup], min_gap: float) -> float:
    """Share of `make_pairs(groups, min_gap)` that `reranker` scores the right way round (a tie
    counts half); NaN when there is no pair."""
    return _accuracy(groups, group_scores(reranker, groups), min_gap)


def group_scores(reranker: Any, groups: Sequence[TaskGroup]) -> list[list[float]]:
    """The reranker's score of every candidate, per group (one `score` call per group)."""
    return [reranker.score(g.task, [c.patch for c in g.candidates]) if g.candidates else []
            for g in groups]


def _accuracy(groups: Sequence[TaskGroup], scores: list[list[float]], min_gap: float) -> float:
    right = total = 0.0
    for group, group_score in zip(groups, scores):
        by_patch = {c.patch: s for c, s in zip(group.candidates, group_score)}
        for pair in make_pairs([group], min_gap):
            good, bad = by_patch[pair.good], by_patch[pair.bad]
            right += 1.0 if good > bad else 0.5 if good == bad else 0.0
            total += 1
    return right / total if total else float("nan")


# --- training -----------------------------------------------------------------------------------

def train_reranker(base_folder: Path, groups: Sequence[TaskGroup], out_dir: Path,
                   config: RerankTrainConfig, *, base_spec: str, min_gap: float = 0.1,
                   progress: Callable[[dict], None] | None = None) -> RerankTrainResult:
    """Train a reranker on `groups` (labelled candidates per task) and save it in `out_dir`.
    `base_spec` (the model spec of `base_folder`) goes into the card: it is how a reranker is
    matched to the model in use. `progress` gets a dict after every optimizer step."""
    import torch

    config.check()
    pairs = make_pairs(groups, min_gap)
    if not pairs:
        raise SeraError(_no_pairs_message(groups, min_gap))
    device = pick_device(config.device, "reranker training")
    folder = resolve_model_folder(str(base_folder))
    tokenizer = load_tokenizer(folder)
    torch.manual_seed(config.seed)
    model = build_reward_model(folder, tokenizer, config).to(device)
    trained = [g for g in groups if make_pairs([g], min_gap)]
    reranker = LoraReranker(model, tokenizer, max_tokens=config.max_tokens, name=Path(out_dir).name)
    before = _evaluate(model, reranker, groups, min_gap)[0]
    start = time.perf_counter()
    losses, trained_pairs = _run_steps(model, tokenizer, pairs, config, progress)
    seconds = time.perf_counter() - start
    after, scores = _evaluate(model, reranker, groups, min_gap)
    result = RerankTrainResult(
        losses=losses, pairs=len(pairs), tasks=len(trained),
        candidates=sum(len(g.candidates) for g in trained), steps=len(losses), seconds=seconds,
        pairs_per_second=trained_pairs / max(seconds, 1e-9), accuracy_before=before,
        accuracy_after=after, scores=scores)
    save_peft_folder(model, Path(out_dir), _card(base_spec, folder, config, result, min_gap))
    return result


def _no_pairs_message(groups: Sequence[TaskGroup], min_gap: float) -> str:
    candidates = sum(len(g.candidates) for g in groups)
    return (f"no training pair for the reranker: none of the {len(groups)} tasks "
            f"({candidates} candidates) has two different candidates whose labels differ by at "
            f"least rerank.min_gap = {min_gap} (e.g. every candidate has the same label); add "
            f"candidates that fail and that succeed for the same task, or lower rerank.min_gap")


def build_reward_model(folder: Path, tokenizer: Any, config: RerankTrainConfig) -> Any:
    """The frozen base as a one-label classifier with fresh LoRA weights and a trainable score head
    (peft SEQ_CLS: the head is in modules_to_save); LoRA and head in float32."""
    model = load_reward_base(folder, tokenizer, dtype=torch_dtype(config.precision, config.device))
    peft_model = add_lora(model, config, "SEQ_CLS")  # base frozen; LoRA + `score` copy trainable
    peft_model.train()
    return peft_model


def _evaluate(model: Any, reranker: Any, groups: Sequence[TaskGroup],
              min_gap: float) -> tuple[float, list[list[float]]]:
    """Pair accuracy and scores with dropout off; the model is left in training mode."""
    model.eval()
    try:
        scores = group_scores(reranker, groups)
    finally:
        model.train()
    return _accuracy(groups, scores, min_gap), scores


def _step_plan(pairs: list[Pair], config: RerankTrainConfig) -> list[list[Pair]]:
    """Optimizer steps: each epoch the pairs are reshuffled (seeded) and cut into steps."""
    steps = []
    for epoch in range(config.epochs):
        order = list(pairs)
        random.Random(config.seed + epoch).shuffle(order)
        steps += [order[i:i + config.pairs_per_step]
                  for i in range(0, len(order), config.pairs_per_step)]
    return steps


def _run_steps(model: Any, tokenizer: Any, pairs: list[Pair], config: RerankTrainConfig,
               progress: Callable[[dict], None] | None) -> tuple[list[float], int]:
    """The loop; returns the loss of each step and how many pairs were trained."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    plan = _step_plan(pairs, config)
    scheduler = lr_schedule(optimizer, config, len(plan))
    cache: dict[tuple[str, str], list[int]] = {}

    def encode(task: str, patch: str) -> list[int]:
        if (task, patch) not in cache:
            cache[(task, patch)] = encode_candidate(tokenizer, task, patch, config.max_tokens)
        return cache[(task, patch)]

    losses: list[float] = []
    trained = 0
    start = time.perf_counter()
    for number, step in enumerate(plan, 1):
        total = 0.0
        for batch in _micro_batches(step, encode, config.batch_tokens):
            loss = _pair_loss(model, batch, encode)
            (loss / len(step)).backward()
            total += float(loss.detach())
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total / len(step))
        trained += len(step)
        elapsed = time.perf_counter() - start
        if progress is not None:
            progress({"step": number, "steps": len(plan), "loss": losses[-1],
                      "lr": scheduler.get_last_lr()[0], "elapsed": elapsed,
                      "pairs_per_second": trained / elapsed})
        if config.max_seconds and elapsed > config.max_seconds:
            break
    return losses, trained


def _micro_batches(step: list[Pair], encode: Callable[[str, str], list[int]],
                   batch_tokens: int) -> list[list[Pair]]:
    """The step's pairs in order, grouped while 2 x pairs x longest stays within `batch_tokens`."""
    batches: list[list[Pair]] = []
    width = 0
    for pair in step:
        longest = max(len(encode(pair.task, pair.good)), len(encode(pair.task, pair.bad)))
        if batches and 2 * (len(batches[-1]) + 1) * max(width, longest) <= batch_tokens:
            batches[-1].append(pair)
            width = max(width, longest)
        else:
            batches.append([pair])
            width = longest
    return batches


def _pair_loss(model: Any, batch: list[Pair], encode: Callable[[str, str], list[int]]) -> Any:
    """Summed -log sigmoid(r_good - r_bad - margin) over the pairs of one forward pass."""
    import torch

    sequences = [encode(p.task, p.good) for p in batch] + [encode(p.task, p.bad) for p in batch]
    device = next(model.parameters()).device
    input_ids, mask = collate(sequences, model.config.pad_token_id, device)
    rewards = model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float()
    good, bad = rewards[:len(batch)], rewards[len(batch):]
    margins = torch.tensor([p.margin for p in batch], dtype=torch.float32, device=device)
    return -torch.nn.functional.logsigmoid(good - bad - margins).sum()


# --- the reranker folder ------------------------------------------------------------------------

def _card(base_spec: str, folder: Path, config: RerankTrainConfig, result: RerankTrainResult,
          min_gap: float) -> dict[str, Any]:
    return {
        "format": "peft-lora-seq-cls",
        "base": base_spec,
        "base_folder": str(folder),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"tasks": result.tasks, "candidates": result.candidates, "pairs": result.pairs,
                 "min_gap": min_gap},
        "config": asdict(config),
        "loss": [round(v, 5) for v in result.losses],
        "training": {"steps": result.steps, "seconds": round(result.seconds, 3),
                     "pairs_per_second": round(result.pairs_per_second, 3),
                     "pair_accuracy_before": round(result.accuracy_before, 4),
                     "pair_accuracy_after": round(result.accuracy_after, 4),
                     "dtype": dtype_name(config.precision, config.device)},
        "threshold": None,
        "metrics": {},
    }
