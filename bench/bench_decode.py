"""Decode tokens/s of each backend inside the agent loop against the raw engine (target: < 10%).

    python bench/bench_decode.py                      # embedded:0.5b and transformers on the same GGUF
    python bench/bench_decode.py --model llamacpp:/path/model.gguf --steps 4 --max-tokens 96

For each model: one warm-up call, then the agent runs `--steps` real steps on a small repository
(greedy), with every model call timed from the loop's side; then the same prompts are replayed on
the raw engine (xllamacpp's server call, or transformers' generate), in the same order, so both see
the same prompt-cache state. Prints tokens/s of both and the loop's ratio to the raw engine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sera.agent.loop import STOP_STRINGS, Agent, system_prompt  # noqa: E402
from sera.agent.prompts import render  # noqa: E402
from sera.agent.tools import ToolEnvironment  # noqa: E402
from sera.agent.trajectory import Trajectory  # noqa: E402
from sera.agent.workcopy import WorkCopy, snapshot_commit  # noqa: E402
from sera.config import AgentConfig, ModelConfig  # noqa: E402
from sera.models.registry import load_model  # noqa: E402


class TimedModel:
    """Delegates to a ChatModel and records each call as the loop sees it."""

    def __init__(self, model):
        self.model, self.spec, self.calls = model, model.spec, []

    concurrent = False

    def complete(self, messages, **kwargs):
        start = time.perf_counter()
        out = self.model.complete(messages, **kwargs)
        self.calls.append((list(messages), time.perf_counter() - start, out[0].completion_tokens))
        return out

    def close(self):
        self.model.close()


def make_repo(root: Path) -> Path:
    root.mkdir()
    (root / "calc.py").write_text('def add(a, b):\n    """Return the sum."""\n    return a - b\n')
    subprocess.run("git init -q && git add -A && git -c user.name=b -c user.email=b@b commit -qm i",
                   shell=True, cwd=root, check=True)
    return root


def raw_engine(model):
    """A function (messages, max_tokens) -> completion tokens, calling the engine under the backend."""
    if hasattr(model, "_server"):  # llama.cpp through xllamacpp
        def call(messages, max_tokens):
            reply = model._server.handle_chat_completions(
                {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
                 "stop": STOP_STRINGS, "cache_prompt": True})
            return reply["usage"]["completion_tokens"]
        return call
    import torch  # transformers

    hf, tok = model._model, model._tokenizer

    def call(messages, max_tokens):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=max_tokens)
        return out.shape[1] - ids.shape[1]
    return call


def bench(spec: str, steps: int, max_tokens: int) -> None:
    config = ModelConfig(spec=spec, temperature=0.0, max_tokens=max_tokens, context_tokens=8192)
    model = TimedModel(load_model(spec, config))
    raw = raw_engine(model.model)
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo")
        agent_config = AgentConfig(max_steps=steps, sandbox="none")
        with WorkCopy.create(repo, snapshot_commit(repo)) as wc:
            agent = Agent(model, ToolEnvironment(wc, agent_config), Trajectory(), agent_config, config)
            raw([{"role": "system", "content": system_prompt()},
                 {"role": "user", "content": render("task", task="add() returns a - b; fix it")}],
                1)  # warm-up: the same cache state for both sides from here on
            agent.run("add() returns a - b; fix it")
    loop_s = sum(seconds for _, seconds, _ in model.calls)
    loop_tokens = sum(tokens for _, _, tokens in model.calls)
    raw_s, raw_tokens = 0.0, 0
    for messages, _, _ in model.calls:
        start = time.perf_counter()
        raw_tokens += raw(messages, max_tokens)
        raw_s += time.perf_counter() - start
    model.close()
    loop_rate, raw_rate = loop_tokens / loop_s, raw_tokens / raw_s
    print(f"{spec}: {len(model.calls)} calls; raw engine {raw_rate:.1f} tok/s ({raw_tokens} tokens, "
          f"{raw_s:.1f} s); in the agent loop {loop_rate:.1f} tok/s ({loop_tokens} tokens, "
          f"{loop_s:.1f} s); loop/raw = {loop_rate / raw_rate:.3f} "
          f"(overhead {100 * (1 - loop_rate / raw_rate):+.1f}%, target < 10%)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", help="model spec (repeatable)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    specs = args.model
    if not specs:
        from sera.models.embedded import embedded_gguf_path
        specs = ["embedded:0.5b", f"transformers:{embedded_gguf_path('0.5b')}"]
    for spec in specs:
        bench(spec, args.steps, args.max_tokens)


if __name__ == "__main__":
    main()
