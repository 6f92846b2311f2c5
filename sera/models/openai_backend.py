"""Any OpenAI-compatible chat server: vLLM serve, llama.cpp's llama-server, Ollama, ...

`openai:<base-url>#<model>`, e.g. `openai:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-Coder-1.5B-Instruct`.
Without `#<model>` the first model the server lists is used. A request's adapter is sent as the
`model` (how `vllm serve --enable-lora --lora-modules NAME=PATH` selects a LoRA); for an adapter
given as a folder, its folder name. Only the standard library is used (urllib); set
SERA_OPENAI_API_KEY for servers started with an API key. 429, 5xx and dropped connections are
retried with exponential backoff; servers that ignore `n` get extra requests. With model.seed >= 0
the k-th request of a model object carries seed + k, so a run is reproducible while candidates
asked one after another still differ.
"""

from __future__ import annotations

import http.client
import threading
import itertools
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.base import Completion, Message
from sera.redact import mask_secrets

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds before each retry; len = number of retries
PROBE_TIMEOUT = 10.0  # seconds for the reachability check at load time
_DROPPED = (ConnectionResetError, ConnectionAbortedError, http.client.RemoteDisconnected,
            http.client.IncompleteRead, BrokenPipeError)
_START_HINT = ("start the server (e.g. `vllm serve <model> --enable-lora --lora-modules NAME=PATH` "
               "or `llama-server -m <file.gguf>`), or fix the spec that names it (--model, or "
               "--teacher for specialize's teacher)")


def load(arg: str, config: ModelConfig) -> "OpenAIChatModel":
    """The registry's entry point: `openai:<base-url>[#<model>]`."""
    base_url, _, model = arg.partition("#")
    base_url = base_url.strip().rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ModelError(f"openai backend needs a server URL: --model openai:<base-url>#<model>, "
                         f"e.g. openai:http://127.0.0.1:8000/v1#my-model (got {arg!r})")
    client = HttpJsonClient(base_url, config.request_timeout)
    # Also checks that the server is up; a server without /models is fine when the model is named.
    served = client.get("/models", timeout=min(PROBE_TIMEOUT, config.request_timeout),
                        missing_ok=True)
    model = model.strip() or _first_model(base_url, served)
    return OpenAIChatModel(f"openai:{base_url}#{model}", client, model, config)


class OpenAIChatModel:
    """Chat completions over HTTP; no state is shared between calls, so threads may share it."""

    def __init__(self, spec: str, client: "HttpJsonClient", model: str,
                 config: ModelConfig) -> None:
        self.spec = spec
        self.model = model
        self._client = client
        self._seed = config.seed
        self._requests = itertools.count()  # request k is sent seed + k: reproducible, not repeated

    @property
    def concurrent(self) -> bool:
        return True

    def complete(self, messages: Sequence[Message], *, n: int = 1, adapter: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 1024,
                 stop: Sequence[str] | None = None,
                 cancel: threading.Event | None = None,
                 seed: int | None = None) -> list[Completion]:
        body: dict[str, Any] = {
            "model": self.model if adapter is None else served_adapter_name(adapter),
            # nothing credential-shaped leaves the machine, whatever the caller built
            "messages": [{"role": m["role"], "content": mask_secrets(m["content"])}
                         for m in messages],
            "temperature": temperature, "max_tokens": max_tokens,
        }
        stops = [s for s in (stop or []) if s]
        if stops:
            body["stop"] = stops
        completions: list[Completion] = []
        for attempt in range(n):  # some servers ignore n > 1: ask again for the rest
            body["n"] = n - len(completions)
            if seed is not None:  # the caller's: sample i of this reply gets seed + i
                body["seed"] = seed + len(completions)
            elif self._seed >= 0:
                body["seed"] = self._seed + next(self._requests)
            start = time.perf_counter()
            reply = self._client.post("/chat/completions", body, adapter=adapter)
            completions += _completions(reply, stops, time.perf_counter() - start)
            if len(completions) >= n:
                break
        return completions[:n]

    def close(self) -> None:
        pass


def served_adapter_name(adapter: str) -> str:
    """The model name that selects `adapter` on the server: a folder's name, else the name itself."""
    path = Path(adapter).expanduser()
    if path.exists() or adapter.startswith(("/", ".", "~")):
        return path.resolve().name
    return adapter


def _first_model(base_url: str, served: dict[str, Any] | None) -> str:
    ids = [m.get("id") for m in (served or {}).get("data") or [] if isinstance(m, dict)]
    ids = [i for i in ids if isinstance(i, str) and i]
    if not ids:
        raise ModelError(f"the server at {base_url} lists no models at {base_url}/models; name "
                         f"the model: --model openai:{base_url}#<model>")
    if len(ids) > 1:
        log.warning("the server at %s serves %d models (%s); using %s; pick another with "
                    "--model openai:%s#<model>", base_url, len(ids), ", ".join(ids), ids[0],
                    base_url)
    return ids[0]


