"""LoRA training on the tiny offline model: the loss mask, data mixing, and a real adapter that
moves, leaves the base alone, lowers the loss and loads back into the chat backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a model hub

import pytest

from sera.errors import SeraError
from tiny_models import build_tiny_model
from sera.specialize import lora as train_module
from sera.specialize.rows import (IGNORE_INDEX, Example, encode_for_training, load_rows,
                                     mix_rows, pack_or_group)
from sera.config import TrainConfig
from sera.specialize.lora import mean_nll, train_lora, update_card

SYSTEM = ("You are a coding agent working in a repository. Tools: bash, str_replace_editor, "
          "submit. Call one tool per reply inside <tool_call></tool_call>.")


def call(name: str, **arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def result(text: str) -> str:
    return f"<tool_response>\n{text}\n</tool_response>"


def trajectory(function: str, old: str, new: str) -> list[dict]:
    """A trajectory as the agent writes it: look, edit, check, submit twice."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Possible issue in `{function}` in src/app.py: it returns the "
                                    f"wrong value."},
        {"role": "assistant", "content": f"Let me read {function} first.\n"
                                         + call("str_replace_editor", command="view",
                                                path="src/app.py")},
        {"role": "user", "content": result(f"     1\tdef {function}(a, b):\n     2\t    {old}")},
        {"role": "assistant", "content": "The operator is wrong.\n"
                                         + call("str_replace_editor", command="str_replace",
                                                path="src/app.py", old_str=old, new_str=new)},
        {"role": "user", "content": result("The file src/app.py has been edited.")},
        {"role": "assistant", "content": call("bash", command="python -m pytest tests -q")},
        {"role": "user", "content": result("3 passed in 0.12s")},
        {"role": "assistant", "content": call("submit")},
        {"role": "user", "content": result("diff --git a/src/app.py b/src/app.py\n-    " + old
                                           + "\n+    " + new)},
        {"role": "assistant", "content": call("submit")},
    ]


ROWS = [trajectory("add", "return a - b", "return a + b"),
        trajectory("scale", "return a + b", "return a * b"),
        trajectory("greet", "return a", "return f\"Hello, {a}!\""),
        trajectory("count", "return 0", "return len(a)")]


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return build_tiny_model()


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from sera.models.transformers_backend import load_tokenizer
    return load_tokenizer(tiny_dir)


