"""Training rows: reading them, mixing repository and general data, and the one loss mask.

A row is a message list (system / user / assistant dicts), as a trajectory file stores it
(`{"messages": [...], "meta": {...}}`) or as one line of a JSONL dataset (`{"messages": [...]}`).
`encode_for_training` is THE function that decides which tokens are trained on: the tokens of the
assistant turns (their content and the end-of-turn token, e.g. `<|im_end|>`), never the turn
header (`<|im_start|>assistant\\n`), the system prompt, the task or the tool outputs. Training
(`lora.py`) and evaluation (`mean_nll`) both go through it.

How the mask is found, for any chat template: the conversation is rendered prefix by prefix;
the text an assistant turn adds after the generation prompt (`add_generation_prompt=True`) is that
turn, minus trailing whitespace after its end-of-turn token. The text is then tokenized piece by
piece (untrained, trained, untrained, ...), so no token straddles a boundary, and each assistant
turn is tokenized exactly as the model generates it: starting fresh after the turn header.

Batching is length grouping (not packing): sequences of similar length share a micro-batch, padded
to its longest, so there is little padding and no attention across examples to mask out.

Nothing heavy is imported here; the tokenizer is passed in.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

from sera.errors import SeraError

IGNORE_INDEX = -100  # the label torch's cross entropy (and our loss) skips
ROLES = ("system", "user", "assistant", "tool")

Row = list[dict[str, Any]]


@dataclass
class Example:
    """One tokenized row: labels are the input ids on trained tokens, IGNORE_INDEX elsewhere."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


# --- the loss mask ------------------------------------------------------------------------------

def encode_for_training(messages: Sequence[dict[str, Any]], tokenizer: Any,
                        max_tokens: int) -> Example:
    """Token ids of the rendered conversation, labelled on the assistant turns only (not on a
    worked example's answer, which every guided row repeats: message["example"]).

    Cut at `max_tokens` as a guard; cutting a trajectory at a turn boundary is the caller's job.
    """
    text, spans = assistant_spans(messages, tokenizer)
    pieces, trained = _split_at_spans(text, spans)
    encoded = tokenizer(pieces, add_special_tokens=False)["input_ids"] if pieces else []
    input_ids: list[int] = []
    labels: list[int] = []
    for ids, is_trained in zip(encoded, trained):
        input_ids.extend(ids)
        labels.extend(ids if is_trained else [IGNORE_INDEX] * len(ids))
    return Example(input_ids=input_ids[:max_tokens], labels=labels[:max_tokens])