def _completions(reply: dict[str, Any], stops: list[str], seconds: float) -> list[Completion]:
    choices = reply.get("choices") or []
    if not choices:
        raise ModelError(f"the server answered without choices ({str(reply)[:200]}); check that it "
                         f"is an OpenAI-compatible chat server")
    usage = reply.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    # usage counts all choices together; each choice gets its share
    share, extra = divmod(int(usage.get("completion_tokens") or 0), len(choices))
    result = []
    for index, choice in enumerate(choices):
        text = ((choice.get("message") or {}).get("content")) or ""
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        if found:  # servers differ in whether the stop string is kept; never keep it
            text = text[:min(found)]
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        result.append(Completion(text=text, prompt_tokens=prompt_tokens,
                                 completion_tokens=share + (1 if index < extra else 0),
                                 seconds=seconds, finish_reason=reason))
    return result


class HttpJsonClient:
    """JSON over HTTP with retries; each call opens its own connection (thread-safe)."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.retry_delays: Sequence[float] = RETRY_DELAYS

    def get(self, path: str, *, timeout: float | None = None,
            missing_ok: bool = False) -> dict[str, Any] | None:
        """GET `path`; with `missing_ok`, an HTTP error status gives None instead of an error."""
        try:
            return self._send(urllib.request.Request(self.base_url + path, method="GET"),
                              timeout or self.timeout)
        except urllib.error.HTTPError as error:
            if missing_ok:
                return None
            raise self._refused(error, path, None) from None

    def post(self, path: str, body: dict[str, Any], *, adapter: str | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.base_url + path, method="POST",
                                         data=json.dumps(body).encode("utf-8"))
        try:
            return self._send(request, self.timeout)
        except urllib.error.HTTPError as error:
            raise self._refused(error, path, body.get("model") if adapter else None) from None

    def _send(self, request: urllib.request.Request, timeout: float) -> dict[str, Any]:
        """The decoded JSON answer; retries 429, 5xx and dropped connections; raises HTTPError."""
        request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        if os.environ.get("SERA_OPENAI_API_KEY"):
            request.add_header("Authorization", f"Bearer {os.environ['SERA_OPENAI_API_KEY']}")
        for attempt in range(len(self.retry_delays) + 1):
            retry = attempt < len(self.retry_delays)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return self._decode(response.read(), request.full_url)
            except urllib.error.HTTPError as error:
                if not (retry and (error.code == 429 or error.code >= 500)):
                    raise
                delay = _retry_after(error) or self.retry_delays[attempt]
            except urllib.error.URLError as error:  # no connection at all
                if not (retry and isinstance(error.reason, _DROPPED)):
                    raise self._unreachable(error.reason) from None
                delay = self.retry_delays[attempt]
            except _DROPPED as error:
                if not retry:
                    raise self._unreachable(error) from None
                delay = self.retry_delays[attempt]
            except TimeoutError:
                raise ModelError(f"the server at {self.base_url} did not answer within "
                                 f"{timeout:g} s; check the server, or raise model.request_timeout "
                                 f"(SERA_MODEL_REQUEST_TIMEOUT)") from None
            time.sleep(delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _decode(self, data: bytes, url: str) -> dict[str, Any]:
        try:
            reply = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            reply = None
        if not isinstance(reply, dict):
            raise ModelError(f"{url} answered something other than a JSON object; the base URL "
                             f"must be the server's OpenAI-compatible root, usually ending in /v1")
        return reply

    def _unreachable(self, reason: object) -> ModelError:
        if isinstance(reason, TimeoutError):
            return ModelError(f"the server at {self.base_url} did not answer in time; check it, or "
                              f"raise model.request_timeout (SERA_MODEL_REQUEST_TIMEOUT)")
        return ModelError(f"cannot reach {self.base_url} ({reason}): {_START_HINT}")

    def _refused(self, error: urllib.error.HTTPError, path: str,
                 adapter_model: str | None) -> ModelError:
        detail = _error_detail(error)
        hint = (f"serve the adapter under that name (vllm serve ... --enable-lora --lora-modules "
                f"{adapter_model}=/path/to/adapter)" if adapter_model else
                f"check the model name against {self.base_url}/models")
        return ModelError(f"the server at {self.base_url} refused {path} (HTTP {error.code}: "
                          f"{detail}); {hint}")


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    """The server's Retry-After in seconds, if it gives a small one."""
    try:
        value = float(error.headers.get("Retry-After", ""))
    except (TypeError, ValueError, AttributeError):
        return None
    return value if 0 <= value <= 30 else None


def _error_detail(error: urllib.error.HTTPError) -> str:
    try:
        body = error.read().decode("utf-8", "replace")
    except Exception:
        return error.reason or "no details"
    try:
        data = json.loads(body)
        message = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(message, dict):
            message = message.get("message") or message
        body = str(message)
    except json.JSONDecodeError:
        pass
    return " ".join(body.split())[:300] or str(error.reason)
