"""One rule for where torch work runs (training, the reranker, the policy stage)."""

import pytest
import torch

from sera.errors import SeraError
from sera.device import dtype_name, native_bf16, pick_device, precision_of, torch_dtype


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu():
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"


def test_a_bad_device_says_which_ones_there_are():
    with pytest.raises(SeraError, match="unknown device 'gpu' for training; use auto, cpu or cuda"):
        pick_device("gpu", "training")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: cuda is valid here")
def test_cuda_without_a_gpu_says_what_to_set():
    with pytest.raises(SeraError, match="policy optimization was asked to run on a GPU.*use "
                                        "device cpu or auto"):
        pick_device("cuda", "policy optimization")


def test_a_precision_names_its_dtype_and_auto_follows_the_hardware(monkeypatch):
    assert torch_dtype("fp32", "cpu") == torch.float32
    assert torch_dtype("bf16", "cpu") == torch.bfloat16
    for native in (True, False):
        # The CPU's feature probes are torch's edge: a CPU with AVX512-BF16, and one without.
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert native_bf16("cpu") is native
        assert torch_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)


def test_a_bad_precision_says_which_ones_there_are():
    with pytest.raises(SeraError, match="unknown precision 'fp16'; use auto, fp32 or bf16"):
        torch_dtype("fp16", "cpu")


def test_a_recorded_dtype_loads_in_the_precision_it_was_made_with():
    for precision in ("fp32", "bf16"):
        assert precision_of(dtype_name(precision, "cpu")) == precision
    assert precision_of(None) == "auto"  # a card from before dtypes were recorded
