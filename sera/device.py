"""Where torch work runs, and in which dtype: one rule for training, the reranker and the policy
stage."""

from __future__ import annotations

from typing import Any

from sera.errors import SeraError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(device: str, what: str = "this step") -> str:
    """"cpu" or "cuda" for a configured device: auto -> cuda when torch sees a GPU, else cpu; a
    SeraError that says what to set when `device` is unknown, or cuda without a GPU."""
    if device not in DEVICES:
        raise SeraError(f"unknown device {device!r} for {what}; use auto, cpu or cuda")
    if device == "cpu":
        return device
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise SeraError(f"{what} was asked to run on a GPU (device cuda) but torch sees none; "
                        f"use device cpu or auto")
    return device


def native_bf16(device: str) -> bool:
    """Whether `device` ("cpu" or "cuda") multiplies bf16 matrices in hardware. On a CPU that means
    AVX512-BF16 or AMX: there bf16 matmuls run 3-4x as fast as float32 (measured on 2 EPYC cores:
    619 against 166 GFLOP/s); elsewhere torch emulates bf16, slower than float32."""
    import torch
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def torch_dtype(precision: str, device: str) -> Any:
    """The torch dtype of a frozen base for a `precision` setting on a configured `device` (auto,
    cpu or cuda): auto = bfloat16 where the device computes in it natively, else float32."""
    import torch
    if precision not in PRECISIONS:
        raise SeraError(f"unknown precision {precision!r}; use auto, fp32 or bf16")
    if precision == "auto":
        precision = "bf16" if native_bf16(pick_device(device)) else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


def dtype_name(precision: str, device: str) -> str:
    """"bfloat16" or "float32": what `torch_dtype` picks, as a card records it."""
    return str(torch_dtype(precision, device)).removeprefix("torch.")


def precision_of(name: str | None) -> str:
    """The precision setting that loads a card's recorded dtype (`dtype_name`) again; auto for
    a card that records none."""
    return {"bfloat16": "bf16", "float32": "fp32"}.get(name or "", "auto")
