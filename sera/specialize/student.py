"""The student: the local model `sera specialize` fine-tunes, as a transformers folder.

The student is `model.spec` (what `sera solve` runs); it must be a local model, because training
happens here. A GGUF (the embedded default, `llamacpp:<file>`) is dequantized once and cached as
safetensors; the trained peft adapter then serves llama.cpp (converted to a GGUF adapter) and
transformers alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sera.errors import SeraError
from sera.models.registry import split_spec


def student_folder(spec: str) -> Path:
    from sera.models.transformers_backend import dequantize_gguf, resolve_model_folder
    name, arg = split_spec(spec)
    if name == "embedded":
        from sera.models.embedded import embedded_gguf_path
        return dequantize_gguf(embedded_gguf_path(arg or "1.5b"))
    if name == "transformers":
        return resolve_model_folder(arg)
    if name == "llamacpp":
        return dequantize_gguf(Path(arg).expanduser())
    raise SeraError(f"the model to specialize must run on this machine (embedded, transformers:<dir> "
                    f"or llamacpp:<file.gguf>), not {spec!r}; a server can still be the teacher: "
                    f"--teacher {spec}")


def token_counter(folder: Path) -> Callable[[str], int]:
    """Counts tokens as the student's tokenizer does (filters and truncation use it)."""
    from sera.models.transformers_backend import load_tokenizer
    tokenizer: Any = load_tokenizer(folder)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
