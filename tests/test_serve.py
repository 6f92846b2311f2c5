"""`sera serve`: the llama.cpp engine for real (SmolLM2-135M GGUF, two LoRA adapters of the
repository picked by name through the `openai` backend, an agent step through it, a wrong key
refused, two requests at once); the vLLM engine through the command line it builds; the refusal
to expose a model without a key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import GIT_IDENTITY
from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.registry import load_model
from sera.models.serve import vllm_command
from test_models_llamacpp import base_shapes, build_peft_adapter, needs_smollm, smollm_gguf

PROMPT = [{"role": "user", "content": "Say something about Paris."}]


def add_adapter(repo: Path, name: str, scale: float) -> Path:
    folder = build_peft_adapter(repo / ".sera" / "adapters" / name, base_shapes(smollm_gguf()),
                                scale=scale)
    (folder / "card.json").write_text(json.dumps({"student": f"llamacpp:{smollm_gguf()}"}))
    return folder


def start_server(repo: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    # Ctrl-C as from a terminal: a suite started in the background hands SIGINT down ignored
    server = subprocess.Popen([sys.executable, "-m", "sera", "-C", str(repo), "serve", "--model",
                               f"llamacpp:{smollm_gguf()}", "--port", "0", *flags],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **GIT_IDENTITY},
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = server.stdout.readline()
    assert line.startswith("serving "), line + server.stderr.read()
    server.stdout.readline()  # "use it with: ..."
    return server, line.split(" at ")[1].strip()


def stop(server: subprocess.Popen) -> int:
    server.send_signal(signal.SIGINT)
    return server.wait(60)


@needs_smollm
def test_adapters_by_name_an_agent_step_a_wrong_key_and_two_requests_at_once(repo, monkeypatch):
    add_adapter(repo, "first", scale=1.0)
    add_adapter(repo, "second", scale=3.0)
    server, url = start_server(repo, "--api-key", "right-key")
    try:
        monkeypatch.setenv("SERA_OPENAI_API_KEY", "right-key")
        model = load_model(f"openai:{url}#base", ModelConfig(seed=1))
        texts = {name: model.complete(PROMPT, max_tokens=12, adapter=name)[0].text
                 for name in (None, "first", "second")}
        assert len(set(texts.values())) == 3  # each adapter answers differently from the base
        assert model.complete(PROMPT, max_tokens=12, adapter=None)[0].text == texts[None]
        with pytest.raises(ModelError, match="not served here; served: base, "):
            model.complete(PROMPT, max_tokens=4, adapter="third")

        answers = []
        threads = [threading.Thread(target=lambda: answers.append(
            model.complete(PROMPT, max_tokens=8)[0])) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(answers) == 2 and all(a.completion_tokens > 0 for a in answers)

        step = subprocess.run([sys.executable, "-m", "sera", "-C", str(repo), "solve",
                               "calc.add is wrong", "--model", f"openai:{url}#base",
                               "--candidates", "1", "--max-steps", "1", "--scaffold", "agent"],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, **GIT_IDENTITY, "SERA_OPENAI_API_KEY": "right-key",
                                   "SERA_MODEL_MAX_TOKENS": "24"})
        assert step.returncode == 0, step.stderr[-2000:]
        assert "candidate 0" in step.stdout

        monkeypatch.setenv("SERA_OPENAI_API_KEY", "wrong-key")
        with pytest.raises(ModelError, match="HTTP 401"):
            load_model(f"openai:{url}#base", ModelConfig()).complete(PROMPT, max_tokens=4)
    finally:
        assert stop(server) == 0


def test_a_model_is_not_exposed_beyond_this_machine_without_a_key(repo):
    done = subprocess.run([sys.executable, "-m", "sera", "-C", str(repo), "serve", "--host",
                           "0.0.0.0", "--model", "llamacpp:/nonexistent.gguf"],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "SERA_SERVE_API_KEY"})
    assert done.returncode == 1
    assert "serving on 0.0.0.0 lets other machines use the model: give an API key" in done.stderr


def test_the_vllm_command_line(tmp_path):
    adapter = tmp_path / "repo-fix"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16}))
    command = vllm_command("Qwen/Qwen2.5-Coder-7B-Instruct", {"repo-fix": str(adapter)},
                           "127.0.0.1", 8000, "key", gpus=2)
    assert command[:3] == ["vllm", "serve", "Qwen/Qwen2.5-Coder-7B-Instruct"]
    text = " ".join(command)
    for part in ("--served-model-name base", "--tensor-parallel-size 2", "--enable-lora",
                 "--max-lora-rank 16", f"--lora-modules repo-fix={adapter}",
                 "--tool-call-parser hermes", "--api-key key", "--host 127.0.0.1 --port 8000"):
        assert part in text, part
    single = vllm_command("some/model", {}, "127.0.0.1", 8000, "", gpus=1)
    assert "--enable-lora" not in single and "--tensor-parallel-size" not in single
    assert "--api-key" not in single
