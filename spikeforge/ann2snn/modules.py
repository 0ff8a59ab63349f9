"""Building blocks of a converted network.

Inside a converted graph every tensor is kept in *ANN units*: an activation layer turns its analog input
``z_t`` into spikes and immediately multiplies them back by its scale ``lambda``, so the time average of what
flows along an edge estimates the ANN activation on that edge. Stateless layers (Conv, Linear, pooling,
additions, concatenation) therefore stay untouched, which is what makes residual and concatenating graphs work.

Multi-step execution uses a *merged* layout: the whole graph runs on ``[T*N, ...]`` (so convolutions see one
large batch), and only the stateful blocks defined here unfold it to ``[T, N, ...]`` to walk through time.
``ConvertedSNN`` tells them ``T`` before each call through their ``seq_len`` attribute.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .. import functional as SF
from ..base import MemoryModule
from ..neuron.conversion import ConversionIFNode  # the neuron lives in the neuron package

__all__ = [
    "VoltageScaler",
    "ConversionIFNode",
    "IFActivation",
    "SpikingMaxPool",
    "MembraneReadout",
    "ChannelAffine",
    "TimeBroadcast",
    "TiledAvgPool2d",
]


class VoltageScaler(nn.Module):
    """Multiplies its input by a fixed scale: ``y = scale * x``.

    ``scale`` is a float, or a tensor already shaped to broadcast against the activation (e.g. ``[1, C, 1, 1]``
    for channel-wise normalisation). Works identically in both step modes because it is element-wise.
    """

    def __init__(self, scale: float | torch.Tensor = 1.0):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        if self.scale.numel() == 1:
            return f"scale={self.scale.item():.6g}"
        return f"scale=<{tuple(self.scale.shape)} channel-wise>"


class _SeqBlock(MemoryModule):
    """Base of the stateful blocks: folds ``[T*N, ...]`` <-> ``[T, N, ...]`` in multi-step mode."""

    def __init__(self, step_mode: str = "s"):
        super().__init__(step_mode)
        self.seq_len: int | None = None

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        if self.seq_len is None or x.shape[0] % self.seq_len:
            raise RuntimeError(
                f"{type(self).__name__} in multi-step mode got a merged batch of {x.shape[0]} with "
                f"seq_len={self.seq_len}; call it through ConvertedSNN, which sets seq_len")
        return x.reshape(self.seq_len, x.shape[0] // self.seq_len, *x.shape[1:])


class IFActivation(_SeqBlock):
    r"""A converted ReLU: ``VoltageScaler(1/lambda) -> IF neuron (theta = 1, soft reset) -> VoltageScaler(lambda)``.

    For a constant input ``z`` the time-averaged output tends to :math:`\lambda\,\mathrm{clip}(z/\lambda, 0, 1)
    = \mathrm{clip}(z, 0, \lambda)`, the ANN's ReLU clipped at the calibrated scale ``lambda``.

    ``neuron`` is either a threshold-1 neuron with ``step_mode`` and ``reset()`` (e.g. ``IFNode(v_reset=None)``),
    placed between the two scalers, or a :class:`ConversionIFNode` with ``v_threshold=lambda`` and
    ``emit_threshold=True``, which computes the same thing without the scalers (fewer passes over memory).
    """

    def __init__(self, scale: float | torch.Tensor, neuron: nn.Module, step_mode: str = "s"):
        super().__init__(step_mode)
        scale = torch.as_tensor(scale, dtype=torch.float32)
        self.fused = isinstance(neuron, ConversionIFNode) and neuron.emit_threshold
        if self.fused:
            if not torch.equal(neuron.v_threshold, scale):
                raise ValueError("a fused ConversionIFNode must have v_threshold equal to scale")
            self.scale_in = self.scale_out = None
        else:
            self.scale_in = VoltageScaler(1.0 / scale)
            self.scale_out = VoltageScaler(scale)
        self.neuron = neuron

    @property
    def scale(self) -> torch.Tensor:
        """lambda: the activation value that makes the neuron fire at every step."""
        return self.neuron.v_threshold if self.fused else self.scale_out.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            x = self.scale_in(x)
        if self.step_mode == "s":
            if self.neuron.step_mode != "s":
                self.neuron.step_mode = "s"
            spikes = self.neuron(x)
        else:
            if self.neuron.step_mode != "m":
                self.neuron.step_mode = "m"
            spikes = self.neuron(self._unfold(x)).flatten(0, 1)
        return spikes if self.fused else self.scale_out(spikes)

    def static_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``seq_len`` steps of the time-invariant input ``x`` ``[N, ...]``; returns the merged ``[T*N, ...]``."""
        if not self.fused:
            x = self.scale_in(x)
        if hasattr(self.neuron, "static_forward"):
            spikes = self.neuron.static_forward(x, self.seq_len)
        else:
            self.neuron.step_mode = "m"
            spikes = self.neuron(x.unsqueeze(0).expand(self.seq_len, *x.shape))
        spikes = spikes.flatten(0, 1)
        return spikes if self.fused else self.scale_out(spikes)


class _StaticEntry(nn.Module):
    """Calls ``block.static_forward``: where a time-invariant tensor enters an IF layer (static-input graph)."""

    def __init__(self, block: IFActivation):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.static_forward(x)