def assistant_spans(messages: Sequence[dict[str, Any]],
                    tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the (start, end) character span of each assistant turn that
    is trained on (worked examples are not)."""
    messages = [dict(m) for m in messages]
    if messages and messages[0].get("role") == "assistant":
        raise SeraError("a training row must start with a system or user message, not an "
                        "assistant turn; check the dataset file")
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for k, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("example"):
            continue
        before = _render(tokenizer, messages[:k], add_generation_prompt=True)
        through = _render(tokenizer, messages[:k + 1], add_generation_prompt=False)
        if not (through.startswith(before) and full.startswith(through)):
            raise SeraError("the model's chat template renders a conversation differently from its "
                            "beginning (it rewrites earlier turns), so the assistant turns cannot "
                            "be located for the loss mask; train with a model whose template keeps "
                            "history as is (e.g. Qwen2.5)")
        start = len(before)
        spans.append((start, max(start, len(through.rstrip()))))
    return full, spans


def _render(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    if not isinstance(text, str):  # transformers 5 may hand back a dict or a batch
        raise SeraError("the tokenizer's chat template did not render to text; use a chat model "
                        "whose tokenizer carries a chat template")
    return text


def _split_at_spans(text: str, spans: list[tuple[int, int]]) -> tuple[list[str], list[bool]]:
    """The text cut into alternating untrained / trained pieces (empty pieces left out)."""
    pieces: list[str] = []
    trained: list[bool] = []
    position = 0
    for start, end in spans:
        for piece, is_trained in ((text[position:start], False), (text[start:end], True)):
            if piece:
                pieces.append(piece)
                trained.append(is_trained)
        position = end
    if text[position:]:
        pieces.append(text[position:])
        trained.append(False)
    return pieces, trained


# --- reading and mixing rows --------------------------------------------------------------------

def load_rows(paths: Iterable[Path | str]) -> list[Row]:
    """Message lists from trajectory JSON files, JSONL files of {"messages": ...}, or folders of both.

    A malformed file or line is an error that names it; a row without an assistant turn is kept
    (it trains nothing and the trainer skips it).
    """
    rows: list[Row] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl"))
            rows.extend(load_rows(files))
        elif path.suffix == ".jsonl":
            rows.extend(_read_jsonl(path))
        else:
            rows.append(_messages_of(_read_json(path), str(path)))
    return rows


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeraError(f"dataset file {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SeraError(f"{path} is not valid JSON ({error}); a trajectory file holds "
                        f'{{"messages": [...], "meta": {{...}}}}') from None


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SeraError(f"dataset file {path} not found") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise SeraError(f"{where} is not valid JSON ({error}); each line of a JSONL dataset "
                            f'holds {{"messages": [...]}}') from None
        rows.append(_messages_of(data, where))
    return rows


def _messages_of(data: Any, where: str) -> Row:
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in messages):
        raise SeraError(f'{where}: expected {{"messages": [{{"role": "system|user|assistant", '
                        f'"content": "..."}}, ...]}}')
    return [{"role": m["role"], "content": m["content"]} for m in messages]


T = TypeVar("T")


def mix_rows(repo_rows: Sequence[T], general_rows: Sequence[T], alpha: float,
             seed: int = 0) -> list[T]:
    """All repository rows plus sampled general rows, so repository rows make up `alpha` of the mix.

    alpha = 1: repository rows only; alpha = 0: general rows only. When there are too few general
    rows to reach the share, all of them are used (the repository share ends up above alpha).
    The result is shuffled with `seed`.
    """
    if not 0.0 <= alpha <= 1.0:
        raise SeraError(f"alpha must be between 0 and 1 (the share of repository rows), got {alpha}")
    rng = random.Random(seed)
    if alpha == 0.0:
        mixed = list(general_rows)
    else:
        wanted = round(len(repo_rows) * (1.0 - alpha) / alpha)
        general = list(general_rows)
        sampled = general if wanted >= len(general) else rng.sample(general, wanted)
        mixed = list(repo_rows) + sampled
    rng.shuffle(mixed)
    return mixed


# --- batching -----------------------------------------------------------------------------------

def pack_or_group(examples: Sequence[Example], max_tokens: int, *, max_batch_size: int = 0,
                  seed: int | None = 0) -> list[list[Example]]:
    """Length-grouped micro-batches: each holds examples of similar length whose padded size
    (count x longest) stays within `max_tokens` (an example longer than that goes alone).

    Grouping, not packing: no attention masks across examples are needed. `max_batch_size` caps
    the examples per batch (0 = no cap). The batch order is shuffled with `seed` (None keeps the
    longest-first order), but the biggest batch always comes first so that running out of memory
    happens at the first step, not hours in.
    """
    ordered = sorted(examples, key=len, reverse=True)
    batches: list[list[Example]] = []
    for example in ordered:
        current = batches[-1] if batches else None
        fits = current is not None and len(current[0]) * (len(current) + 1) <= max_tokens and (
            max_batch_size <= 0 or len(current) < max_batch_size)
        if fits:
            current.append(example)
        else:
            batches.append([example])
    if seed is not None and len(batches) > 1:
        rest = batches[1:]
        random.Random(seed).shuffle(rest)
        batches = batches[:1] + rest
    return batches
