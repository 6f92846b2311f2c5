"""LoRA supervised fine-tuning with peft, in a plain torch loop; and the held-out NLL measurement.

    config = TrainConfig.for_device("cpu")            # or "cuda": METHODS.md's LoRA recipe
    result = train_lora(base_folder, rows, adapters_dir(repo) / name, config, progress=print)
    update_card(adapter_folder, accept_rate=0.4, heldout={"nll_base": 1.9, "nll_adapter": 1.2})
    mean_nll(base_folder, heldout_rows, adapter=adapter_folder, max_tokens=config.max_tokens)

The loss covers the assistant turns only, as `rows.encode_for_training` decides (the same
function serves `mean_nll`). Micro-batches are length-grouped (`rows.pack_or_group`), several
are accumulated per optimizer step, and the loss is the mean over every trained token of the step.
The LM head runs only on the trained positions, in chunks that are recomputed in the backward pass,
so the (tokens x vocabulary) logits of a long trajectory are never held at once.

Device placement goes through accelerate: a plain run uses one CPU or GPU; `accelerate launch -m
...` runs the same code data-parallel on several GPUs (each process takes every n-th batch).
The base model is frozen, in bfloat16 where the device computes in it natively (GPUs, CPUs with
AVX512-BF16 or AMX: 2.7x the tokens/s of float32 on two EPYC cores), else float32; the LoRA weights
and AdamW stay float32.

The adapter folder (peft's files, `card.json`, `loss.png`) is written to a temporary sibling and
renamed into place, so a crash never leaves half an adapter. torch, peft, transformers, accelerate
and matplotlib are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from sera.config import TrainConfig
from sera.errors import SeraError
from sera.device import dtype_name, pick_device, torch_dtype
from sera.models.transformers_backend import load_causal_lm, load_tokenizer, resolve_model_folder
from sera.paths import atomic_write_json
from sera.specialize.rows import IGNORE_INDEX, Example, Row, encode_for_training, pack_or_group

if TYPE_CHECKING:
    import torch

HEAD_CHUNK_TOKENS = 1024  # trained positions sent through the LM head at once (memory bound)


@dataclass
class TrainResult:
    losses: list[float]  # mean loss per trained token, one per optimizer step
    tokens_per_second: float  # input tokens (padding excluded) per second of the training loop
    trained_tokens: int  # assistant tokens the loss covered, over all steps
    examples: int  # rows that had at least one trained token
    seconds: float  # the training loop (loading and saving excluded)
    input_tokens: int = 0  # all tokens fed to the model, padding excluded, over all steps
    steps: int = 0


# --- training -----------------------------------------------------------------------------------

def train_lora(base: Path, rows: Sequence[Row], out_dir: Path, config: TrainConfig,
               progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a LoRA adapter of `base` (a transformers folder or a .gguf) on `rows`; save it in
    `out_dir` with `card.json` and `loss.png`. `progress` gets a dict after every optimizer step
    (step, steps, loss, lr, elapsed, tokens_per_second) and within a step after each micro-batch but
    the last (step as a fraction, loss of the last finished step or None, elapsed)."""
    import torch

    config.check()
    folder = resolve_model_folder(str(base))
    examples = encode_rows(rows, load_tokenizer(folder), config.max_tokens)
    accelerator = _accelerator(config)
    torch.manual_seed(config.seed)
    model = _lora_model(folder, config)
    module = _nll_module(model)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    plan = _step_plan(examples, config, accelerator.process_index, accelerator.num_processes)
    scheduler = lr_schedule(optimizer, config, len(plan))
    module, optimizer = accelerator.prepare(module, optimizer)
    pad_id = _pad_id(folder)
    start = time.perf_counter()
    losses, input_tokens, trained_tokens = _run_steps(
        accelerator, module, optimizer, scheduler, plan, pad_id, config, progress)
    seconds = time.perf_counter() - start
    input_tokens, trained_tokens = _sum_over_processes(accelerator, input_tokens, trained_tokens)
    result = TrainResult(losses=losses, tokens_per_second=input_tokens / max(seconds, 1e-9),
                         trained_tokens=trained_tokens, examples=len(examples), seconds=seconds,
                         input_tokens=input_tokens, steps=len(losses))
    if accelerator.is_main_process:
        card = _card(base, folder, rows, config, result, accelerator.num_processes)
        save_peft_folder(accelerator.unwrap_model(module).model, Path(out_dir), card)
    accelerator.wait_for_everyone()
    return result