def labelled_runs(example: Example, tokenizer) -> list[str]:
    """The decoded text of each maximal run of trained tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


# --- the loss mask ------------------------------------------------------------------------------

def test_mask_covers_exactly_the_assistant_turns(tokenizer):
    row = ROWS[0]
    example = encode_for_training(row, tokenizer, max_tokens=4096)
    expected = [m["content"] + "<|im_end|>" for m in row if m["role"] == "assistant"]
    assert labelled_runs(example, tokenizer) == expected
    # The ids are the rendered conversation, nothing dropped or added.
    text = tokenizer.apply_chat_template(row, tokenize=False)
    assert tokenizer.decode(example.input_ids) == text
    assert len(example.labels) == len(example.input_ids)


def test_mask_handles_leading_newlines_and_empty_turns(tokenizer):
    row = [{"role": "user", "content": "hi"},  # no system message: the template adds its own
           {"role": "assistant", "content": "\n\nindented\n"},
           {"role": "user", "content": "again"},
           {"role": "assistant", "content": ""}]
    example = encode_for_training(row, tokenizer, max_tokens=4096)
    assert labelled_runs(example, tokenizer) == ["\n\nindented\n<|im_end|>", "<|im_end|>"]


def test_a_worked_examples_answer_is_shown_but_not_trained_on(tokenizer):
    row = [{"role": "system", "content": "Answer with blocks."},
           {"role": "user", "content": "example request", "example": True},
           {"role": "assistant", "content": "example answer", "example": True},
           {"role": "user", "content": "the task"},
           {"role": "assistant", "content": "the answer"}]
    example = encode_for_training(row, tokenizer, max_tokens=4096)
    assert labelled_runs(example, tokenizer) == ["the answer<|im_end|>"]
    assert "example answer" in tokenizer.decode(example.input_ids)


def test_mask_is_cut_at_max_tokens(tokenizer):
    full = encode_for_training(ROWS[1], tokenizer, max_tokens=100_000)
    cut = encode_for_training(ROWS[1], tokenizer, max_tokens=50)
    assert cut.input_ids == full.input_ids[:50] and cut.labels == full.labels[:50]


def test_a_row_starting_with_an_assistant_turn_is_refused(tokenizer):
    with pytest.raises(SeraError, match="must start with a system or user"):
        encode_for_training([{"role": "assistant", "content": "x"}], tokenizer, 100)


# --- rows, mixing and batching ------------------------------------------------------------------

def test_load_rows_reads_trajectories_and_jsonl(tmp_path):
    (tmp_path / "t1.json").write_text(json.dumps({"messages": ROWS[0], "meta": {"task": "x"}}))
    with open(tmp_path / "general.jsonl", "w") as f:
        for row in ROWS[1:]:
            f.write(json.dumps({"messages": row}) + "\n")
        f.write("\n")  # blank lines are fine
    rows = load_rows([tmp_path / "t1.json", tmp_path / "general.jsonl"])
    assert rows == ROWS
    assert load_rows([tmp_path]) == [*ROWS[1:], ROWS[0]]  # a folder: its files in name order
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(SeraError, match="bad.jsonl:1"):
        load_rows([tmp_path / "bad.jsonl"])


def test_mix_rows_respects_alpha():
    repo = [[{"role": "user", "content": f"repo {i}"}] for i in range(10)]
    general = [[{"role": "user", "content": f"general {i}"}] for i in range(100)]
    mixed = mix_rows(repo, general, alpha=0.25, seed=1)
    assert len(mixed) == 40 and all(r in mixed for r in repo)  # 10 repo rows are 25% of 40
    assert mixed == mix_rows(repo, general, alpha=0.25, seed=1)  # seeded
    assert sorted(map(str, mix_rows(repo, general, alpha=1.0))) == sorted(map(str, repo))
    assert len(mix_rows(repo, general, alpha=0.0)) == 100
    assert len(mix_rows(repo, general[:5], alpha=0.25)) == 15  # too few general rows: all of them
    with pytest.raises(SeraError):
        mix_rows(repo, general, alpha=1.5)


def test_length_grouping_stays_within_the_token_budget():
    examples = [Example(input_ids=[1] * n, labels=[1] * n) for n in (5, 50, 7, 48, 9, 120, 6, 51)]
    batches = pack_or_group(examples, max_tokens=110, seed=3)
    assert sorted(len(e) for b in batches for e in b) == sorted(len(e) for e in examples)
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(len(e) for e in batch) <= 110
    assert max(len(e) for e in batches[0]) == 120  # the biggest batch first
    assert all(len(b) <= 2 for b in pack_or_group(examples, 1000, max_batch_size=2))


# --- a real adapter -----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["fp32", "bf16"])
def trained(request, tiny_dir, tmp_path_factory):
    """Train once per precision for the module (bf16 runs on any CPU, emulated where the hardware
    lacks it); a spy keeps the peft model to compare weights with the start."""
    import torch
    captured = {}
    original = train_module._lora_model

    def spy(folder, config):
        model = original(folder, config)
        captured["model"] = model
        captured["start"] = {k: v.detach().clone() for k, v in model.named_parameters()}
        return model

    out_dir = tmp_path_factory.mktemp("adapters") / "repo-lora"
    config = TrainConfig(device="cpu", rank=8, alpha=16, dropout=0.0, lr=1e-2, epochs=12,
                         batch_size=2, grad_accum=1, warmup_ratio=0.1, seed=0,
                         precision=request.param)
    steps = []
    train_module._lora_model = spy
    try:
        torch.manual_seed(0)
        result = train_lora(tiny_dir, ROWS, out_dir, config, progress=steps.append)
    finally:
        train_module._lora_model = original
    return {"result": result, "out_dir": out_dir, "steps": steps, "precision": request.param,
            **captured}


def test_training_moves_lora_weights_only(trained):
    end = dict(trained["model"].named_parameters())
    lora = [k for k in trained["start"] if "lora_" in k]
    base = [k for k in trained["start"] if "lora_" not in k]
    assert lora and base
    assert all(not end[k].requires_grad for k in base)
    assert all(torch_equal(trained["start"][k], end[k]) for k in base)
    moved = [k for k in lora if not torch_equal(trained["start"][k], end[k])]
    assert len(moved) == len(lora)


def torch_equal(a, b) -> bool:
    import torch
    return torch.equal(a, b)


def test_loss_falls_and_progress_is_reported(trained):
    result, steps = trained["result"], trained["steps"]
    assert result.steps == len(result.losses) == len(steps) == 24  # 2 batches x 12 epochs
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.7 * first, result.losses
    assert result.examples == 4 and result.trained_tokens > 0
    assert result.input_tokens > result.trained_tokens and result.tokens_per_second > 0
    assert steps[-1]["step"] == 24 and steps[-1]["steps"] == 24 and "lr" in steps[0]


def test_adapter_folder_holds_weights_card_and_curve(trained, tiny_dir):
    out_dir = trained["out_dir"]
    assert (out_dir / "adapter_config.json").is_file()
    assert (out_dir / "adapter_model.safetensors").is_file()
    assert (out_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    card = json.loads((out_dir / "card.json").read_text())
    assert card["base_model"] == str(tiny_dir)
    assert card["data"]["rows"] == 4 and card["data"]["examples"] == 4
    assert card["config"]["rank"] == 8 and len(card["loss"]) == 24
    assert card["training"]["tokens_per_second"] > 0
    assert card["training"]["dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[trained["precision"]]
    update_card(out_dir, accept_rate=0.5, heldout={"nll_base": 2.0, "nll_adapter": 1.0})
    card = json.loads((out_dir / "card.json").read_text())
    assert card["accept_rate"] == 0.5 and card["config"]["rank"] == 8
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_adapter_lowers_the_nll_of_the_training_rows(trained, tiny_dir):
    precision = trained["precision"]
    base = mean_nll(tiny_dir, ROWS, adapter=None, max_tokens=4096, device="cpu", precision=precision)
    tuned = mean_nll(tiny_dir, ROWS, adapter=trained["out_dir"], max_tokens=4096, device="cpu",
                     precision=precision)
    assert tuned < 0.7 * base
    # The training loss of the first step is the base model's NLL (LoRA starts as a no-op).
    assert abs(trained["result"].losses[0] - base) < 0.05 * base


def test_adapter_loads_into_the_chat_backend_and_changes_the_answer(trained, tiny_dir):
    from sera.config import ModelConfig
    from sera.models.registry import load_model

    chat = load_model(f"transformers:{tiny_dir}", ModelConfig(seed=0))
    try:
        prompt = ROWS[0][:2]
        plain = chat.complete(prompt, max_tokens=12)[0].text
        tuned = chat.complete(prompt, adapter=str(trained["out_dir"]), max_tokens=12)[0].text
    finally:
        chat.close()
    assert tuned != plain


def test_training_without_assistant_turns_says_so(tiny_dir, tmp_path):
    rows = [[{"role": "user", "content": "only a question"}]]
    with pytest.raises(SeraError, match="nothing to train on"):
        train_lora(tiny_dir, rows, tmp_path / "a", TrainConfig(device="cpu"))
    assert not (tmp_path / "a").exists()


def test_for_device_defaults():
    cpu, gpu = TrainConfig.for_device("cpu"), TrainConfig.for_device("cuda")
    assert (cpu.rank, cpu.alpha, cpu.lr, cpu.precision) == (8, 16, 2e-4, "auto")
    assert (gpu.rank, gpu.alpha, gpu.lr, gpu.precision) == (32, 128, 5e-5, "auto")
    with pytest.raises(SeraError):
        TrainConfig.for_device("tpu")


def test_a_time_budget_stops_training_early_and_still_saves(tiny_dir, tmp_path):
    config = TrainConfig(device="cpu", epochs=5, batch_size=1, grad_accum=1, max_seconds=1e-9)
    result = train_lora(tiny_dir, ROWS, tmp_path / "quick", config)
    assert result.steps == len(result.losses) == 1
    assert (tmp_path / "quick" / "adapter_model.safetensors").is_file()


def test_progress_is_reported_within_a_step_too(tiny_dir, tmp_path):
    """A step of several micro-batches takes many minutes of a CPU with a real model: progress
    comes after each micro-batch (a fractional step), not only after the optimizer step."""
    events = []
    config = TrainConfig(device="cpu", epochs=1, batch_size=1, grad_accum=2, seed=0)
    train_lora(tiny_dir, ROWS, tmp_path / "a", config, progress=events.append)
    assert [e["step"] for e in events] == [0.5, 1, 1.5, 2]
    assert events[0]["loss"] is None and events[2]["loss"] == events[1]["loss"]
    assert "tokens_per_second" in events[1] and "tokens_per_second" not in events[0]
