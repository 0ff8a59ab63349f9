"""Small models and data for the quantisation tests."""

from __future__ import annotations

import torch

from spikeforge.datasets import MNIST
from spikeforge.models import create_model

MNIST_RANGE = (1 - 0.1307) / 0.3081  # the largest |normalised pixel|


def mnist_batch(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = MNIST(train=False).as_tensors(torch.float32)
    return (x[:n] - 0.1307) / 0.3081, y[:n]


def scaled_mnistnet(seed: int = 0, **kwargs):
    """An untrained MNISTNet whose layers fire (fc weights doubled, as the public vectors do)."""
    torch.manual_seed(seed)
    model = create_model("stbp_mnistnet", **kwargs)
    with torch.no_grad():
        model.fc1.weight.mul_(2.0)
        model.fc2.weight.mul_(2.0)
    return model.eval()