class SpikingMaxPool(_SeqBlock):
    r"""Max-pooling that is exact on accumulated inputs.

    The block keeps the running sum :math:`A_t = \sum_{\tau \le t} x_\tau` of its input and emits the
    increment of the pooled running sum:

    .. math:: y_t = \mathrm{maxpool}(A_t) - \mathrm{maxpool}(A_{t-1})

    so :math:`\sum_{\tau\le t} y_\tau = \mathrm{maxpool}(A_t)` at *every* step: the output rate equals the
    max-pool of the input rates exactly (no rate-limit approximation beyond the inputs' own). When the inputs
    are scaled spikes :math:`\lambda s` (s in {0, 1}) the output is again a scaled spike, because each window's
    running maximum grows by 0 or :math:`\lambda` per step; for analog inputs it is analog.
    ``pool`` is the original pooling module (``nn.MaxPool1d/2d/3d`` or ``nn.AdaptiveMaxPool*``).
    """

    def __init__(self, pool: nn.Module, step_mode: str = "s"):
        super().__init__(step_mode)
        self.pool = pool
        self.register_memory("acc", None)
        self.register_memory("pooled", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            acc = x if self.acc is None else self.acc + x
            pooled = self.pool(acc)
            out = pooled if self.pooled is None else pooled - self.pooled
            self.acc, self.pooled = acc, pooled
            return out
        x_seq = self._unfold(x)
        acc = torch.cumsum(x_seq, dim=0)
        if self.acc is not None:
            acc = acc + self.acc
        pooled = self.pool(acc.flatten(0, 1))
        pooled = pooled.reshape(x_seq.shape[0], -1, *pooled.shape[1:])
        previous = torch.zeros_like(pooled[:1]) if self.pooled is None else self.pooled.unsqueeze(0)
        out = pooled - torch.cat([previous, pooled[:-1]])
        self.acc, self.pooled = acc[-1], pooled[-1]
        return out.flatten(0, 1)


class MembraneReadout(_SeqBlock):
    r"""Analog read-out replacing the IF neurons of the output layer (``readout='membrane'``).

    A spiking output layer can only report counts in {0..T}, which ties classes at small T. This block
    instead emits the increment of the clipped accumulated input,

    .. math:: y_t = c(A_t, t) - c(A_{t-1}, t-1),\qquad c(A, t) = \mathrm{clip}(A, 0, t\,a)

    (``a`` the activation's clip value, infinity for plain ReLU), so the output sum after ``t`` steps is
    ``t * clip(mean input, 0, a)`` exactly: spike count plus residual membrane, without quantisation.
    """

    def __init__(self, clip: float | None = None, step_mode: str = "s"):
        super().__init__(step_mode)
        self.clip = None if clip is None else float(clip)
        self.register_memory("acc", None)
        self.register_memory("emitted", None)
        self.register_memory("t", 0)

    def _clipped(self, acc: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if self.clip is None:
            return acc.clamp_min(0)
        return torch.minimum(acc.clamp_min(0), t * self.clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.unsqueeze(0) if self.step_mode == "s" else self._unfold(x)
        acc = torch.cumsum(x_seq, dim=0)
        if self.acc is not None:
            acc = acc + self.acc
        steps = self.t + torch.arange(1, x_seq.shape[0] + 1, dtype=x.dtype, device=x.device)
        emitted = self._clipped(acc, steps.view(-1, *([1] * (x.dim()))))
        previous = torch.zeros_like(emitted[:1]) if self.emitted is None else self.emitted.unsqueeze(0)
        out = emitted - torch.cat([previous, emitted[:-1]])
        self.acc, self.emitted, self.t = acc[-1], emitted[-1], self.t + x_seq.shape[0]
        return out[0] if self.step_mode == "s" else out.flatten(0, 1)


class ChannelAffine(nn.Module):
    """A BatchNorm in eval mode that could not be folded: ``y = weight[c] * x + bias[c]`` along dim 1."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


class TimeBroadcast(_SeqBlock):
    """Repeats a time-invariant ``[N, ...]`` tensor into the merged ``[T*N, ...]`` layout (static-input path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return x
        return x.unsqueeze(0).expand(self.seq_len, *x.shape).flatten(0, 1)


class TiledAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` with non-overlapping windows (kernel = stride, no padding) through
    :func:`spikeforge.functional.avg_pool2d_tiles`: each window added row by row from zero and divided by its size,
    as ATen does, so the outputs are the same floats.

    ATen pools a contiguous NCHW float tensor on the CPU through a generic per-window loop, and a converted network
    pools spikes at every step: for the ann2snn tutorial CNN's first pooling (100 x 32 x 26 x 26) ATen took 3.3-4.2
    ms, the fused loop 0.28 ms. Small inputs, other devices, layouts and autograd use ``nn.AvgPool2d`` as it is.
    The converter puts this layer in place of every plain ``nn.AvgPool2d`` that qualifies (:meth:`qualifies`).
    """

    MIN_ELEMENTS = 1 << 14

    @staticmethod
    def qualifies(pool: nn.Module) -> bool:
        if type(pool) is not nn.AvgPool2d:
            return False
        pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
        stride = pool.stride if pool.stride is not None else pool.kernel_size
        return (pair(pool.kernel_size) == pair(stride) and pair(pool.padding) == (0, 0) and not pool.ceil_mode
                and pool.divisor_override is None)

    @classmethod
    def from_pool(cls, pool: nn.AvgPool2d) -> TiledAvgPool2d:
        tiled = cls(pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, pool.count_include_pad,
                    pool.divisor_override)
        tiled.train(pool.training)
        return tiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() < self.MIN_ELEMENTS:
            return super().forward(x)
        return SF.avg_pool2d_tiles(x, self.kernel_size)  # itself hands other devices, layouts, autograd to ATen
