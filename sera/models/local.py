"""A local model spec as a transformers folder: what training and the reranker load.

`embedded[:size]` and `llamacpp:<file.gguf>` are dequantized once and cached as safetensors, so the
same weights llama.cpp serves can be trained and scored with transformers; `transformers:<dir>` is
used as it is. A server spec has no local weights and is refused with what to use instead.
"""

from __future__ import annotations

from pathlib import Path

from sera.errors import SeraError
from sera.models.embedded import embedded_gguf_path
from sera.models.registry import split_spec
from sera.models.transformers_backend import dequantize_gguf, resolve_model_folder


def transformers_folder(spec: str, purpose: str = "model to specialize") -> Path:
    name, arg = split_spec(spec)
    if name == "embedded":
        return dequantize_gguf(embedded_gguf_path(arg or "1.5b"))
    if name == "transformers":
        return resolve_model_folder(arg)
    if name == "llamacpp":
        return dequantize_gguf(Path(arg).expanduser())
    raise SeraError(f"the {purpose} must run on this machine (embedded, transformers:<dir> or "
                    f"llamacpp:<file.gguf>), not {spec!r}; a server can still be the teacher: "
                    f"--teacher {spec}")
