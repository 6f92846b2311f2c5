"""In-process llama.cpp for GGUF chat models on CPU, through xllamacpp's embedded server.

`llamacpp:<file.gguf>`. xllamacpp runs llama.cpp's own server inside this process; requests go to
its OpenAI-style chat handler as Python dicts (no HTTP round trip), so the GGUF's own chat template,
sampling, stop strings and the prompt cache are llama.cpp's. Settings (ModelConfig): n_ctx =
context_tokens, threads (0 = every CPU this process may use), seed (sample i of a request uses
seed + i; -1 = random).

- Prompt cache: on (`cache_prompt`), one slot. Agent steps whose prompt extends the previous one
  only prefill the new tokens.
- LoRA: an adapter travels with each request. A peft folder is converted once to `adapter.gguf`
  beside it (rebuilt when the peft weights are newer; in the user cache if that folder is read-only).
  llama.cpp loads adapters only when the server starts, so every adapter seen so far is listed in
  `params.lora_adapters` (lora_init_without_apply), and each request sets its scales:
  1.0 for the chosen one, 0 for the others (all 0 = the base model). The first request for an
  adapter not loaded yet restarts the server with it added (3 s for the 1.5B model on 2 cores;
  the prompt cache starts empty again). An adapter that llama.cpp rejects is dropped again, and
  the server comes back without it. A greedy request (temperature 0) for n > 1 samples decodes
  once and returns n copies (seconds = 0 for the copies).
- Not concurrent: one slot serves one request at a time (a lock serialises callers). Parallel
  slots were measured on 2 cores: no more tokens/s in total, and each slot gets a slice of n_ctx.
- Replies are streamed, so that a reply stops at the next token when the request's `cancel` is
  set or on Ctrl-C (which cannot interrupt the C call itself: it is held as a flag, and
  KeyboardInterrupt is raised once the call returns).
- llama.cpp logs nothing unless SERA_DEBUG is set.
- The embedded server also listens on a random localhost port; it gets a random API key, so
  other local users cannot drive it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.base import Completion, Message
from sera.models.gguf_adapter import convert_peft_to_gguf
from sera.paths import user_cache_dir

GGUF_MAGIC = b"GGUF"
PROMPT_CACHE_RAM_MIB = 1024  # host-memory copies of evicted prompts (llama.cpp's default: 8 GiB)
PEFT_FILES = ("adapter_model.safetensors", "adapter_config.json")


def load(arg: str, config: ModelConfig) -> "LlamaCppModel":
    """The registry's entry point: `llamacpp:<file.gguf>`."""
    return LlamaCppModel(check_gguf_file(arg), config)


def check_gguf_file(arg: str | Path) -> Path:
    """The GGUF model at `arg`, or a ModelError that says what to pass instead."""
    if not str(arg).strip():
        raise ModelError("the llamacpp backend needs a GGUF file: --model llamacpp:/path/to/model.gguf "
                         "(or --model embedded for the built-in model)")
    path = Path(arg).expanduser()
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; check the path in "
                         f"--model llamacpp:<file.gguf>, or use --model embedded")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file; the llamacpp backend runs .gguf models "
                         f"(convert with llama.cpp's convert_hf_to_gguf.py), and a Hugging Face "
                         f"folder runs with --model transformers:<folder>")
    return path.resolve()


