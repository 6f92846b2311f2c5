"""The transformers backend on the tiny offline Qwen2 model: chat, sampling, stops, adapters, GGUF."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a model hub

import pytest

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.base import ChatModel
from sera.models.registry import load_model
from tiny_models import (SPECIAL_TOKENS, TOOL_TOKENS, build_tiny_gguf, build_tiny_model,
                                 make_random_lora)

MESSAGES = [{"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": "Fix the failing test in tests/test_app.py."}]


@pytest.fixture(scope="module")
def tiny_dir():
    return build_tiny_model()


@pytest.fixture(scope="module")
def model(tiny_dir):
    chat = load_model(f"transformers:{tiny_dir}", ModelConfig(seed=3))
    yield chat
    chat.close()


@pytest.fixture(scope="module")
def lora_dir(tiny_dir, tmp_path_factory):
    return make_random_lora(tiny_dir, tmp_path_factory.mktemp("lora") / "adapter", r=4, seed=0)


def greedy(chat, adapter=None, max_tokens=16):
    return chat.complete(MESSAGES, adapter=adapter, max_tokens=max_tokens)[0].text


def test_tiny_model_is_cached_and_deterministic(tiny_dir, tmp_path):
    start = time.perf_counter()
    assert build_tiny_model() == tiny_dir
    assert time.perf_counter() - start < 0.5  # cached in the process
    again = build_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name


def test_tokenizer_loads_the_same_both_ways(tiny_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    exact = PreTrainedTokenizerFast.from_pretrained(str(tiny_dir))
    auto = AutoTokenizer.from_pretrained(str(tiny_dir))
    text = "def f(x):\n    return x  # 123 héllo\n<tool_call>\n{\"name\": \"bash\"}\n</tool_call>"
    assert auto(text)["input_ids"] == exact(text)["input_ids"]
    assert exact.decode(exact(text)["input_ids"]) == text
    assert 1000 <= len(exact) <= 2000
    for token in SPECIAL_TOKENS + TOOL_TOKENS:  # each a single token
        assert len(exact(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert exact.eos_token == "<|im_end|>"
    prompt = exact.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
                      "helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                      "<|im_start|>assistant\n")


def test_chat_completion_returns_text_and_token_counts(model):
    assert isinstance(model, ChatModel)
    assert model.concurrent is False
    completion = model.complete(MESSAGES, max_tokens=8)[0]
    assert completion.text
    assert completion.prompt_tokens > 10
    assert 1 <= completion.completion_tokens <= 8
    assert completion.seconds > 0
    assert completion.finish_reason in ("stop", "length")


def test_greedy_is_repeatable_and_n_gives_n_samples(model):
    first = model.complete(MESSAGES, n=2, max_tokens=8)
    assert len(first) == 2 and first[0].text == first[1].text == greedy(model, max_tokens=8)


def test_seed_makes_sampling_reproducible_across_loads_not_across_calls(tiny_dir):
    def two_calls() -> list[str]:
        chat = load_model(f"transformers:{tiny_dir}", ModelConfig(seed=11))
        texts = [c.text for _ in range(2)
                 for c in chat.complete(MESSAGES, n=2, temperature=1.0, max_tokens=8)]
        chat.close()
        return texts

    first = two_calls()
    assert len(set(first)) == 4  # every sample differs, also between calls (candidates)
    assert two_calls() == first


def test_max_tokens_gives_finish_reason_length(model):
    completion = model.complete(MESSAGES, max_tokens=5)[0]
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 5


def test_a_set_cancel_stops_the_reply_at_the_next_token(model):
    cancel = threading.Event()
    full = model.complete(MESSAGES, max_tokens=20)[0]
    cancel.set()
    cut = model.complete(MESSAGES, max_tokens=20, cancel=cancel)[0]
    assert full.completion_tokens == 20 and cut.completion_tokens == 1


def test_stop_string_cuts_text_and_stops_early(model):
    # Sampled text is varied, unlike the tiny model's repetitive greedy text; reseeding the
    # global RNG replays the same sample.
    import torch

    torch.manual_seed(5)
    full = model.complete(MESSAGES, temperature=1.0, max_tokens=16)[0].text
    words = [full[i:i + 3] for i in range(1, len(full) - 2)
             if full[i:i + 3].isascii() and full[i:i + 3].isalpha()]
    assert words, full
    stop = words[len(words) // 2]
    torch.manual_seed(5)
    completion = model.complete(MESSAGES, temperature=1.0, max_tokens=16, stop=["@@@", stop])[0]
    assert completion.text == full[:full.find(stop)] != ""
    assert stop not in completion.text
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens < 16


def test_adapter_per_request_then_base(tiny_dir, lora_dir):
    chat = load_model(f"transformers:{tiny_dir}")
    adapted = greedy(chat, adapter=str(lora_dir))  # the adapter first ...
    base = greedy(chat)  # ... then the base model, unaffected
    assert adapted != base
    assert base == greedy(load_model(f"transformers:{tiny_dir}"))
    assert greedy(chat, adapter=str(lora_dir)) == adapted
    chat.close()


def test_base_then_adapter_then_base(model, lora_dir):
    base = greedy(model)
    adapted = greedy(model, adapter=str(lora_dir))
    assert adapted != base
    assert greedy(model) == base
    assert greedy(model, adapter=str(lora_dir)) == adapted


def test_missing_adapter_says_what_to_pass(model, tmp_path):
    with pytest.raises(ModelError, match="adapter_config.json"):
        model.complete(MESSAGES, adapter=str(tmp_path / "nope"))


def test_prompt_longer_than_context_is_refused(tiny_dir):
    chat = load_model(f"transformers:{tiny_dir}", ModelConfig(context_tokens=16))
    with pytest.raises(ModelError, match="context_tokens"):
        chat.complete(MESSAGES)


def test_custom_pre_tokenizer_in_tokenizer_json_is_kept(tiny_dir, tmp_path):
    """Trap: AutoTokenizer rebuilds a qwen2 tokenizer with Qwen2's own pre-tokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    custom = tmp_path / "custom"
    shutil.copytree(tiny_dir, custom)
    tokenizer_json = json.loads((custom / "tokenizer.json").read_text())
    tokenizer_json["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False,
                                       "trim_offsets": True, "use_regex": False}
    (custom / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    messages = [{"role": "user", "content": "x = 1\n\n\n    y"}]  # splits differently
    exact = PreTrainedTokenizerFast.from_pretrained(str(custom))
    prompt = exact.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = len(exact(prompt)["input_ids"])
    assert len(AutoTokenizer.from_pretrained(str(custom))(prompt)["input_ids"]) != expected
    chat = load_model(f"transformers:{custom}")
    assert chat.complete(messages, max_tokens=1)[0].prompt_tokens == expected
    chat.close()


def test_gguf_is_dequantized_once_and_answers_like_the_folder(model, tiny_dir, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    gguf_file = build_tiny_gguf(tiny_dir, tmp_path / "tiny.gguf")
    from_gguf = load_model(f"transformers:{gguf_file}")
    assert greedy(from_gguf) == greedy(model)
    from_gguf.close()
    [cached] = (tmp_path / "cache" / "dequantized").iterdir()
    assert cached.name.startswith("tiny-")
    config = json.loads((cached / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert "quantization_config" not in config
    weights_mtime = (cached / "model.safetensors").stat().st_mtime_ns
    load_model(f"transformers:{gguf_file}").close()  # served from the cache
    assert (cached / "model.safetensors").stat().st_mtime_ns == weights_mtime
    assert len(list((tmp_path / "cache" / "dequantized").iterdir())) == 1


@pytest.mark.parametrize("arg, match", [
    ("/no/such/folder", "not found"),
    ("./relative/missing.gguf", "not found"),
    ("", "transformers:/path/to/model"),
])
def test_bad_model_argument_says_what_to_do(arg, match):
    with pytest.raises(ModelError, match=match):
        load_model(f"transformers:{arg}")


def test_hub_id_offline_says_how_to_pass_a_folder():
    with pytest.raises(ModelError) as error:
        load_model("transformers:sera-tests/definitely-not-cached-model")
    message = str(error.value)
    assert "could not be found locally" in message
    assert "transformers:/path/to/model" in message


def test_folder_without_config_and_non_gguf_file(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        load_model(f"transformers:{tmp_path}")
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0")
    with pytest.raises(ModelError, match="not a .gguf"):
        load_model(f"transformers:{weights}")


def test_closed_model_refuses_and_close_is_idempotent(tiny_dir):
    chat = load_model(f"transformers:{tiny_dir}")
    chat.close()
    chat.close()
    with pytest.raises(ModelError, match="closed"):
        chat.complete(MESSAGES)