def encode_rows(rows: Sequence[Row], tokenizer: Any, max_tokens: int) -> list[Example]:
    """The rows as training examples; rows without a trained token (no assistant turn left after
    the cut) are dropped. An empty result is an error that says why."""
    examples = [encode_for_training(row, tokenizer, max_tokens) for row in rows]
    # Position 0 is never predicted (nothing precedes it), so it does not count as trained.
    kept = [e for e in examples if any(label != IGNORE_INDEX for label in e.labels[1:])]
    if not kept:
        raise SeraError(f"none of the {len(rows)} training rows has an assistant turn within the "
                        f"first {max_tokens} tokens; there is nothing to train on")
    return kept


def _accelerator(config: TrainConfig) -> Any:
    from accelerate import Accelerator
    pick_device(config.device, "training")  # cuda without a GPU: say so before loading
    # Mixed precision stays off: the base is loaded in its training dtype, LoRA stays float32.
    return Accelerator(cpu=config.device == "cpu", mixed_precision="no")


def _lora_model(folder: Path, config: TrainConfig) -> Any:
    """The frozen base in its training dtype, wrapped with fresh LoRA weights (float32)."""
    model = load_causal_lm(folder).to(torch_dtype(config.precision, config.device))  # eval mode
    peft_model = add_lora(model, config, "CAUSAL_LM")  # LoRA weights in float32 (autocast_adapter_dtype)
    peft_model.train()
    return peft_model


def _step_plan(examples: list[Example], config: TrainConfig, rank: int,
               processes: int) -> list[list[list[Example]]]:
    """Optimizer steps of this process: each a list of up to grad_accum micro-batches.

    Every process gets the same number of steps (data-parallel ranks must step together); the
    batch order is reshuffled each epoch.
    """
    steps: list[list[list[Example]]] = []
    epoch = 0
    while epoch < config.epochs or (config.max_steps and len(steps) < config.max_steps):
        batches = pack_or_group(examples, config.batch_tokens, max_batch_size=config.batch_size,
                                seed=config.seed + epoch)
        while len(batches) < processes:  # tiny data on many GPUs: everyone needs a batch
            batches = batches + batches
        per_process = len(batches) // processes
        mine = batches[rank::processes][:per_process]
        steps += [mine[i:i + config.grad_accum] for i in range(0, len(mine), config.grad_accum)]
        epoch += 1
        if config.max_steps and len(steps) >= config.max_steps:
            break
    return steps[:config.max_steps] if config.max_steps else steps


def add_lora(model: Any, config: Any, task_type: str) -> Any:
    """`model` (frozen) with LoRA layers as `config` (train or rerank_train) says: rank, alpha,
    dropout, target modules, gradient checkpointing; peft's `task_type` (CAUSAL_LM for the agent,
    SEQ_CLS for the reranker, whose `score` head then trains too)."""
    from peft import LoraConfig, get_peft_model
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # the frozen embeddings' output must carry gradients
    target: Any = config.target_modules
    if target == ["all-linear"]:
        target = "all-linear"
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=target, task_type=task_type)
    return get_peft_model(model, lora)


def lr_schedule(optimizer: Any, config: TrainConfig, total_steps: int) -> Any:
    """Linear warmup, then cosine or linear decay to zero at the last step. Not
    transformers.get_scheduler: its warmup gives step 0 a learning rate of 0, so the first
    optimizer step of a run does nothing, and CPU runs here have 2 to 6 steps in all."""
    import torch
    warmup = max(1, round(config.warmup_ratio * total_steps)) if config.warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total_steps - warmup)
        if config.schedule == "linear":
            return max(0.0, 1.0 - done)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _run_steps(accelerator: Any, module: Any, optimizer: Any, scheduler: Any,
               plan: list[list[list[Example]]], pad_id: int, config: TrainConfig,
               progress: Callable[[dict], None] | None) -> tuple[list[float], int, int]:
    """The loop: per step, accumulate the micro-batches' summed NLL / the step's trained tokens."""
    losses: list[float] = []
    input_tokens = trained_tokens = 0
    start = time.perf_counter()
    params = [p for p in module.parameters() if p.requires_grad]
    for number, micro_batches in enumerate(plan, 1):
        tensors = [_collate(batch, pad_id, accelerator.device) for batch in micro_batches]
        step_tokens = sum(int(t["trained"]) for t in tensors)
        step_nll = 0.0
        for index, batch in enumerate(tensors):
            last = index == len(tensors) - 1
            # Gradients are synchronised across processes only on the step's last micro-batch.
            with contextlib.nullcontext() if last else accelerator.no_sync(module):
                nll = module(batch["input_ids"], batch["attention_mask"], batch["labels"])
                accelerator.backward(nll / step_tokens)
            step_nll += float(nll.detach())
            if progress is not None and not last:  # a step is many minutes of a CPU: show life
                progress({"step": number - 1 + (index + 1) / len(tensors), "steps": len(plan),
                          "loss": losses[-1] if losses else None,
                          "elapsed": time.perf_counter() - start})
        if config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        nll_sum, token_sum = _sum_over_processes(accelerator, step_nll, step_tokens, kind=float)
        losses.append(nll_sum / token_sum)  # the step's loss over every process's tokens
        input_tokens += sum(int(t["attention_mask"].sum()) for t in tensors)
        trained_tokens += step_tokens
        elapsed = time.perf_counter() - start
        if progress is not None:
            progress({"step": number, "steps": len(plan), "loss": losses[-1],
                      "lr": scheduler.get_last_lr()[0], "elapsed": elapsed,
                      "tokens_per_second": input_tokens * accelerator.num_processes / elapsed})
        if config.max_seconds and _any_process(accelerator, elapsed > config.max_seconds):
            break
    return losses, input_tokens, trained_tokens


