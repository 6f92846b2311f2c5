"""What the teacher is asked besides driving the agent: the rollout-1 request, the self-check of a
rollout, and the synthetic issue written from it. Prompt texts live in templates/ and data/."""

from __future__ import annotations

import json
import random
import re
import subprocess
from functools import cache
from importlib import resources
from pathlib import Path

from sera.agent.example import without_examples
from sera.agent.parse import parse_reply
from sera.agent.prompts import render_from
from sera.agent.protocol import FormatError
from sera.models.base import ChatModel, Completion

PACKAGE = "sera.specialize"
STEP_OUTPUT_CHARS = 400  # each tool output shown to the teacher is clipped to this
ISSUE_MAX_TOKENS = 600
ANSWER_MAX_TOKENS = 64


@cache
def _data(name: str) -> list[str]:
    return json.loads(resources.files(PACKAGE).joinpath(f"data/{name}.json").read_text("utf-8"))


def directions() -> list[str]:
    return _data("directions")


def rollout1_request(function: str, path: str, rng: random.Random) -> str:
    """A deliberately vague request around one function, in one of ~50 directions."""
    return render_from(PACKAGE, "rollout1", function=function, path=path,
                       direction=rng.choice(directions()))


def summarize_steps(messages: list[dict]) -> str:
    """The agent's actions and clipped observations, one block per step, for the teacher to read."""
    lines = []
    for message in without_examples(messages)[2:]:
        text = message["content"]
        if message["role"] == "assistant":
            try:
                call, _ = parse_reply(text)
                lines.append(f"ACTION {call.name} {json.dumps(call.arguments, ensure_ascii=False)}")
            except FormatError:
                # A guided-scaffold reply (SEARCH/REPLACE blocks, a location choice) is no tool
                # call but is the step's action all the same: show it, clipped.
                lines.append(f"ACTION {_clip(text.strip())}")
        else:
            body = text.removeprefix("<tool_response>").removesuffix("</tool_response>").strip()
            lines.append(f"OUTPUT {_clip(body)}")
    return "\n".join(lines)


def _clip(text: str) -> str:
    return text[:STEP_OUTPUT_CHARS] + (" [...]" if len(text) > STEP_OUTPUT_CHARS else "")


def ask(model: ChatModel, prompt: str, max_tokens: int, temperature: float) -> Completion:
    return model.complete([{"role": "user", "content": prompt}], temperature=temperature,
                          max_tokens=max_tokens)[0]


def self_check(model: ChatModel, request: str, messages: list[dict], patch: str,
               temperature: float) -> tuple[bool, Completion]:
    """The teacher's yes/no on whether rollout 1's change answers its request; unclear = no."""
    prompt = render_from(PACKAGE, "self_check", request=request, steps=summarize_steps(messages),
                         patch=patch)
    completion = ask(model, prompt, ANSWER_MAX_TOKENS, temperature)
    answer = re.search(r"\b(yes|no)\b", completion.text, re.IGNORECASE)
    return bool(answer and answer.group(1).lower() == "yes"), completion


def synthetic_issue(model: ChatModel, messages: list[dict], patch: str, example: str,
                    temperature: float) -> tuple[str, Completion]:
    prompt = render_from(PACKAGE, "synthetic_issue", example=example,
                         steps=summarize_steps(messages), patch=patch)
    completion = ask(model, prompt, ISSUE_MAX_TOKENS, temperature)
    return completion.text.strip(), completion


def example_issues(repo_root: Path, limit: int = 20) -> list[str]:
    """Issue styles from the repository itself (issue templates, detailed commit messages), else a
    small built-in set."""
    found = []
    for folder in (".github/ISSUE_TEMPLATE", ".gitlab/issue_templates"):
        for path in sorted((repo_root / folder).glob("*.md")):
            found.append(path.read_text("utf-8", errors="replace").strip()[:2000])
    found += _detailed_commit_messages(repo_root, limit)
    return [text for text in found if text][:limit] or _data("issue_examples")


def _detailed_commit_messages(repo_root: Path, limit: int) -> list[str]:
    """Commit messages with a body (a subject alone says too little to copy a style from)."""
    log = subprocess.run(["git", "log", "-n", "500", "--format=%B%x00"], cwd=repo_root,
                         capture_output=True, text=True, errors="replace")
    messages = [m.strip() for m in log.stdout.split("\0")]
    detailed = [m for m in messages if "\n\n" in m and len(m) > 120]
    return detailed[:limit]
