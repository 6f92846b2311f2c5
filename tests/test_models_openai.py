"""The OpenAI-compatible backend against a real tiny HTTP server on 127.0.0.1 (in a thread)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models import openai_backend
from sera.models.registry import load_model


class FakeServer:
    """/v1/models and /v1/chat/completions; records every request body it receives."""

    def __init__(self) -> None:
        self.models = ["served-model"]
        self.honour_n = True
        self.failures: list[int] = []  # HTTP statuses (or 0 = drop the connection) to answer first
        self.delay = 0.0
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.handle_error = lambda request, address: None  # clients that time out on purpose
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server.paths.append(self.path)
                if self.path != "/v1/models":
                    return self._send(404, {"error": {"message": "no such route"}})
                self._send(200, {"object": "list",
                                 "data": [{"id": m, "object": "model"} for m in server.models]})

            def do_POST(self) -> None:
                server.paths.append(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                if server.failures:
                    status = server.failures.pop(0)
                    if status == 0:  # drop the connection without an answer
                        self.close_connection = True
                        return
                    return self._send(status, {"error": {"message": f"status {status}"}},
                                      {"Retry-After": "0"} if status == 429 else {})
                if body["model"] not in server.models:
                    return self._send(404, {"error": {"message": f"model {body['model']} "
                                                                 f"does not exist"}})
                time.sleep(server.delay)
                self._send(200, server.answer(body))

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def answer(self, body: dict) -> dict:
        n = body.get("n", 1) if self.honour_n else 1
        reply = f"reply from {body['model']} to: {body['messages'][-1]['content']}"
        length = body["max_tokens"] < 5
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": i, "finish_reason": "length" if length else "stop",
                             "message": {"role": "assistant", "content": f"{reply} #{i}"}}
                            for i in range(n)],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7 * n, "total_tokens": 0}}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(openai_backend, "RETRY_DELAYS", (0.01, 0.02, 0.04))


MESSAGES = [{"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": "Fix it."}]


def test_request_body_and_completion(server):
    model = load_model(f"openai:{server.url}#served-model", ModelConfig(seed=7))
    assert model.concurrent is True
    [completion] = model.complete(MESSAGES, temperature=0.5, max_tokens=64, stop=["</tool_call>"])
    assert server.bodies == [{"model": "served-model", "messages": MESSAGES, "n": 1,
                              "temperature": 0.5, "max_tokens": 64, "stop": ["</tool_call>"],
                              "seed": 7}]
    assert completion.text == "reply from served-model to: Fix it. #0"
    assert (completion.prompt_tokens, completion.completion_tokens) == (11, 7)
    assert completion.finish_reason == "stop"
    assert completion.seconds > 0


def test_no_credential_leaves_for_the_server(server):
    model = load_model(f"openai:{server.url}#served-model", ModelConfig())
    leaked = "the output was:\nexport OPENAI_API_KEY=sk-proj-abcdEFGH1234ijklMNOP5678"
    model.complete([*MESSAGES, {"role": "user", "content": leaked}], max_tokens=8)
    sent = server.bodies[0]["messages"]
    assert sent[:2] == MESSAGES and "abcdEFGH" not in sent[2]["content"]
    assert sent[2]["content"].startswith("the output was:\nexport OPENAI_API_KEY=[sera:")


def test_no_seed_when_random_and_length_reason(server):
    model = load_model(f"openai:{server.url}#served-model", ModelConfig(seed=-1))
    [completion] = model.complete(MESSAGES, max_tokens=3)
    assert "seed" not in server.bodies[0] and "stop" not in server.bodies[0]
    assert completion.finish_reason == "length"


def test_model_from_the_server_list(server, caplog):
    assert load_model(f"openai:{server.url}").spec == f"openai:{server.url}#served-model"
    server.models = ["base-model", "my-lora"]
    with caplog.at_level(logging.WARNING):
        model = load_model(f"openai:{server.url}/")
    assert model.spec.endswith("#base-model")
    assert "base-model, my-lora" in caplog.text


def test_adapter_is_sent_as_the_model(server, tmp_path):
    server.models = ["served-model", "my-lora"]
    model = load_model(f"openai:{server.url}#served-model")
    by_name = model.complete(MESSAGES, adapter="my-lora")[0]
    folder = tmp_path / "adapters" / "my-lora"
    folder.mkdir(parents=True)
    by_path = model.complete(MESSAGES, adapter=str(folder) + "/")[0]
    assert [b["model"] for b in server.bodies] == ["my-lora", "my-lora"]
    assert by_name.text.startswith("reply from my-lora") and by_path.text == by_name.text


def test_unserved_adapter_says_how_to_serve_it(server):
    model = load_model(f"openai:{server.url}#served-model")
    with pytest.raises(ModelError, match="--lora-modules other=") as error:
        model.complete(MESSAGES, adapter="other")
    assert "does not exist" in str(error.value)


def test_n_is_honoured_and_token_usage_is_shared(server):
    model = load_model(f"openai:{server.url}#served-model")
    completions = model.complete(MESSAGES, n=3, temperature=1.0)
    assert len(server.bodies) == 1 and server.bodies[0]["n"] == 3
    assert [c.text[-2:] for c in completions] == ["#0", "#1", "#2"]
    assert [c.completion_tokens for c in completions] == [7, 7, 7]


def test_server_ignoring_n_gets_extra_requests(server):
    server.honour_n = False
    model = load_model(f"openai:{server.url}#served-model", ModelConfig(seed=5))
    completions = model.complete(MESSAGES, n=3, temperature=1.0)
    assert len(completions) == 3
    assert [b["n"] for b in server.bodies] == [3, 2, 1]
    assert [b["seed"] for b in server.bodies] == [5, 6, 7]  # reproducible, not identical


def test_a_callers_seed_wins_and_numbers_the_samples(server):
    server.honour_n = False
    model = load_model(f"openai:{server.url}#served-model", ModelConfig(seed=5))
    model.complete(MESSAGES, n=2, temperature=1.0, seed=40)
    model.complete(MESSAGES, n=1, temperature=1.0, seed=40)
    assert [b["seed"] for b in server.bodies] == [40, 41, 40]  # the same seed, the same draws


def test_each_candidate_of_a_solve_samples_with_its_own_seed_every_time(server, repo):
    """Seeded solves are paired: candidate k's requests carry model.seed + 1000 k, whatever runs
    beside them, so two bench configurations that show the same prompt get the same reply."""
    from sera.agent.solve import solve
    from sera.config import load_settings
    spec = f"openai:{server.url}#served-model"
    settings = load_settings(repo, {"model.spec": spec, "model.seed": 5, "solve.candidates": 2,
                                    "solve.parallel": 2, "agent.scaffold": "agent",
                                    "agent.max_steps": 1, "rerank.reranker": "none"})
    solve(repo, "make add return the sum", settings, load_model(spec, settings.model))
    assert sorted({b["seed"] for b in server.bodies}) == [5, 1005]


@pytest.mark.parametrize("failures", [[503], [429], [0], [502, 0, 500]])
def test_transient_failures_are_retried(server, failures):
    server.failures = list(failures)
    model = load_model(f"openai:{server.url}#served-model")
    [completion] = model.complete(MESSAGES)
    assert completion.text.startswith("reply from served-model")
    assert len(server.bodies) == len(failures) + 1


def test_persistent_failure_gives_up_with_the_servers_message(server):
    server.failures = [503] * 10
    model = load_model(f"openai:{server.url}#served-model")
    with pytest.raises(ModelError, match="HTTP 503: status 503"):
        model.complete(MESSAGES)
    assert len(server.bodies) == len(openai_backend.RETRY_DELAYS) + 1


def test_client_error_is_not_retried(server):
    server.failures = [400]
    model = load_model(f"openai:{server.url}#served-model")
    with pytest.raises(ModelError, match="HTTP 400"):
        model.complete(MESSAGES)
    assert len(server.bodies) == 1


def test_unreachable_server_fails_fast_with_advice():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(ModelError) as error:
        load_model(f"openai:http://127.0.0.1:{port}/v1#m")
    assert time.perf_counter() - start < 3
    message = str(error.value)
    assert f"cannot reach http://127.0.0.1:{port}/v1" in message
    assert "vllm serve" in message and "llama-server" in message and "--model" in message


def test_slow_server_times_out_with_advice(server):
    server.delay = 1.0
    model = load_model(f"openai:{server.url}#served-model", ModelConfig(request_timeout=0.3))
    with pytest.raises(ModelError, match="request_timeout"):
        model.complete(MESSAGES)


def test_concurrent_requests(server):
    model = load_model(f"openai:{server.url}#served-model")
    texts: list[str] = []

    def ask(i: int) -> None:
        texts.append(model.complete([{"role": "user", "content": f"q{i}"}])[0].text)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(texts) == sorted(f"reply from served-model to: q{i} #0" for i in range(6))


@pytest.mark.parametrize("arg, match", [
    ("localhost:8000/v1#m", "needs a server URL"),
    ("", "needs a server URL"),
])
def test_bad_url_shows_the_spec_form(arg, match):
    with pytest.raises(ModelError, match=match):
        load_model(f"openai:{arg}")


def test_server_with_no_models_asks_for_one(server):
    server.models = []
    with pytest.raises(ModelError, match="name the model"):
        load_model(f"openai:{server.url}")

