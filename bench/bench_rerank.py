"""Reranker candidates/s on CPU against a bare forward pass of the same base model (target: ~1x).

    python bench/bench_rerank.py                         # the tiny test model
    python bench/bench_rerank.py --model 0.5b            # embedded 0.5B, dequantized (cached)
    python bench/bench_rerank.py --model /path/to/transformers/folder --candidates 32

A reranker is trained for one step on one synthetic pair (its speed does not depend on what it
learnt), saved, and loaded back as `solve` loads it (`LoraReranker.load`: bf16 with the LoRA apart
where the CPU computes in bf16, else fp32 with the LoRA merged into the base weights; `--precision`
picks; `--unmerged` keeps the LoRA layers apart in fp32 too, as training has them;
`--shared` scores on a transformers agent model of the same base, as `sera solve` does when the
agent runs in transformers: one base in memory, the LoRA unmerged, the head applied by sera).
Then the same synthetic candidates (patches from a few lines up to about `--max-tokens`) are
scored by `LoraReranker.score` (encoding, batching, LoRA layers, head) and pushed through the bare
base decoder (`AutoModel`, no head, no LoRA) with the very same token ids and batches, in inference
mode, and through the bare base in fp32 (the speed-up of bf16). The runs alternate (base, fp32
base, reranker, ...); medians and bests are reported, since a shared CPU is noisy. The ratios are
reranker candidates/s over bare-base candidates/s in this run, in the same dtype and in fp32.
"""

from __future__ import annotations

import argparse
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

from sera.reranker.model import (LoraReranker, collate, encode_candidates,  # noqa: E402
                                  length_batches)
from sera.reranker.labels import LabeledPatch, TaskGroup  # noqa: E402
from sera.config import RerankTrainConfig  # noqa: E402
from sera.reranker.train import train_reranker  # noqa: E402
from sera.device import torch_dtype  # noqa: E402

WORDS = ("def return self value path config items result error line index name import os sys "
         "json for in if else while try except raise with open as None True False int str list "
         "dict len range print assert parse load save update 0 1 2 42").split()


def resolve_model(arg: str) -> tuple[Path, str]:
    """(transformers folder, spec) of --model."""
    if arg in ("", "tiny"):
        from tiny_models import build_tiny_model
        folder = build_tiny_model()
        return folder, f"transformers:{folder}"
    from sera.models.local import transformers_folder
    spec = f"embedded:{arg}" if arg in ("0.5b", "1.5b") else f"transformers:{arg}"
    return transformers_folder(spec, purpose="benchmark model"), spec


def make_patch(rng: random.Random, lines: int) -> str:
    body = []
    for _ in range(lines):
        words = " ".join(rng.choices(WORDS, k=rng.randint(3, 9)))
        body.append(rng.choice("+- ") + "    " + words)
    return ("diff --git a/src/m.py b/src/m.py\n--- a/src/m.py\n+++ b/src/m.py\n"
            f"@@ -1,{lines} +1,{lines} @@\n" + "\n".join(body) + "\n")