def _any_process(accelerator: Any, flag: bool) -> bool:
    """Whether `flag` holds on any process (ranks must stop at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    import torch
    return bool(accelerator.gather(torch.tensor([int(flag)], device=accelerator.device)).any())


def _collate(batch: list[Example], pad_id: int, device: Any) -> dict[str, "torch.Tensor"]:
    """Right-padded tensors; padding is masked out of attention and of the loss."""
    import torch
    width = max(len(e) for e in batch)
    ids = [e.input_ids + [pad_id] * (width - len(e)) for e in batch]
    labels = [e.labels + [IGNORE_INDEX] * (width - len(e)) for e in batch]
    mask = [[1] * len(e) + [0] * (width - len(e)) for e in batch]
    labels_tensor = torch.tensor(labels, device=device)
    return {"input_ids": torch.tensor(ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            "labels": labels_tensor,
            "trained": (labels_tensor[:, 1:] != IGNORE_INDEX).sum()}


def _sum_over_processes(accelerator: Any, *values: float, kind: type = int) -> list:
    if accelerator.num_processes == 1:
        return [kind(v) for v in values]
    import torch
    tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return [kind(v) for v in accelerator.reduce(tensor, reduction="sum").tolist()]


def _pad_id(folder: Path) -> int:
    """Any valid id does: padded positions are masked. The config's pad id, else its eos, else 0."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key in ("pad_token_id", "eos_token_id"):
        value = config.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            return value
    return 0


# --- the loss -----------------------------------------------------------------------------------

def _nll_module(model: Any) -> Any:
    """A module whose forward is the summed NLL of the labelled tokens of a batch.

    One module holds the whole computation so that data-parallel wrapping (accelerate's prepare)
    sees every forward pass. The LM head runs only on trained positions; models whose logits are
    more than `lm_head(hidden)` (soft-capping, logit scaling) go through their full forward.
    """
    import torch

    class AssistantNll(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model
            causal = _causal_lm(model)
            text = causal.config.get_text_config()
            self.plain_head = not any(getattr(text, name, None) for name in (
                "final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"))

        def forward(self, input_ids: Any, attention_mask: Any, labels: Any) -> Any:
            targets = labels[:, 1:]
            mask = targets != IGNORE_INDEX
            if not self.plain_head:
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
                return torch.nn.functional.cross_entropy(
                    logits[:, :-1][mask].float(), targets[mask], reduction="sum")
            causal = _causal_lm(self.model)
            hidden = causal.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                          use_cache=False).last_hidden_state
            return _chunked_head_nll(hidden[:, :-1][mask], targets[mask],
                                     causal.get_output_embeddings())

    return AssistantNll(model)