class LlamaCppModel:
    """A ChatModel on one GGUF file, served by an in-process llama.cpp server."""

    def __init__(self, path: Path, config: ModelConfig, spec: str | None = None) -> None:
        self.path = Path(path)
        self.config = config
        self.spec = spec or f"llamacpp:{self.path}"
        self._lock = threading.Lock()
        self._adapters: list[Path] = []  # GGUF adapters in server id order
        self._adapter_mtimes: dict[Path, float] = {}
        self._server: Any = None
        self._start()

    @property
    def concurrent(self) -> bool:
        return False

    def complete(self, messages: Sequence[Message], *, n: int = 1, adapter: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 1024,
                 stop: Sequence[str] | None = None,
                 cancel: threading.Event | None = None,
                 seed: int | None = None) -> list[Completion]:
        with self._lock:
            if self._server is None:
                raise ModelError(f"{self.spec} was closed; load the model again")
            lora = self._lora_scales(adapter)
            request = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                       "max_tokens": max_tokens,
                       "temperature": max(temperature, 0.0), "stop": list(stop or []),
                       "cache_prompt": True, "lora": lora}
            completions: list[Completion] = []
            for i in range(n):
                if temperature <= 0 and completions:
                    # greedy decoding repeats itself: the copy is free and identical
                    completions.append(dataclasses.replace(completions[0], seconds=0.0))
                    continue
                base = self.config.seed if seed is None else seed
                if base >= 0:
                    request["seed"] = base + i
                completions.append(self._one_completion(request, cancel))
            return completions

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __del__(self) -> None:
        # a forgotten close() must not keep the engine thread alive at interpreter exit
        try:
            self._stop()
        except Exception:
            pass

    # -- the server ------------------------------------------------------------------------------

    def _start(self) -> None:
        import xllamacpp

        try:
            self._server = xllamacpp.Server(self._server_params(xllamacpp))
        except RuntimeError as error:
            self._server = None
            raise ModelError(f"llama.cpp could not load {self.path} ({error}); check that the file "
                             f"is a complete GGUF chat model (set SERA_DEBUG=1 to see llama.cpp's "
                             f"log), or lower model.context_tokens if memory is short") from None

    def _stop(self) -> None:
        # dropping the last reference runs the server's destructor, which ends its threads
        self._server = None

    def _server_params(self, xllamacpp: Any) -> Any:
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_ctx = self.config.context_tokens
        params.n_parallel = 1
        threads = self.config.threads or _usable_cpus()
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.cache_prompt = True
        params.cache_ram_mib = PROMPT_CACHE_RAM_MIB
        params.warmup = False  # saves a dummy decode at load; the first request pays nothing extra
        params.ui = False
        params.api_keys = [secrets.token_hex(16)]  # guards the HTTP port; in-process calls skip it
        # keep <think> and the like in the text, as the agent's parser and trajectories expect
        params.reasoning_format = xllamacpp.common_reasoning_format.COMMON_REASONING_FORMAT_NONE
        params.verbosity = 4 if os.environ.get("SERA_DEBUG") else -1
        params.lora_init_without_apply = True
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(p), 0.0) for p in self._adapters]
        return params

    def _one_completion(self, request: dict[str, Any],
                        cancel: threading.Event | None = None) -> Completion:
        """One reply, streamed so that it can stop early: when `cancel` is set, or on Ctrl-C
        (a signal cannot interrupt the C call; it is held as a flag, the generation stops at the
        next token, and KeyboardInterrupt is raised once the call has returned)."""
        started = time.perf_counter()
        stream = _Stream(cancel)
        with _sigint_held(stream):
            self._server.handle_chat_completions(
                {**request, "stream": True, "stream_options": {"include_usage": True}},
                stream.on_chunk)
        if stream.interrupted:
            raise KeyboardInterrupt
        if stream.error is not None:
            raise ModelError(_describe_error(stream.error, self.spec))
        return Completion(text="".join(stream.text),
                          prompt_tokens=int(stream.usage.get("prompt_tokens", 0)),
                          completion_tokens=int(stream.usage.get("completion_tokens", len(stream.text))),
                          seconds=time.perf_counter() - started,
                          finish_reason="length" if stream.finish == "length" else "stop")

    # -- adapters --------------------------------------------------------------------------------

    def _lora_scales(self, adapter: str | None) -> list[dict[str, float]]:
        """The request's `lora` field; loads the adapter first if the server does not have it."""
        chosen = self._gguf_adapter(adapter) if adapter else None
        if chosen is not None and self._needs_restart(chosen):
            self._restart_with(chosen)
        return [{"id": i, "scale": 1.0 if p == chosen else 0.0} for i, p in enumerate(self._adapters)]

    def _gguf_adapter(self, adapter: str) -> Path:
        path = Path(adapter).expanduser().resolve()
        if path.is_file():
            check_gguf_file(path)
            return path
        if path.is_dir() and all((path / name).is_file() for name in PEFT_FILES):
            return converted_adapter(path, self.path)
        raise ModelError(f"adapter {adapter} is neither a peft LoRA folder (with "
                         f"{' and '.join(PEFT_FILES)}) nor a GGUF adapter file; pass one of those, "
                         f"or leave the adapter out to use the base model")

    def _needs_restart(self, adapter: Path) -> bool:
        return self._adapter_mtimes.get(adapter) != adapter.stat().st_mtime

    def _restart_with(self, adapter: Path) -> None:
        # adapters deleted since the last start would make llama.cpp refuse to start at all
        others = [p for p in self._adapters if p != adapter and p.is_file()]
        self._stop()
        try:
            self._start_with_adapters(others + [adapter])
        except ModelError:
            self._start_with_adapters(others)
            raise ModelError(f"llama.cpp rejected the adapter {adapter}: it does not fit "
                             f"{self.path.name} (set SERA_DEBUG=1 to see why); train the adapter on "
                             f"this base model") from None

    def _start_with_adapters(self, adapters: list[Path]) -> None:
        self._adapters = adapters
        self._adapter_mtimes = {p: p.stat().st_mtime for p in adapters}
        self._start()