def make_candidates(count: int, max_tokens: int, seed: int) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    task = ("The parser drops the last line of the config file when it has no trailing newline. "
            "Reading `a=1\\nb=2` gives only a. Expected both keys.")
    most_lines = max(2, max_tokens // 12)  # about 12 tokens a line: the longest nearly fill it
    return task, [make_patch(rng, rng.randint(2, most_lines)) for _ in range(count)]


def train_tiny_reranker(folder: Path, spec: str, out_dir: Path) -> None:
    """One optimizer step on one pair: a real reranker folder, quickly."""
    good, bad = make_patch(random.Random(1), 3), make_patch(random.Random(2), 3)
    group = TaskGroup("t", "fix the parser", reference=good,
                      candidates=[LabeledPatch(good, 1.0), LabeledPatch(bad, 0.0)])
    config = RerankTrainConfig(device="cpu", epochs=1, pairs_per_step=1, max_tokens=256)
    train_reranker(folder, [group], out_dir, config, base_spec=spec)


def time_reranker(reranker: LoraReranker, task: str, patches: list[str]) -> float:
    start = time.perf_counter()
    reranker.score(task, patches)
    return time.perf_counter() - start


def time_bare(model, encoded: list[list[int]], batch_tokens: int, pad_id: int) -> float:
    import torch
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in length_batches(encoded, batch_tokens):
            input_ids, mask = collate([encoded[i] for i in batch], pad_id, "cpu")
            model(input_ids=input_ids, attention_mask=mask)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, 0.5b, 1.5b or a transformers folder")
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each, alternating")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's choice)")
    parser.add_argument("--unmerged", action="store_true", help="keep the LoRA layers unmerged")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="the reranker's base dtype (auto: bf16 where the CPU computes in it, "
                             "LoRA unmerged); the bare base runs in the same dtype, and in fp32")
    parser.add_argument("--shared", action="store_true", help="score on the agent's own "
                        "transformers model (LoraReranker.sharing: one base serves both)")
    args = parser.parse_args()

    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the bare decoder's load report lists the unused LM head
    if args.threads:
        torch.set_num_threads(args.threads)
    folder, spec = resolve_model(args.model)
    task, patches = make_candidates(args.candidates, args.max_tokens, seed=0)
    scratch = tempfile.TemporaryDirectory()  # kept to the end: a shared reranker reads it per call
    out_dir = Path(scratch.name) / "reranker"
    train_tiny_reranker(folder, spec, out_dir)
    if args.shared:
        from sera.config import ModelConfig
        from sera.models.registry import load_model
        agent = load_model(f"transformers:{folder}", ModelConfig())
        reranker = LoraReranker.sharing(agent, out_dir, max_tokens=args.max_tokens)
    else:
        reranker = LoraReranker.load(out_dir, device="cpu", max_tokens=args.max_tokens,
                                     merge=False if args.unmerged else None,
                                     precision=args.precision)
    encoded = encode_candidates(reranker.tokenizer, task, patches, args.max_tokens)
    pad_id = reranker.pad_id
    dtype = torch_dtype(args.precision, "cpu")
    bare = AutoModel.from_pretrained(str(folder), dtype=dtype).eval()
    bare32 = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    lengths = sorted(len(e) for e in encoded)
    print(f"model {spec} | {len(encoded)} candidates of {lengths[0]}..{lengths[-1]} tokens "
          f"(median {lengths[len(lengths) // 2]}) | batches of <= {reranker.batch_tokens} padded "
          f"tokens | {dtype} | torch threads {torch.get_num_threads()}", flush=True)
    time_reranker(reranker, task, patches[:2])  # warm-up: first-call allocations
    time_bare(bare, encoded[:2], reranker.batch_tokens, pad_id)
    base_runs, base32_runs, rerank_runs = [], [], []
    for repeat in range(args.repeats):
        base_runs.append(len(encoded) / time_bare(bare, encoded, reranker.batch_tokens, pad_id))
        base32_runs.append(len(encoded) / time_bare(bare32, encoded, reranker.batch_tokens, pad_id))
        rerank_runs.append(len(encoded) / time_reranker(reranker, task, patches))
        print(f"  run {repeat + 1}: bare base {base_runs[-1]:.3g} candidates/s (fp32 "
              f"{base32_runs[-1]:.3g}), reranker {rerank_runs[-1]:.3g} candidates/s", flush=True)
    for label, pick in (("median", statistics.median), ("best", max)):
        base_cps, base32_cps, rerank_cps = pick(base_runs), pick(base32_runs), pick(rerank_runs)
        print(f"{label} candidates/s: reranker {rerank_cps:.3g}, bare base forward "
              f"{base_cps:.3g}, ratio reranker/base = {rerank_cps / base_cps:.2f}x; "
              f"against the bare base in fp32 ({base32_cps:.3g}): {rerank_cps / base32_cps:.2f}x")
    reranker.close()
    scratch.cleanup()


if __name__ == "__main__":
    main()
