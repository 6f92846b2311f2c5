"""What a GRPO step of the policy stage costs, against sampling the same answers alone.

    python bench/bench_policy.py                      # the tiny test model
    python bench/bench_policy.py --model 0.5b         # embedded 0.5B, dequantized (cached)
    python bench/bench_policy.py --model 0.5b --steps 2 --generations 4 --completion-tokens 128

The policy stage (specialize/stages/policy.py) runs `optimize_policy`: per step, `--generations`
one-shot answers to a task's guided edit request are sampled, applied, scored by the reranker
(trained here for one step on the same base: its speed does not depend on what it learnt) and
the LoRA adapter is updated. The baseline is the same base with a fresh LoRA adapter sampling the
same number of answers to the same prompt with `generate` (same length cap, temperature 1.0),
timed in the same run. Printed: seconds per GRPO step, seconds of the baseline, the ratio, and
the peak resident memory of the process (policy + reranker + KL reference).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sera.reranker.model import LoraReranker  # noqa: E402
from sera.reranker.labels import LabeledPatch, TaskGroup  # noqa: E402
from sera.config import PolicyConfig, RerankTrainConfig  # noqa: E402
from sera.specialize.grpo import optimize_policy, policy_prompt, policy_tasks  # noqa: E402
from sera.reranker.train import train_reranker  # noqa: E402

from bench_rerank import resolve_model  # noqa: E402  (this folder is on sys.path: a script's own)

SOURCE = '''"""Configuration files: key=value lines."""


def parse(text):
    """The keys and values of `text`, one pair a line; blank lines and comments are skipped."""
    values = {}
    for line in text.split("\\n")[:-1]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def dump(values):
    return "".join(f"{key}={value}\\n" for key, value in sorted(values.items()))
'''
FIXED = SOURCE.replace('text.split("\\n")[:-1]', "text.splitlines()")
TASK = ("parse() drops the last line of a config file that has no trailing newline: "
        "parse('a=1\\nb=2') gives {'a': '1'}; expected {'a': '1', 'b': '2'}.")


def make_task(root: Path):
    """A repository with the bug and the commit that fixes it; the fix's task."""
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                        *args], cwd=root, check=True, capture_output=True)
    root.mkdir()
    git("init", "-q")
    (root / "config.py").write_text(SOURCE)
    git("add", "-A")
    git("commit", "-qm", "config parser")
    (root / "config.py").write_text(FIXED)
    git("commit", "-qam", TASK)
    from sera.specialize.mining import mine_history
    return policy_tasks(root, [t for t in mine_history(root) if t.message.startswith("parse()")])


def train_reranker_for(folder: Path, spec: str, reference: str, out: Path) -> None:
    bad = reference.replace("+", "+#", 1)
    group = TaskGroup("t", TASK, reference, [LabeledPatch(reference, 1.0), LabeledPatch(bad, 0.0)])
    train_reranker(folder, [group], out, RerankTrainConfig(device="cpu", epochs=1,
                                                           pairs_per_step=1, max_tokens=1024),
                   base_spec=spec)


def time_sampling(folder: Path, prompt: list[dict], config: PolicyConfig) -> float:
    """`generations` answers with `generate` from the base with a fresh LoRA (the work a GRPO
    step cannot skip), in seconds."""
    import torch
    from peft import LoraConfig, get_peft_model
    from sera.models.transformers_backend import load_causal_lm, load_tokenizer
    tokenizer = load_tokenizer(folder)
    model = get_peft_model(load_causal_lm(folder), LoraConfig(
        r=config.rank, lora_alpha=config.alpha, target_modules=config.target_modules,
        task_type="CAUSAL_LM")).eval()
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids.repeat(config.num_generations, 1),
                       attention_mask=torch.ones_like(ids).repeat(config.num_generations, 1),
                       do_sample=True, temperature=config.temperature,
                       max_new_tokens=config.max_completion_tokens,
                       pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, 0.5b, 1.5b or a transformers folder")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--completion-tokens", type=int, default=128)
    parser.add_argument("--beta", type=float, default=0.04, help="KL weight (0: no reference pass)")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    folder, spec = resolve_model(args.model)
    config = PolicyConfig(steps=args.steps, num_generations=args.generations,
                          max_completion_tokens=args.completion_tokens, beta=args.beta,
                          device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tasks = make_task(Path(tmp) / "repo")
        prompt = policy_prompt(tasks[0], config)
        train_reranker_for(folder, spec, tasks[0].reference, Path(tmp) / "reranker")
        reranker = LoraReranker.load(Path(tmp) / "reranker", device="cpu")
        started = time.perf_counter()
        result = optimize_policy(folder, None, Path(tmp) / "policy", tasks, reranker.score,
                                 config, student_spec=spec)
        total = time.perf_counter() - started
        reranker.close()
        baseline = time_sampling(folder, prompt, config)
    per_step = result.seconds / max(1, result.steps)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"model {spec} | {args.generations} answers of <= {args.completion_tokens} tokens a "
          f"step, beta {args.beta} | {result.steps} steps, rewards {result.rewards}")
    print(f"GRPO step {per_step:.1f} s (with loading and saving: {total / result.steps:.1f} s); "
          f"sampling the same answers alone {baseline:.1f} s; ratio step/sampling = "
          f"{per_step / baseline:.2f}x; peak memory {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
