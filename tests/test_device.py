"""One rule for where torch work runs (training, the reranker, the policy stage)."""

import pytest
import torch

from sera.errors import SeraError
from sera.models.device import pick_device


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
