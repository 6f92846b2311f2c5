"""`sera serve`: the model behind an OpenAI-compatible server, the repository's adapters chosen
per request by name, for solve, specialize --teacher, the language server and the TUI of other
processes or machines (`--model openai:<url>#<name>`).

    sera serve [--engine llamacpp|vllm] [--model SPEC] [--adapters all|NAME,...] [--host] [--port]

- llamacpp (CPU): sera's own in-process llama.cpp backend behind a small HTTP server:
  `GET /v1/models` lists the base model (`base`) and the adapters by name, `POST
  /v1/chat/completions` answers with the adapter the request's `model` names (peft folders are
  converted to GGUF as the backend does). Requests are answered one at a time by the engine (on a
  CPU parallel slots give no more tokens/s); concurrent requests wait their turn.
- vllm (GPU): `vllm serve` with the adapters as `--lora-modules NAME=PATH`, tensor parallel over
  the GPUs present, the tool-call parser of the model family; sera runs it and waits.

It binds to 127.0.0.1 unless told otherwise, and then requires an API key (`--api-key`, or
SERA_SERVE_API_KEY): requests without `Authorization: Bearer <key>` are refused. The clients
send it from SERA_OPENAI_API_KEY. Ctrl-C stops it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import subprocess
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from sera.errors import SeraError
from sera.models.adapters import list_adapters
from sera.models.vllm_backend import lora_rank

BASE_NAME = "base"
MAX_BODY_BYTES = 16 * 1024 * 1024


def served_adapters(repo_root: Path, wanted: str) -> dict[str, str]:
    """name -> folder of the adapters to serve: `all`, none (''), or `NAME,...` (each must exist)."""
    known = {folder.name: str(folder) for folder, _ in list_adapters(repo_root)}
    if wanted in ("", "none"):
        return {}
    if wanted == "all":
        return known
    names = [name.strip() for name in wanted.split(",") if name.strip()]
    missing = [name for name in names if name not in known]
    if missing:
        raise SeraError(f"no adapter {', '.join(missing)} in this repository; its adapters: "
                        f"{', '.join(known) or 'none yet (sera specialize . trains one)'}")
    return {name: known[name] for name in names}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str) -> None:
    if not is_loopback(host) and not api_key:
        raise SeraError(f"serving on {host} lets other machines use the model: give an API key "
                        f"(--api-key KEY or SERA_SERVE_API_KEY), which clients send from "
                        f"SERA_OPENAI_API_KEY")


# ---------------------------------------------------------------------------------------------
# llama.cpp: sera's backend behind an OpenAI-compatible HTTP server


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: Any, adapters: dict[str, str],
                 api_key: str):
        super().__init__(address, ChatHandler)
        self.model, self.adapters, self.api_key = model, adapters, api_key

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # one line per request would bury the serving notice

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._authorized():
            return
        if self.path.rstrip("/") != "/v1/models":
            return self._error(404, f"no {self.path} here; GET /v1/models, POST /v1/chat/completions")
        names = [BASE_NAME, *self.server.adapters]
        self._json(200, {"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "sera"} for name in names]})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no {self.path} here; POST /v1/chat/completions")
        try:
            body = self._body()
            adapter = self._adapter(body.get("model", BASE_NAME))
            started = time.perf_counter()
            answers = self.server.model.complete(
                _messages(body), n=int(body.get("n") or 1), adapter=adapter,
                temperature=float(body.get("temperature", 0.0)),
                max_tokens=int(body.get("max_tokens") or 1024), stop=_stops(body.get("stop")),
                seed=None if body.get("seed") is None else int(body["seed"]))
        except _BadRequest as error:
            return self._error(error.status, str(error))
        except (TypeError, ValueError) as error:
            return self._error(400, f"a field of the request has the wrong type ({error})")
        except SeraError as error:
            return self._error(500, str(error))
        self._json(200, _chat_reply(body.get("model", BASE_NAME), answers,
                                    time.perf_counter() - started))

    def _authorized(self) -> bool:
        key = self.server.api_key
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if key and not hmac.compare_digest(given.encode(), key.encode()):
            self._error(401, "a valid API key is required: send Authorization: Bearer <key> "
                             "(sera's clients send SERA_OPENAI_API_KEY)")
            return False
        return True

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            raise _BadRequest(400, "the request needs a JSON body")
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _BadRequest(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _BadRequest(400, "the body must be a JSON object")
        return body

    def _adapter(self, name: Any) -> str | None:
        if name == BASE_NAME:
            return None
        if name not in self.server.adapters:
            served = ", ".join([BASE_NAME, *self.server.adapters])
            raise _BadRequest(404, f"model {name!r} is not served here; served: {served}")
        return self.server.adapters[name]

    def _json(self, status: int, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"message": message, "code": status}})


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str)
            and m.get("role") in ("system", "user", "assistant") for m in messages):
        raise _BadRequest(400, "messages must be a non-empty list of {role, content} objects "
                               "(roles system, user, assistant)")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _stops(stop: Any) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]


def _chat_reply(model: str, answers: list, seconds: float) -> dict[str, Any]:
    return {"id": f"chatcmpl-{secrets.token_hex(8)}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": a.text},
                         "finish_reason": a.finish_reason} for i, a in enumerate(answers)],
            "usage": {"prompt_tokens": answers[0].prompt_tokens if answers else 0,
                      "completion_tokens": sum(a.completion_tokens for a in answers),
                      "total_tokens": (answers[0].prompt_tokens if answers else 0)
                      + sum(a.completion_tokens for a in answers)},
            "sera": {"seconds": round(seconds, 3)}}


def serve_llamacpp(model: Any, adapters: dict[str, str], host: str, port: int, api_key: str,
                   ready: Callable[[ChatServer], None]) -> None:
    """Serve until Ctrl-C; `ready` is told the server once it listens."""
    server = ChatServer((host, port), model, adapters, api_key)
    try:
        ready(server)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---------------------------------------------------------------------------------------------
# vLLM: its own server, told about the adapters

TOOL_PARSERS = {"qwen": "hermes", "llama": "llama3_json", "mistral": "mistral"}


def vllm_command(model: str, adapters: dict[str, str], host: str, port: int, api_key: str,
                 gpus: int) -> list[str]:
    """The `vllm serve` command line for `model` with `adapters` (name -> folder)."""
    command = ["vllm", "serve", model, "--host", host, "--port", str(port),
               "--served-model-name", BASE_NAME, "--enable-prefix-caching"]
    if gpus > 1:
        command += ["--tensor-parallel-size", str(gpus)]
    if adapters:
        command += ["--enable-lora", "--max-lora-rank", str(lora_rank(list(adapters.values()))),
                    "--lora-modules", *(f"{name}={folder}" for name, folder in adapters.items())]
    parser = next((p for family, p in TOOL_PARSERS.items() if family in model.lower()), None)
    if parser:
        command += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    if api_key:
        command += ["--api-key", api_key]
    return command


def serve_vllm(command: list[str]) -> int:
    try:
        process = subprocess.Popen(command)
    except FileNotFoundError:
        raise SeraError("vllm is not installed here (`pip install vllm` on a machine with an NVIDIA "
                        "GPU); on a CPU use --engine llamacpp") from None
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()
