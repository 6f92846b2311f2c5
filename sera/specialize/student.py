"""The student: the local model `sera specialize` fine-tunes, as a transformers folder.

The student is `model.spec` (what `sera solve` runs); it must be a local model, because training
happens here. A GGUF (the embedded default, `llamacpp:<file>`) is dequantized once and cached as
safetensors; the trained peft adapter then serves llama.cpp (converted to a GGUF adapter) and
transformers alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sera.models.local import transformers_folder
from sera.models.transformers_backend import load_tokenizer


def student_folder(spec: str) -> Path:
    return transformers_folder(spec, "model to specialize")


def token_counter(folder: Path) -> Callable[[str], int]:
    """Counts tokens as the student's tokenizer does (filters and truncation use it)."""
    tokenizer: Any = load_tokenizer(folder)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
