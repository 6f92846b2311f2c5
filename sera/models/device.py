"""Where torch work runs: one rule for training, the reranker and the policy stage."""

from __future__ import annotations

from sera.errors import SeraError

DEVICES = ("auto", "cpu", "cuda")


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
