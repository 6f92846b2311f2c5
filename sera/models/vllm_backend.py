"""`vllm:<dir | hub-id>`: vLLM in this process, on its documented offline API (`LLM.chat`).

- One engine serves the base model and every adapter: the engine starts with LoRA enabled
  (`max_lora_rank` from the adapters' `adapter_config.json`, rounded up to a rank vLLM accepts)
  and each request carries its own `LoRARequest` (one id per adapter folder), so the agent, the
  teacher and the reranker's base share it.
- The N samples of a step are one request (`SamplingParams(n=N)`, seeds from model.seed), and
  automatic prefix caching keeps an agent's growing conversation from being prefilled again.
- Concurrent: callers in several threads (solve's candidates, specialize's rollouts) are batched.
  A caller queues its request; whoever finds the engine free runs every queued request in one
  `LLM.chat` call (a list of conversations with a sampling parameter and LoRA request each) and
  hands each caller its answers. The offline engine is not thread-safe, so it is never entered
  twice at once.
- Cancel: a request whose `cancel` is set before its batch starts is answered with nothing; the
  offline API cannot stop a batch midway, so one already running finishes.

vLLM is imported when a `vllm:` model is loaded. Without vLLM, or without a GPU, `load` says which
and what to do instead.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.base import Completion, Message

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's LoRA kernels take
DEFAULT_LORA_RANK = 64


def load(arg: str, config: ModelConfig) -> "VllmModel":
    if not arg:
        raise ModelError("vllm: needs a model folder or hub id, e.g. vllm:Qwen/Qwen2.5-Coder-7B-Instruct")
    try:
        import vllm
    except ImportError:
        raise ModelError("vLLM is not installed here: `pip install vllm` on a machine with an "
                         "NVIDIA GPU, or use a model that runs here (embedded, llamacpp:<gguf>, "
                         "transformers:<dir>) or a served one (openai:<url>#<model>)") from None
    if not _gpu_present():
        raise ModelError("vLLM needs a GPU and none is visible here (torch.cuda.is_available() "
                         "is False); use embedded or llamacpp:<gguf> on a CPU")
    return VllmModel(vllm, arg, config)


def _gpu_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def lora_rank(adapters: Sequence[str]) -> int:
    """The engine's max_lora_rank: the largest `r` of the adapters' configs, rounded up to a rank
    vLLM accepts (DEFAULT_LORA_RANK when none is known)."""
    ranks = []
    for folder in adapters:
        try:
            ranks.append(int(json.loads((Path(folder) / "adapter_config.json").read_text())["r"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    wanted = max(ranks, default=DEFAULT_LORA_RANK)
    return next((rank for rank in LORA_RANKS if rank >= wanted), LORA_RANKS[-1])


@dataclass
class _Request:
    messages: list[dict[str, str]]
    params: Any                      # vllm.SamplingParams
    lora: Any                        # vllm LoRARequest or None
    cancel: threading.Event | None
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Completion] | None = None
    error: BaseException | None = None


class VllmModel:
    def __init__(self, vllm: Any, model: str, config: ModelConfig,
                 adapters: Sequence[str] = ()):
        self.vllm, self.config = vllm, config
        self.spec = f"vllm:{model}"
        known = [config.adapter] if config.adapter and Path(config.adapter).is_dir() else []
        self.llm = vllm.LLM(model=model, enable_lora=True,
                            max_lora_rank=lora_rank([*known, *adapters]),
                            enable_prefix_caching=True, max_model_len=config.context_tokens,
                            seed=config.seed if config.seed >= 0 else 0)
        self._lora_ids: dict[str, int] = {}
        self._queue: list[_Request] = []
        self._queue_lock = threading.Lock()
        self._engine_lock = threading.Lock()

    @property
    def concurrent(self) -> bool:
        return True

    def complete(self, messages: Sequence[Message], *, n: int = 1, adapter: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 1024,
                 stop: Sequence[str] | None = None,
                 cancel: threading.Event | None = None,
                 seed: int | None = None) -> list[Completion]:
        params = self.vllm.SamplingParams(
            n=n, temperature=temperature, max_tokens=max_tokens, stop=list(stop or []),
            seed=seed if seed is not None else self.config.seed if self.config.seed >= 0 else None)
        request = _Request([{"role": m["role"], "content": m["content"]} for m in messages],
                           params, self._lora_request(adapter), cancel)
        with self._queue_lock:
            self._queue.append(request)
        while not request.done.is_set():
            if self._engine_lock.acquire(timeout=0.01):
                try:
                    self._run_queued()
                finally:
                    self._engine_lock.release()
        if request.error is not None:
            raise request.error
        return request.result or []

    def _lora_request(self, adapter: str | None):
        """The LoRARequest of an adapter folder (one id per folder, for the engine's cache)."""
        if not adapter:
            return None
        folder = Path(adapter)
        if not folder.is_dir():
            raise ModelError(f"adapter {adapter} is not a folder; vllm: takes a trained adapter's "
                             f"folder (sera models lists the repository's adapters)")
        key = str(folder.resolve())
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
        from vllm.lora.request import LoRARequest
        return LoRARequest(folder.name, lora_id, key)

    def _run_queued(self) -> None:
        """Answer every queued request with one batched call (the engine lock is held)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        live = []
        for request in batch:
            if request.cancel is not None and request.cancel.is_set():
                request.result = []
                request.done.set()
            else:
                live.append(request)
        if not live:
            return
        started = time.perf_counter()
        try:
            outputs = self.llm.chat([r.messages for r in live],
                                    sampling_params=[r.params for r in live],
                                    lora_request=[r.lora for r in live], use_tqdm=False)
        except Exception as error:  # noqa: BLE001 - every waiting caller must hear of it
            failure = ModelError(f"vLLM failed: {error}")
            for request in live:
                request.error = failure
                request.done.set()
            return
        seconds = time.perf_counter() - started
        for request, output in zip(live, outputs):
            request.result = [_completion(output, sample, seconds) for sample in output.outputs]
            request.done.set()

    def close(self) -> None:
        self.llm = None


def _completion(output: Any, sample: Any, seconds: float) -> Completion:
    return Completion(text=sample.text, prompt_tokens=len(output.prompt_token_ids or []),
                      completion_tokens=len(sample.token_ids),
                      seconds=seconds / max(len(output.outputs), 1),
                      finish_reason="length" if sample.finish_reason == "length" else "stop")
