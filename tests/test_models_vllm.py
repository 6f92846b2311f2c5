"""The vLLM backend's side of the contract, against a stand-in for the `vllm` package at the edge
(tests/stand_ins/vllm: the offline API's shapes, recording the requests): the engine it starts,
the request it builds (messages, n, seeds, stop, the LoRA request), batching of concurrent
callers, cancel; the errors without vLLM or without a GPU; and the real vLLM where it is
installed and a GPU is present."""

from __future__ import annotations

import importlib
import json
import sys
import threading
from pathlib import Path

import pytest

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.registry import load_model

STAND_IN = Path(__file__).parent / "stand_ins"


def _vllm_modules() -> list[str]:
    return [name for name in sys.modules if name == "vllm" or name.startswith("vllm.")]


@pytest.fixture
def no_stand_in_left():
    """After the test, and after monkeypatch has restored sys.modules (this fixture is set up
    before it, so it is torn down after it), no module of the stand-in stays: other libraries
    (trl) probe for vllm and would find it."""
    yield
    for name in _vllm_modules():
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(STAND_IN)):
            del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def stand_in(no_stand_in_left, monkeypatch):
    """The stand-in vllm importable, and a GPU said to be present (torch is the edge here)."""
    import torch
    monkeypatch.syspath_prepend(str(STAND_IN))
    for name in _vllm_modules():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    vllm = importlib.import_module("vllm")
    assert vllm.__file__.startswith(str(STAND_IN))
    vllm.engines.clear()
    return vllm


def adapter_folder(path: Path, rank: int) -> str:
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return str(path)


def test_the_engine_and_the_request_sera_builds(stand_in, tmp_path):
    adapter = adapter_folder(tmp_path / "repo-adapter", rank=24)
    model = load_model("vllm:Qwen/Qwen2.5-Coder-7B-Instruct",
                       ModelConfig(seed=7, context_tokens=8192, adapter=adapter))
    (engine,) = stand_in.engines
    assert engine.model == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert engine.options["enable_lora"] and engine.options["max_lora_rank"] == 32  # 24 rounded up
    assert engine.options["enable_prefix_caching"] and engine.options["max_model_len"] == 8192
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "fix add"}]
    answers = model.complete(messages, n=3, adapter=adapter, temperature=0.7, max_tokens=64,
                             stop=["</tool_call>"])
    assert [a.text for a in answers] == ["dda xif #0", "dda xif #1", "dda xif #2"]
    assert answers[0].prompt_tokens == 4 and answers[0].completion_tokens == 3
    (call,) = engine.calls
    assert call["messages"] == [messages]
    (params,) = call["sampling_params"]
    assert (params.n, params.temperature, params.max_tokens, params.stop, params.seed) == (
        3, 0.7, 64, ["</tool_call>"], 7)
    (lora,) = call["lora_request"]
    assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == (
        "repo-adapter", 1, str(Path(adapter).resolve()))
    model.complete(messages)  # the base model: no LoRA request
    assert engine.calls[-1]["lora_request"] == [None]
    assert model.spec == "vllm:Qwen/Qwen2.5-Coder-7B-Instruct" and model.concurrent


def test_concurrent_callers_are_batched_and_each_gets_its_answer(stand_in):
    model = load_model("vllm:m", ModelConfig())
    engine = stand_in.engines[0]
    engine.delay = 0.2
    answers, threads = {}, []
    for number in range(6):
        def ask(number=number):
            answers[number] = model.complete([{"role": "user", "content": f"task {number}"}])[0].text
        threads.append(threading.Thread(target=ask))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == {n: f"{n} ksat #0" for n in range(6)}
    assert engine.most_inside == 1  # the offline engine is never entered twice at once
    assert max(len(call["messages"]) for call in engine.calls) > 1  # callers shared a batch
    assert len(engine.calls) < 6


def test_a_request_cancelled_before_its_batch_is_answered_with_nothing(stand_in):
    model = load_model("vllm:m", ModelConfig())
    cancel = threading.Event()
    cancel.set()
    assert model.complete([{"role": "user", "content": "x"}], cancel=cancel) == []
    assert stand_in.engines[0].calls == []


def test_without_a_gpu_or_without_vllm_the_error_says_what_to_do(stand_in, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match="vLLM needs a GPU and none is visible here"):
        load_model("vllm:m", ModelConfig())
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(ModelError, match="vLLM is not installed here: `pip install vllm`"):
        load_model("vllm:m", ModelConfig())


def _real_vllm_and_gpu() -> str | None:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return "vLLM is not installed (it needs a CUDA build of torch)"
    return None if torch.cuda.is_available() else "no GPU"


@pytest.mark.skipif(_real_vllm_and_gpu() is not None, reason=str(_real_vllm_and_gpu()))
def test_the_real_vllm_answers_a_chat(tmp_path):
    from tiny_models import build_tiny_model
    model = load_model(f"vllm:{build_tiny_model(tmp_path / 'tiny')}",
                       ModelConfig(context_tokens=512))
    try:
        answers = model.complete([{"role": "user", "content": "hello"}], n=2, max_tokens=8)
        assert len(answers) == 2 and all(a.completion_tokens <= 8 for a in answers)
    finally:
        model.close()


def test_the_stand_in_is_gone_after_its_tests():
    """Runs after the tests above (file order): trl's GRPO import probes for vllm (find_spec,
    then its version), and a stand-in left in sys.modules broke the policy tests after these."""
    import importlib.util
    assert not any(str(getattr(sys.modules.get(name), "__file__", None) or "").startswith(
        str(STAND_IN)) for name in _vllm_modules())
    spec = importlib.util.find_spec("vllm")
    assert spec is None or not str(spec.origin).startswith(str(STAND_IN))
