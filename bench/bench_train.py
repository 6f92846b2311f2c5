"""LoRA training tokens/s of sera's train_lora against TRL's SFTTrainer (target: at least as fast).

    python bench/bench_train.py                                   # the tiny test model
    python bench/bench_train.py --model 0.5b --steps 3 --max-tokens 384 --rows 12 --repeats 1
    python bench/bench_train.py --model /path/to/transformers/folder

`--model 0.5b` / `1.5b` is the embedded GGUF, dequantized once (cached) with dequantize_gguf.
Both trainers get the same model folder, the same rows (synthetic agent trajectories, loss on the
assistant turns: TRL receives our token ids and assistant mask), the same LoRA (rank, alpha,
dropout, targets), learning rate and cosine schedule, max length, examples per micro-batch,
gradient accumulation, gradient checkpointing and number of optimizer steps. TRL samples by
length too (`train_sampling_strategy="group_by_length"`; `--trl-sampling random` for its default),
on CPU (use_cpu=True), in bf16 (autocast) where ours runs its base in bf16.

Tokens/s = input tokens (padding excluded) / seconds of the training loop (ours: TrainResult;
TRL: train_runtime of trainer.train()). The end-to-end time (load, prepare, train, save) is shown
too. The runs alternate (ours, TRL, ours, TRL...); medians and bests are reported, since a shared
CPU is noisy (the best run is the one least disturbed by other load).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tiny_models
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sera.specialize.rows import IGNORE_INDEX  # noqa: E402
from sera.config import TrainConfig  # noqa: E402
from sera.device import torch_dtype  # noqa: E402
from sera.specialize.lora import encode_rows, train_lora  # noqa: E402

WORDS = ("def return self value path config items result error line index name self.cache "
         "import os sys json for in if else while try except raise with open as yield None True "
         "False int str list dict len range print assert test_ parse load save update 0 1 2 42").split()


def code_lines(rng: random.Random, count: int) -> str:
    lines = []
    for number in range(1, count + 1):
        indent = "    " * rng.randint(0, 2)
        lines.append(f"{number:6}\t{indent}" + " ".join(rng.choices(WORDS, k=rng.randint(3, 10))))
    return "\n".join(lines)


def make_rows(count: int, seed: int, max_lines: int) -> list[list[dict]]:
    """Agent-like trajectories: tool outputs (code listings) much longer than the assistant turns."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        messages = [{"role": "system", "content": "You are a coding agent. Tools: bash, "
                                                  "str_replace_editor, submit."},
                    {"role": "user", "content": f"Possible issue in function_{index} of src/m.py."}]
        views = rng.randint(1, 3)
        for _ in range(views):
            call = {"name": "str_replace_editor",
                    "arguments": {"command": "view", "path": f"src/m{rng.randint(0, 9)}.py"}}
            thought = " ".join(rng.choices(WORDS, k=rng.randint(5, 25)))
            messages.append({"role": "assistant",
                             "content": f"{thought}\n<tool_call>\n{json.dumps(call)}\n</tool_call>"})
            listing = code_lines(rng, rng.randint(1, max(1, max_lines // views)))
            messages.append({"role": "user",
                             "content": f"<tool_response>\n{listing}\n</tool_response>"})
        messages.append({"role": "assistant",
                         "content": '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call>'})
        rows.append(messages)
    return rows


def resolve_model(arg: str | None) -> Path:
    if arg in (None, "", "tiny"):
        from tiny_models import build_tiny_model
        return build_tiny_model()
    if arg in ("0.5b", "1.5b"):
        from sera.models.embedded import embedded_gguf_path
        from sera.models.transformers_backend import dequantize_gguf
        return dequantize_gguf(embedded_gguf_path(arg))
    return Path(arg)


def run_ours(model: Path, rows: list, config: TrainConfig) -> dict:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_lora(model, rows, Path(tmp) / "adapter", config)
    return {"tokens": result.input_tokens, "loop_s": result.seconds,
            "tps": result.tokens_per_second, "total_s": time.perf_counter() - start,
            "loss": result.losses}


def run_trl(model_dir: Path, rows: list, config: TrainConfig, sampling: str) -> dict:
    start = time.perf_counter()
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    from sera.models.transformers_backend import load_causal_lm, load_tokenizer

    hf_logging.set_verbosity_error()
    tokenizer = load_tokenizer(model_dir)
    examples = encode_rows(rows, tokenizer, config.max_tokens)
    dataset = Dataset.from_list([
        {"input_ids": e.input_ids, "assistant_masks": [int(x != IGNORE_INDEX) for x in e.labels]}
        for e in examples])
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp, per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum, max_steps=config.max_steps,
            learning_rate=config.lr, lr_scheduler_type="cosine",
            warmup_steps=max(1, round(config.warmup_ratio * config.max_steps)),
            weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
            max_length=config.max_tokens, gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            train_sampling_strategy=sampling, seed=config.seed,
            bf16=torch_dtype(config.precision, "cpu") == torch.bfloat16, use_cpu=True,
            report_to="none", eval_strategy="no", save_strategy="no",
            logging_steps=max(1, config.max_steps), disable_tqdm=True, dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding")
        trainer = SFTTrainer(model=load_causal_lm(model_dir), args=args, train_dataset=dataset,
                             processing_class=tokenizer, peft_config=lora)
        output = trainer.train()
        trainer.save_model(str(Path(tmp) / "adapter"))
        tokens = int(trainer.state.num_input_tokens_seen)
        loop_s = float(output.metrics["train_runtime"])
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens": tokens, "loop_s": loop_s, "tps": tokens / loop_s,
            "total_s": time.perf_counter() - start, "loss": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, 0.5b, 1.5b or a transformers folder")
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=2, help="examples per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="the frozen base's dtype (auto: bf16 where the CPU computes in it)")
    parser.add_argument("--trl-sampling", default="group_by_length",
                        choices=["group_by_length", "random"])
    args = parser.parse_args()

    model = resolve_model(args.model)
    max_lines = max(4, args.max_tokens // 16)  # rows from a few lines up to about one context
    rows = make_rows(args.rows, seed=0, max_lines=max_lines)
    config = TrainConfig(device="cpu", rank=args.rank, alpha=2 * args.rank, dropout=0.05, lr=2e-4,
                         max_steps=args.steps, max_tokens=args.max_tokens,
                         batch_size=args.batch_size,
                         batch_tokens=args.batch_size * args.max_tokens,
                         grad_accum=args.grad_accum, warmup_ratio=0.1,
                         gradient_checkpointing=not args.no_gradient_checkpointing,
                         precision=args.precision)
    print(f"model {model} | {len(rows)} rows | {args.steps} steps x {args.grad_accum} micro-batches "
          f"of {args.batch_size} | max {args.max_tokens} tokens | LoRA r={args.rank} | "
          f"checkpointing {config.gradient_checkpointing} | TRL sampling {args.trl_sampling} | "
          f"{torch_dtype(config.precision, 'cpu')}",
          flush=True)
    ours, trl = [], []
    for repeat in range(args.repeats):
        for name, runs, run in (("sera", ours, lambda: run_ours(model, rows, config)),
                                ("trl ", trl, lambda: run_trl(model, rows, config,
                                                              args.trl_sampling))):
            runs.append(run())
            r = runs[-1]
            print(f"  run {repeat + 1} {name}: {r['tokens']} tokens in {r['loop_s']:.2f} s "
                  f"= {r['tps']:.0f} tokens/s (end to end {r['total_s']:.1f} s)", flush=True)
    for label, pick in (("median", statistics.median), ("best", max)):
        ours_tps, trl_tps = pick(r["tps"] for r in ours), pick(r["tps"] for r in trl)
        print(f"{label} tokens/s: sera {ours_tps:.0f}, TRL SFTTrainer {trl_tps:.0f}, "
              f"ratio sera/TRL = {ours_tps / trl_tps:.2f}x (target >= 1.0)")
    ours_total = statistics.median(r["total_s"] for r in ours)
    trl_total = statistics.median(r["total_s"] for r in trl)
    print(f"median end to end: sera {ours_total:.1f} s, TRL {trl_total:.1f} s "
          f"(sera is {trl_total / ours_total:.2f}x as fast)")

if __name__ == "__main__":
    main()
