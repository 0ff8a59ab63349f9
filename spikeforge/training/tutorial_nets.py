"""The spiking networks of SpikingJelly's training tutorials, as the examples, ``spikeforge demo`` and the
benchmarks use them (state_dict keys as SpikingJelly's).

* :class:`LIFFCNet` — ``lif_fc_mnist``: Flatten -> Linear(784, 10, bias=False) -> LIFNode(tau, ATan), Poisson
  input, multi-step; on the CPU the encoder and the linear layer are fused
  (:func:`spikeforge.fused_encoding.poisson_linear`), which computes Linear(PoissonEncoder(x)) with far fewer
  operations;
* :class:`CSNN` — ``conv_fashion_mnist``: {Conv2d(3x3) - BatchNorm2d - IFNode - MaxPool2d(2)} x 2 - Flatten -
  Linear(C*7*7, C*4*4) - IFNode - Linear(C*4*4, 10) - IFNode, direct input coding for T steps.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import encoding, functional, layer, neuron, surrogate
from ..fused_encoding import has_fast_kernels, poisson_linear

__all__ = ["LIFFCNet", "CSNN"]


class LIFFCNet(nn.Module):
    """Flatten -> Linear(784, 10, bias=False) -> LIFNode, in multi-step mode.

    ``dense=True`` always materialises the Poisson spikes and runs the Sequential (the fused path computes the
    same model).
    """

    def __init__(self, tau: float = 2.0, dense: bool = False):
        super().__init__()
        self.layer = nn.Sequential(
            layer.Flatten(),
            layer.Linear(28 * 28, 10, bias=False),
            neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan()),
        )
        functional.set_step_mode(self, "m")
        self.dense = dense
        self.encoder = encoding.PoissonEncoder()

    @property
    def output_neuron(self) -> nn.Module:
        return self.layer[2]

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Spikes ``[T, B, 1, 28, 28]`` -> output spikes ``[T, B, 10]``."""
        return self.layer(x_seq)

    def forward_poisson(self, images: torch.Tensor, T: int) -> torch.Tensor:
        """Images ``[B, 1, 28, 28]`` (uint8 grey levels or floats in [0, 1]) -> output spikes ``[T, B, 10]``."""
        linear = self.layer[1]
        if not self.dense and has_fast_kernels() and linear.weight.device.type == "cpu":
            return self.layer[2](poisson_linear(images, linear.weight, T))
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
        return self.forward(self.encoder.encode_sequence(x, T))

    def firing_rate(self, images: torch.Tensor, T: int) -> torch.Tensor:
        """Images -> firing rates ``[B, 10]`` over ``T`` Poisson-coded steps."""
        return self.forward_poisson(images, T).mean(0)


class CSNN(nn.Module):
    """SpikingJelly's Fashion-MNIST convolutional SNN with ``channels`` feature maps, T steps of direct input."""

    def __init__(self, T: int, channels: int):
        super().__init__()
        self.T = T
        self.conv_fc = nn.Sequential(
            layer.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2, 2),  # 14 x 14
            layer.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2, 2),  # 7 x 7
            layer.Flatten(),
            layer.Linear(channels * 7 * 7, channels * 4 * 4, bias=False),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.Linear(channels * 4 * 4, 10, bias=False),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
        )
        functional.set_step_mode(self, "m")

    @property
    def output_neuron(self) -> nn.Module:
        return self.conv_fc[-1]

    def forward_spikes(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 1, 28, 28]`` -> output spikes ``[T, N, 10]`` (direct coding: repeated input)."""
        return self.conv_fc(x.unsqueeze(0).expand(self.T, *x.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 1, 28, 28]`` -> firing rates ``[N, 10]``."""
        return self.forward_spikes(x).mean(0)

    def spiking_encoder(self) -> nn.Sequential:
        """The first {Conv2d-BatchNorm2d-IFNode} block, which turns the analog image into spikes."""
        return self.conv_fc[0:3]
