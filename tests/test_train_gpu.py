"""The GPU training path (bf16 base, METHODS.md's LoRA recipe): runs only where CUDA is present.

    python -m pytest -m gpu tests/test_train_gpu.py
"""

from __future__ import annotations

import dataclasses

import pytest

from tiny_models import build_tiny_model
from sera.config import TrainConfig
from sera.device import torch_dtype
from sera.specialize.lora import mean_nll, train_lora
from test_train import ROWS

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_lora_training_on_the_gpu_lowers_the_loss(tmp_path):
    tiny = build_tiny_model(tmp_path / "tiny")
    config = dataclasses.replace(TrainConfig.for_device("cuda"), lr=1e-2, epochs=12, batch_size=2,
                                 grad_accum=1, max_tokens=2048, batch_tokens=4096)
    assert torch_dtype(config.precision, config.device) == torch.bfloat16
    assert config.device == "cuda"
    result = train_lora(tiny, ROWS, tmp_path / "adapter", config)
    assert sum(result.losses[-3:]) < 0.7 * sum(result.losses[:3])
    assert mean_nll(tiny, ROWS, tmp_path / "adapter", device="cuda") < mean_nll(tiny, ROWS, device="cuda")