def _causal_lm(model: Any) -> Any:
    """The transformers model inside a peft wrapper (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _chunked_head_nll(hidden: "torch.Tensor", targets: "torch.Tensor", head: Any) -> "torch.Tensor":
    """Sum of -log p(target) through the LM head, chunk by chunk; when training, each chunk's
    logits are recomputed in the backward pass instead of kept (a vocabulary row per token)."""
    from torch.utils.checkpoint import checkpoint

    if targets.numel() == 0:  # keeps the graph connected: backward gives zero gradients
        return hidden.sum() * 0.0
    total = None
    for start in range(0, targets.numel(), HEAD_CHUNK_TOKENS):
        chunk = hidden[start:start + HEAD_CHUNK_TOKENS]
        chunk_targets = targets[start:start + HEAD_CHUNK_TOKENS]
        if chunk.requires_grad and targets.numel() > HEAD_CHUNK_TOKENS:
            part = checkpoint(_head_nll, chunk, chunk_targets, head, use_reentrant=False)
        else:
            part = _head_nll(chunk, chunk_targets, head)
        total = part if total is None else total + part
    return total


def _head_nll(hidden: "torch.Tensor", targets: "torch.Tensor", head: Any) -> "torch.Tensor":
    import torch
    return torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="sum")


# --- evaluation ---------------------------------------------------------------------------------

def mean_nll(base: Path, rows: Sequence[Row], adapter: Path | None = None, max_tokens: int = 4096,
             *, batch_tokens: int | None = None, device: str = "auto", precision: str = "auto",
             progress: Callable[[int, int], None] | None = None) -> float:
    """Mean negative log-likelihood per trained (assistant) token of `rows`, under the base model
    or the base with `adapter`; the mask is the training one; the base in `precision` (as
    training's: compare figures measured in the same one). `progress(done, total)` hears of
    every batch (minutes each for a 1.5B model on a CPU)."""
    import torch

    folder = resolve_model_folder(str(base))
    examples = encode_rows(rows, load_tokenizer(folder), max_tokens)
    target = torch.device(pick_device(device, "evaluation"))
    model = load_causal_lm(folder).to(torch_dtype(precision, target.type))
    if adapter is not None:
        model = _with_adapter(model, Path(adapter))
    module = _nll_module(model).to(target).eval()
    total, count, pad_id = 0.0, 0, _pad_id(folder)
    batches = pack_or_group(examples, batch_tokens or max_tokens, seed=None)
    with torch.inference_mode():
        for done, batch in enumerate(batches, 1):
            tensors = _collate(batch, pad_id, target)
            total += float(module(tensors["input_ids"], tensors["attention_mask"],
                                  tensors["labels"]))
            count += int(tensors["trained"])
            if progress is not None:
                progress(done, len(batches))
    return total / count


def _with_adapter(model: Any, adapter: Path) -> Any:
    from peft import PeftModel
    if not (adapter / "adapter_config.json").is_file():
        raise SeraError(f"adapter {adapter} not found: pass the folder that holds "
                        f"adapter_config.json (e.g. .sera/adapters/<name>)")
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=False)


# --- the adapter folder -------------------------------------------------------------------------

def _card(base: Path, folder: Path, rows: Sequence[Row], config: TrainConfig, result: TrainResult,
          processes: int) -> dict[str, Any]:
    return {
        "format": "peft-lora",
        "base_model": str(base),
        "base_folder": str(folder),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"rows": len(rows), "examples": result.examples,
                 "skipped_rows": len(rows) - result.examples,
                 "input_tokens": result.input_tokens, "trained_tokens": result.trained_tokens},
        "config": asdict(config),
        "training": {"steps": result.steps, "seconds": round(result.seconds, 3),
                     "tokens_per_second": round(result.tokens_per_second, 1),
                     "processes": processes, "dtype": dtype_name(config.precision, config.device)},
        "loss": [round(v, 5) for v in result.losses],
    }


def update_card(out_dir: Path, **fields: Any) -> dict[str, Any]:
    """Add or replace top-level fields of the adapter's card.json (accept rate, held-out NLL...)."""
    path = Path(out_dir) / "card.json"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeraError(f"{out_dir} has no card.json; is it an adapter folder sera trained?") from None
    card.update(fields)
    atomic_write_json(path, card)
    return card


def save_peft_folder(peft_model: Any, out_dir: Path, card: dict[str, Any]) -> None:
    """peft's files (LoRA weights, and a reward head for a reranker), card.json and loss.png,
    built in a temporary sibling and renamed into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        peft_model.save_pretrained(str(tmp))
        atomic_write_json(tmp / "card.json", card)
        plot_loss(card["loss"], tmp / "loss.png")
        replace_folder(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(new: Path, target: Path) -> None:
    """Rename `new` to `target`; an existing `target` (a retrained adapter) is moved aside first."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def plot_loss(losses: Sequence[float], path: Path) -> None:
    """The loss curve as a PNG (Agg, no display needed): each step, and a moving average."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.subplots()
    steps = list(range(1, len(losses) + 1))
    axes.plot(steps, losses, alpha=0.35, label="step")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        axes.plot(steps, smooth, label=f"mean of {window}")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss per assistant token")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(str(path))
