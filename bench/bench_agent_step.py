"""Agent time per step outside the model, with the scripted model (target: under 20 ms a step).

    python bench/bench_agent_step.py [--steps 60]

Baseline, measured in the same run: the same tool calls executed straight on the environment,
without the loop (no parsing, prompts, trajectory writes). Prints the loop's cost per step in ms
and as a ratio to the baseline; the loop's own overhead = loop - baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sera.agent.loop import Agent  # noqa: E402
from sera.agent.parse import parse_reply  # noqa: E402
from sera.agent.tools import ToolEnvironment  # noqa: E402
from sera.agent.trajectory import Trajectory  # noqa: E402
from sera.agent.workcopy import WorkCopy, snapshot_commit  # noqa: E402
from sera.config import AgentConfig, ModelConfig  # noqa: E402
from sera.models.registry import load_model  # noqa: E402

ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@b"}


def make_repo(root: Path) -> None:
    root.mkdir()
    for i in range(50):
        (root / f"mod{i}.py").write_text("".join(f"def f{j}(x):\n    return x + {j}\n\n" for j in range(40)))
    subprocess.run("git init -q && git add -A && git commit -qm init", shell=True, cwd=root, check=True, env=ENV)


def replies(steps: int) -> list[str]:
    calls = []
    for i in range(steps):
        if i % 2:
            call = {"name": "str_replace_editor", "arguments": {"command": "view", "path": f"mod{i % 50}.py"}}
        else:
            call = {"name": "str_replace_editor", "arguments": {
                "command": "str_replace", "path": f"mod{i % 50}.py",
                "old_str": f"    return x + {i % 40}\n", "new_str": f"    return x + {i % 40} + 0\n"}}
        calls.append(f"step {i}\n<tool_call>\n{json.dumps(call)}\n</tool_call>")
    return calls


def time_baseline(repo: Path, script: list[str], config: AgentConfig) -> float:
    with WorkCopy.create(repo, snapshot_commit(repo)) as wc:
        env = ToolEnvironment(wc, config)
        calls = [parse_reply(text)[0] for text in script]
        start = time.perf_counter()
        for call in calls:
            env.execute(call)
        return time.perf_counter() - start


def time_loop(repo: Path, script: list[str], config: AgentConfig, spec: str, out: Path) -> float:
    model = load_model(spec, ModelConfig(spec=spec))
    with WorkCopy.create(repo, snapshot_commit(repo)) as wc:
        env = ToolEnvironment(wc, config)
        agent = Agent(model, env, Trajectory(path=out), config, ModelConfig(spec=spec))
        start = time.perf_counter()
        agent.run("benchmark task")
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo = tmp / "repo"
        make_repo(repo)
        script = replies(args.steps)
        script_file = tmp / "script.json"
        script_file.write_text(json.dumps(script))
        # The loop ends on the step limit, right after the last scripted reply.
        config = AgentConfig(max_steps=args.steps, sandbox="none")
        base = time_baseline(repo, script, config)
        loop = time_loop(repo, script, config, f"scripted:{script_file}", tmp / "traj.json")
    base_ms, loop_ms = 1000 * base / args.steps, 1000 * loop / args.steps
    print(f"steps: {args.steps}")
    print(f"baseline (tools executed directly): {base_ms:.2f} ms/step")
    print(f"agent loop (scripted model):        {loop_ms:.2f} ms/step  = {loop_ms / base_ms:.2f}x baseline")
    print(f"loop overhead outside model+tools:  {loop_ms - base_ms:.2f} ms/step (target < 20 ms)")


if __name__ == "__main__":
    main()
