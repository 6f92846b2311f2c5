"""Pick a chat backend by a spec string; backends are imported only when asked for.

Spec forms (DESIGN.md):
    transformers:<dir | hub-id | file.gguf>   in-process transformers (+ peft adapters)
    llamacpp:<file.gguf>                      in-process llama.cpp (xllamacpp), CPU
    openai:<base-url>#<model>                 any OpenAI-compatible server (vLLM, llama.cpp, Ollama)
    vllm:<dir | hub-id>                       in-process vLLM on a GPU
    embedded[:1.5b | :0.5b]                   the embedded default GGUF, run with llama.cpp
    scripted:<file.json>                      a deterministic fake replaying given replies
"""

from __future__ import annotations

import importlib

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.base import ChatModel

# name -> "module:factory"; the factory takes (argument after the colon, ModelConfig) -> ChatModel
BACKENDS: dict[str, str] = {
    "transformers": "sera.models.transformers_backend:load",
    "llamacpp": "sera.models.llamacpp_backend:load",
    "openai": "sera.models.openai_backend:load",
    "vllm": "sera.models.vllm_backend:load",
    "embedded": "sera.models.embedded:load",
    "scripted": "sera.models.scripted:load",
}


def split_spec(spec: str) -> tuple[str, str]:
    """'transformers:/a/b' -> ('transformers', '/a/b'); 'embedded' -> ('embedded', '')."""
    name, _, arg = spec.strip().partition(":")
    if name not in BACKENDS:
        valid = ", ".join(sorted(BACKENDS))
        raise ModelError(f"unknown model backend {name!r} in {spec!r}; valid backends: {valid} "
                         f"(e.g. --model embedded, --model transformers:/path/to/model)")
    return name, arg


def load_model(spec: str, config: "ModelConfig | None" = None) -> ChatModel:
    """Build the backend named by `spec`, with engine settings from `config` (defaults if None)."""
    name, arg = split_spec(spec)
    module_name, factory = BACKENDS[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, factory)(arg, config or ModelConfig())