def converted_adapter(peft_dir: Path, base_gguf: Path) -> Path:
    """`peft_dir/adapter.gguf`, converted from the peft weights when missing or older than them
    (in the user cache when `peft_dir` is read-only)."""

    newest_source = max((peft_dir / name).stat().st_mtime for name in PEFT_FILES)
    for out in (peft_dir / "adapter.gguf", _cached_adapter_path(peft_dir)):
        if out.is_file() and out.stat().st_mtime >= newest_source:
            return out
        try:
            return convert_peft_to_gguf(peft_dir, base_gguf, out)
        except PermissionError:
            continue
    raise ModelError(f"cannot write the converted adapter beside {peft_dir} nor in "
                     f"{user_cache_dir()}; make one of them writable")


def _cached_adapter_path(peft_dir: Path) -> Path:
    import hashlib

    digest = hashlib.sha256(str(peft_dir).encode()).hexdigest()[:16]
    return user_cache_dir() / "adapters" / f"{peft_dir.name}-{digest}.gguf"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _describe_error(error: dict[str, Any], spec: str) -> str:
    if error.get("type") == "exceed_context_size_error":
        return (f"the conversation ({error.get('n_prompt_tokens')} tokens) does not fit the context "
                f"window of {error.get('n_ctx')} tokens; raise model.context_tokens "
                f"(SERA_MODEL_CONTEXT_TOKENS) or shorten the conversation")
    return f"{spec} refused the request: {error.get('message', error)}"


class _Stream:
    """Collects a streamed reply; `on_chunk` answers True to stop the generation."""

    def __init__(self, cancel: threading.Event | None):
        self.cancel, self.interrupted = cancel, False
        self.text: list[str] = []
        self.usage: dict[str, Any] = {}
        self.finish: str | None = None
        self.error: dict[str, Any] | None = None

    def on_chunk(self, chunk: dict[str, Any]) -> bool:
        if "error" in chunk:
            self.error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            return True
        for choice in chunk.get("choices") or []:
            self.text.append(choice.get("delta", {}).get("content") or "")
            self.finish = choice.get("finish_reason") or self.finish
        self.usage = chunk.get("usage") or self.usage
        return self.interrupted or bool(self.cancel is not None and self.cancel.is_set())


@contextlib.contextmanager
def _sigint_held(stream: _Stream):
    """In the main thread, Ctrl-C during the call sets `stream.interrupted` instead of raising
    inside llama.cpp's callback (where the exception would be ignored and generation go on)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def hold(signum, frame):
        stream.interrupted = True
    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)

