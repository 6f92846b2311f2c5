"""`vllm:<dir | hub-id>`: in-process vLLM is not part of this version (a later issue adds it).

Until then the same GPU serving works through vLLM's OpenAI-compatible server and the `openai`
backend, adapters included; `load` says how.
"""

from __future__ import annotations

from sera.config import ModelConfig
from sera.errors import ModelError


def load(arg: str, config: ModelConfig):
    model = arg or "<model>"
    raise ModelError(
        f"in-process vLLM is not available in this version; start vLLM's server instead: "
        f"`vllm serve {model} --enable-lora --lora-modules NAME=/path/to/adapter` and use "
        f"--model openai:http://127.0.0.1:8000/v1#{model}")
