"""Convert a peft LoRA adapter into llama.cpp's GGUF LoRA adapter format.

llama.cpp's own converter (convert_lora_to_gguf.py) lives only in its repository, so sera writes the
format itself with the `gguf` package. What llama.cpp checks when it loads an adapter:

- file type `adapter`, `adapter.type` = "lora", `adapter.lora.alpha` (float32), and the same
  `general.architecture` as the base model;
- per adapted weight `W` (named as in the base GGUF, e.g. `blk.0.attn_q.weight`) two tensors
  `W.lora_a` and `W.lora_b`. peft's lora_A (rank x in) and lora_B (out x rank) are written as they
  are: GGUF stores dimensions reversed, so lora_a has ne = (in, rank), matching the base's ne[0],
  and lora_b has ne = (rank, out), matching the base's ne[1];
- llama.cpp scales every pair by alpha / rank, rank read from the tensor. peft variants that scale
  differently (rsLoRA, per-module alpha_pattern) are folded into lora_b so the product is the same.

The llama converter reorders the rows of the q and k projections for its RoPE layout; a LoRA delta
on those weights must have its output rows (lora_b) reordered the same way.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from sera.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

# Architectures whose GGUF q/k projection rows were permuted by convert_hf_to_gguf (LlamaModel).
ROPE_PERMUTED_ARCHS = {"llama"}

# base_model.model.<module>.lora_A[.<adapter name>].weight, as peft's save_pretrained writes it
_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class BaseModelInfo:
    """What the converter needs from the base GGUF: its architecture and tensor shapes (ne order)."""

    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    tensor_shapes: dict[str, tuple[int, ...]]


def convert_peft_to_gguf(adapter_dir: Path, base_gguf: Path, out: Path) -> Path:
    """Write `out`, a llama.cpp GGUF LoRA adapter equivalent to the peft adapter in `adapter_dir`,
    for the model `base_gguf`. The file appears atomically; returns `out`."""
    adapter_dir, out = Path(adapter_dir), Path(out)
    config = read_adapter_config(adapter_dir)
    pairs = read_lora_pairs(adapter_dir)
    base = read_base_info(Path(base_gguf))
    alpha = float(config["lora_alpha"])
    tensors = list(gguf_lora_tensors(pairs, config, base, alpha))
    write_adapter_gguf(out, base.arch, alpha, tensors)
    return out


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        raise ModelError(f"{adapter_dir} has no adapter_config.json; pass the folder a peft LoRA "
                         f"adapter was saved to (model.save_pretrained(folder))")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else config.get("peft_type")
        raise ModelError(f"{adapter_dir} holds a {kind} adapter; llama.cpp runs plain LoRA adapters "
                         f"only: retrain with use_dora=False, or use --model transformers:<model>")
    if "lora_alpha" not in config:
        raise ModelError(f"{path} has no lora_alpha; save the adapter again with peft")
    return config


def read_lora_pairs(adapter_dir: Path) -> dict[str, tuple["np.ndarray", "np.ndarray"]]:
    """{Hugging Face module name: (lora_A, lora_B)} as float32 arrays."""
    from safetensors.torch import load_file  # torch: peft adapters are often bf16, numpy has no bf16

    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        raise ModelError(f"{adapter_dir} has no adapter_model.safetensors; save the adapter with "
                         f"peft's save_pretrained (safe_serialization=True, the default)")
    halves: dict[str, dict[str, Any]] = {}
    for key, tensor in load_file(str(path), device="cpu").items():
        match = _PEFT_KEY.match(key)
        if match is None:
            raise ModelError(f"{path} holds {key!r}, which is not a LoRA A/B weight (modules_to_save "
                             f"and embedding LoRAs cannot run in llama.cpp); retrain without them")
        halves.setdefault(match["module"], {})[match["part"]] = tensor.float().numpy()
    pairs = {}
    for module, parts in halves.items():
        if set(parts) != {"A", "B"}:
            raise ModelError(f"{path} has lora_A or lora_B of {module} but not both; the adapter "
                             f"is damaged: save it again")
        pairs[module] = (parts["A"], parts["B"])
    if not pairs:
        raise ModelError(f"{path} holds no LoRA weights; train the adapter again")
    return pairs


def read_base_info(base_gguf: Path) -> BaseModelInfo:
    import gguf

    try:
        reader = gguf.GGUFReader(base_gguf)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot read the base model {base_gguf} as GGUF ({error}); pass the "
                         f".gguf file the adapter was trained on") from None

    def field(key: str, default: Any = None) -> Any:
        found = reader.get_field(key)
        return default if found is None else found.contents()

    arch = field("general.architecture")
    n_head = int(field(f"{arch}.attention.head_count", 0))
    return BaseModelInfo(
        arch=arch,
        n_blocks=int(field(f"{arch}.block_count", 0)),
        n_head=n_head,
        n_head_kv=int(field(f"{arch}.attention.head_count_kv", n_head)),
        tensor_shapes={t.name: tuple(int(d) for d in t.shape) for t in reader.tensors},
    )


def gguf_lora_tensors(pairs: dict[str, tuple["np.ndarray", "np.ndarray"]], config: dict[str, Any],
                      base: BaseModelInfo, alpha: float) -> Iterator[tuple[str, "np.ndarray"]]:
    """(GGUF tensor name, array) for every `.lora_a` / `.lora_b` tensor, checked against the base."""
    name_map = _tensor_name_map(base)
    for module in sorted(pairs):
        lora_a, lora_b = pairs[module]
        target = name_map.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise ModelError(f"the adapter adapts {module}, which has no counterpart in a "
                             f"{base.arch} GGUF with {base.n_blocks} layers; the adapter was trained "
                             f"for another model: train it on this base model")
        _check_shapes(module, target, lora_a, lora_b, base)
        lora_b = lora_b * _scale_correction(module, lora_a.shape[0], config, alpha)
        lora_b = _permute_rope_rows(target, lora_b, base)
        yield target + ".lora_a", lora_a.astype("float32", copy=False)
        yield target + ".lora_b", lora_b.astype("float32", copy=False)


def _tensor_name_map(base: BaseModelInfo) -> Any:
    import gguf

    arch = next((a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == base.arch), None)
    if arch is None:
        raise ModelError(f"the gguf package does not know the architecture {base.arch!r}; run this "
                         f"model with --model transformers:<model> to use adapters")
    return gguf.get_tensor_name_map(arch, base.n_blocks)


def _check_shapes(module: str, target: str, lora_a: "np.ndarray", lora_b: "np.ndarray",
                  base: BaseModelInfo) -> None:
    if target not in base.tensor_shapes:
        raise ModelError(f"the adapter adapts {module}, but the base model has no tensor {target} "
                         f"(e.g. tied embeddings); retrain without that module")
    base_in, base_out = base.tensor_shapes[target][:2]
    rank_ok = lora_a.shape[0] == lora_b.shape[1]
    if not rank_ok or lora_a.shape[1] != base_in or lora_b.shape[0] != base_out:
        raise ModelError(f"the adapter's {module} (lora_A {tuple(lora_a.shape)}, lora_B "
                         f"{tuple(lora_b.shape)}) does not fit {target} of the base model "
                         f"({base_out} x {base_in}); the adapter was trained for another model")


def _scale_correction(module: str, rank: int, config: dict[str, Any], alpha: float) -> float:
    """Factor that makes llama.cpp's alpha / rank equal to peft's scaling for this module."""
    module_alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, alpha))
    wanted = module_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    return wanted / (alpha / rank) if alpha else wanted


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    # peft matches a pattern against the end of the module name, on a dot boundary
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def _permute_rope_rows(target: str, lora_b: "np.ndarray", base: BaseModelInfo) -> "np.ndarray":
    """Reorder output rows of q/k deltas like convert_hf_to_gguf reordered the llama base weights:
    within each head, rows (half, pair) become (pair, half)."""
    if base.arch not in ROPE_PERMUTED_ARCHS:
        return lora_b
    if ".attn_q." in target:
        heads = base.n_head
    elif ".attn_k." in target:
        heads = base.n_head_kv
    else:
        return lora_b
    out_rows, rank = lora_b.shape
    per_head = lora_b.reshape(heads, 2, out_rows // heads // 2, rank)
    return per_head.swapaxes(1, 2).reshape(out_rows, rank)


def write_adapter_gguf(out: Path, arch: str, alpha: float,
                       tensors: list[tuple[str, "np.ndarray"]]) -> None:
    import gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, array in tensors:
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
