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

from ..neuron import MemoryModule

_NUMBA_KERNEL = None


def _numba_if_kernel():
    """The fused multi-step IF loop compiled by numba (None when numba is not installed).

    One pass per element: read x (or the single static frame), keep v in a register, write the spike.
    """
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is None:
        try:
            import numba
        except ImportError:
            _NUMBA_KERNEL = False
            return None

        @numba.njit(parallel=True, cache=True, nogil=True)
        def if_kernel(x, steps, static, v, count, theta, emit, signed, out):  # pragma: no cover - compiled
            # Tiles of the neuron axis stay in L1 while the tile walks through time; the inner loop runs
            # over contiguous memory for every step.
            size = v.shape[0]
            tile = 1024
            for b in numba.prange((size + tile - 1) // tile):
                lo = b * tile
                hi = min(lo + tile, size)
                for t in range(steps):
                    row = 0 if static else t
                    for m in range(lo, hi):
                        th = theta[m]
                        vm = v[m] + x[row, m]
                        s = 0.0
                        if vm >= th:
                            s = 1.0
                        elif signed and vm < 0.0 and count[m] > 0.0:
                            s = -1.0
                        vm -= s * th
                        v[m] = vm
                        if signed:
                            count[m] += s
                        out[t, m] = s * th if emit else s

        _NUMBA_KERNEL = if_kernel
    return _NUMBA_KERNEL or None

__all__ = [
    "VoltageScaler",
    "ConversionIFNode",
    "IFActivation",
    "SpikingMaxPool",
    "MembraneReadout",
    "ChannelAffine",
    "TimeBroadcast",
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


class ConversionIFNode(MemoryModule):
    r"""Integrate-and-fire neuron with soft reset and the low-latency options used for conversion.

    Charge and fire (threshold :math:`\theta`, soft reset, i.e. subtract :math:`\theta` on a spike):

    .. math::
        v_t = v_{t-1} + x_t,\qquad s_t = \mathbb{1}[v_t \ge \theta],\qquad v_t \leftarrow v_t - \theta s_t

    ``v_threshold`` is a float or a tensor broadcasting against one step of the input (one threshold per
    channel). With ``emit_threshold=True`` a spike is emitted with amplitude :math:`\theta` instead of 1,
    which is ``VoltageScaler(1/theta) -> IF(threshold 1) -> VoltageScaler(theta)`` fused into one pass.

    Options:

    * ``half_threshold`` starts the membrane at :math:`\theta/2` instead of 0, so the spike count after
      ``t`` steps rounds the accumulated input instead of flooring it (halves the worst-case error).
    * ``signed`` allows a *negative* spike :math:`s_t=-1` (and :math:`v_t \mathrel{+}= \theta`) when
      :math:`v_t < 0` and the neuron has a positive net spike count. The net count then tracks
      :math:`\mathrm{clip}(\lfloor S_t/\theta + v_0/\theta \rfloor, 0, t)` of the accumulated input
      :math:`S_t`, which removes the over-firing that happens when a neuron fires early and later receives
      net negative input.

    With neither option this is the standard soft-reset IF neuron (SpikingJelly's ``IFNode(v_reset=None)``).
    State: ``v`` (membrane) and, with ``signed``, ``count``; cleared by ``reset()``.

    ``backend='auto'`` runs the time loop as one fused numba kernel when numba is installed and the input is a
    float32 CPU tensor that needs no gradient (conversion is inference), else as in-place torch ops;
    ``'torch'`` / ``'numba'`` force one.
    """

    def __init__(self, v_threshold: float | torch.Tensor = 1.0, half_threshold: bool = False,
                 signed: bool = False, emit_threshold: bool = False, step_mode: str = "s", backend: str = "auto"):
        super().__init__(step_mode)
        if backend not in ("auto", "torch", "numba"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'numba', got {backend!r}")
        self.backend = backend
        threshold = torch.as_tensor(v_threshold, dtype=torch.float32).clone()
        if not bool((threshold > 0).all()):
            raise ValueError(f"v_threshold must be > 0, got {v_threshold!r}")
        self.register_buffer("v_threshold", threshold)
        self.half_threshold = bool(half_threshold)
        self.signed = bool(signed)
        self.emit_threshold = bool(emit_threshold)
        self.register_memory("v", None)
        self.register_memory("count", None)

    def _init_state(self, x: torch.Tensor) -> None:
        v0 = 0.5 * self.v_threshold if self.half_threshold else torch.zeros_like(self.v_threshold)
        self.v = torch.empty_like(x, memory_format=torch.contiguous_format).copy_(v0.to(x.dtype).expand_as(x))
        self.count = torch.zeros_like(x) if self.signed else None

    def _step(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """One step, written into ``out``; in-place ops keep it to a few passes over memory."""
        v, theta = self.v, self.v_threshold
        v.add_(x)
        amplitude = theta if self.emit_threshold else torch.ones_like(theta)
        torch.mul(torch.ge(v, theta), amplitude, out=out)
        if self.signed:
            negative = torch.lt(v, 0) & (self.count > 0)
            out.sub_(negative * amplitude)
            self.count.add_(torch.sign(out))
        v.sub_(out if self.emit_threshold else out * theta)

    def _use_numba(self, x: torch.Tensor) -> bool:
        if self.backend == "torch" or x.device.type != "cpu" or x.dtype != torch.float32:
            return False
        if torch.is_grad_enabled() and x.requires_grad:
            return False
        kernel = _numba_if_kernel()
        if kernel is None and self.backend == "numba":
            raise ImportError("backend='numba' needs numba: pip install spikeforge[fast]")
        return kernel is not None

    def _run_numba(self, x_seq: torch.Tensor, steps: int, static: bool) -> torch.Tensor:
        frame = x_seq[0]
        out = torch.empty((steps, *frame.shape), dtype=frame.dtype)
        theta = self.v_threshold.to(frame.dtype).expand_as(frame).contiguous()
        count = self.count if self.signed else torch.zeros(1)
        _numba_if_kernel()(x_seq.reshape(x_seq.shape[0], -1).numpy(), steps, static, self.v.view(-1).numpy(),
                           count.view(-1).numpy(), theta.view(-1).numpy(), self.emit_threshold, self.signed,
                           out.view(steps, -1).numpy())
        return out

    def _run(self, x_seq: torch.Tensor, steps: int, static: bool) -> torch.Tensor:
        frame = x_seq[0]
        if self.v is None or self.v.shape != frame.shape:
            self._init_state(frame)
        if self._use_numba(frame):
            return self._run_numba(x_seq.contiguous(), steps, static)
        out = torch.empty((steps, *frame.shape), dtype=frame.dtype, device=frame.device)
        for t in range(steps):
            self._step(frame if static else x_seq[t], out[t])
        return out

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x.unsqueeze(0), 1, False)[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self._run(x_seq, x_seq.shape[0], False)

    def static_forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` steps of the same input ``x`` ``[N, ...]`` (direct coding) without repeating it in memory."""
        return self._run(x.unsqueeze(0), steps, True)

    def extra_repr(self) -> str:
        theta = (f"{self.v_threshold.item():.6g}" if self.v_threshold.numel() == 1
                 else f"<{tuple(self.v_threshold.shape)} channel-wise>")
        return (f"v_threshold={theta}, half_threshold={self.half_threshold}, signed={self.signed}, "
                f"emit_threshold={self.emit_threshold}, step_mode={self.step_mode}")


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
