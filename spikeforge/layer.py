"""Layers with a ``step_mode``, containers, and threshold-dependent batch normalisation.

In multi-step mode ('m') a stateless layer sees ``[T, N, ...]``: the time and batch dimensions are folded into
one, the layer runs once, and the result is unfolded (:func:`spikeforge.functional.seq_to_ann_forward`). In
single-step mode ('s') it is the plain ``torch.nn`` layer. ``Dropout`` draws one mask per sequence (it is kept
until :func:`~spikeforge.functional.reset_net`), so every time step drops the same units.

The STBP names are here too: ``tdLayer(layer, bn=None)`` and ``tdBatchNorm(num_features, alpha, v_th)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as torch_F

from . import functional as F
from .base import MemoryModule, StepModule


class StatelessStepModule(StepModule):
    """Mixin for a stateless ``torch.nn`` layer: 's' is the plain layer, 'm' folds T into the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return super().forward(x)
        if x.dim() < 2:
            raise ValueError(f"{type(self).__name__} in multi-step mode expects x_seq of shape [T, N, ...], "
                             f"got shape {tuple(x.shape)}")
        return F.seq_to_ann_forward(x, super().forward)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, step_mode={self.step_mode}"


def _step_layer(base: type[nn.Module]) -> type[nn.Module]:
    """A subclass of ``base`` that accepts ``step_mode`` as its last keyword argument."""

    def __init__(self, *args, step_mode: str = "s", **kwargs):
        base.__init__(self, *args, **kwargs)
        self.step_mode = step_mode

    cls = type(base.__name__, (StatelessStepModule, base), {"__init__": __init__, "__module__": __name__,
                                                   "__doc__": f"``torch.nn.{base.__name__}`` with ``step_mode``."})
    return cls


class Linear(StatelessStepModule, nn.Linear):
    """``torch.nn.Linear`` with ``step_mode``; in 'm' mode it runs on [T, N, F] directly (one matmul for all T)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, step_mode: str = "s", **kwargs):
        nn.Linear.__init__(self, in_features, out_features, bias, **kwargs)
        self.step_mode = step_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Linear.forward(self, x)


Conv1d = _step_layer(nn.Conv1d)
Conv2d = _step_layer(nn.Conv2d)
Conv3d = _step_layer(nn.Conv3d)
ConvTranspose2d = _step_layer(nn.ConvTranspose2d)


class _MaxPoolSavingIndices(torch.autograd.Function):
    """Max pooling whose backward keeps only the argmax indices (int32 when they fit), not the input.

    ``torch.nn.functional.max_pool*d`` saves its whole input for backward although the gradient only needs the
    indices: for a 2×2 pool of spikes that is 4 bytes per input element saved in vain. The gradient is the same
    scatter-add of the output gradient onto the argmax positions.
    """

    @staticmethod
    def forward(ctx, x, pool_fn, kwargs):
        out, indices = pool_fn(x, return_indices=True, **kwargs)
        plane = x[0, 0].numel()
        ctx.save_for_backward(indices.to(torch.int32) if plane < 2**31 else indices)
        ctx.input_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (indices,) = ctx.saved_tensors
        n, c = ctx.input_shape[:2]
        grad_in = grad_out.new_zeros(n, c, ctx.input_shape[2:].numel())
        grad_in.scatter_add_(2, indices.flatten(2).long(), grad_out.flatten(2))
        return grad_in.view(ctx.input_shape), None, None


def _memory_lean_max_pool(base: type[nn.Module], pool_fn, spatial_dims: int) -> type[nn.Module]:
    cls = _step_layer(base)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices or not (torch.is_grad_enabled() and x.requires_grad) or x.dim() != spatial_dims + 2:
            return base.forward(self, x)
        kwargs = dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                      dilation=self.dilation, ceil_mode=self.ceil_mode)
        return _MaxPoolSavingIndices.apply(x, pool_fn, kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return pool(self, x)
        return F.seq_to_ann_forward(x, lambda y: pool(self, y))

    cls.forward = forward
    cls.__doc__ = (f"``torch.nn.{base.__name__}`` with ``step_mode``; in training it saves only the argmax indices "
                   "for backward (not the input), with the same gradient.")
    return cls


MaxPool1d = _memory_lean_max_pool(nn.MaxPool1d, torch_F.max_pool1d, 1)
MaxPool2d = _memory_lean_max_pool(nn.MaxPool2d, torch_F.max_pool2d, 2)
MaxPool3d = _memory_lean_max_pool(nn.MaxPool3d, torch_F.max_pool3d, 3)
AvgPool1d = _step_layer(nn.AvgPool1d)
AvgPool2d = _step_layer(nn.AvgPool2d)
AvgPool3d = _step_layer(nn.AvgPool3d)
AdaptiveAvgPool1d = _step_layer(nn.AdaptiveAvgPool1d)
AdaptiveAvgPool2d = _step_layer(nn.AdaptiveAvgPool2d)
AdaptiveAvgPool3d = _step_layer(nn.AdaptiveAvgPool3d)
BatchNorm1d = _step_layer(nn.BatchNorm1d)
BatchNorm2d = _step_layer(nn.BatchNorm2d)
BatchNorm3d = _step_layer(nn.BatchNorm3d)
GroupNorm = _step_layer(nn.GroupNorm)
Upsample = _step_layer(nn.Upsample)


class Flatten(StatelessStepModule, nn.Flatten):
    """``torch.nn.Flatten`` with ``step_mode``; in 'm' mode it flattens each time step ([T, N, ...] → [T, N, F])."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1, step_mode: str = "s"):
        nn.Flatten.__init__(self, start_dim, end_dim)
        self.step_mode = step_mode


class Dropout(MemoryModule):
    """Dropout whose mask is drawn once per sequence and shared by all time steps (kept until reset)."""

    _mask_dims = 0  # leading per-sample dimensions of the mask that are kept (0: element-wise mask)

    def __init__(self, p: float = 0.5, step_mode: str = "s"):
        super().__init__(step_mode)
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p (the dropout probability) must be in [0, 1), got {p}")
        self.p = p
        self.register_memory("mask", None)

    def _mask_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(x.shape)

    def _mask_for(self, x_step: torch.Tensor) -> torch.Tensor:
        shape = self._mask_shape(x_step)
        if self.mask is None or tuple(self.mask.shape) != shape:
            keep = torch.full(shape, 1.0 - self.p, device=x_step.device)
            self.mask = torch.bernoulli(keep).div_(1.0 - self.p)
        return self.mask.to(x_step.dtype)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * self._mask_for(x)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x_seq
        return x_seq * self._mask_for(x_seq[0])

    def extra_repr(self) -> str:
        return f"p={self.p}, step_mode={self.step_mode}"


class Dropout2d(Dropout):
    """Channel dropout ([N, C, H, W] per step) with one mask per sequence."""

    def _mask_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.dim() != 4:
            raise ValueError(f"Dropout2d expects [N, C, H, W] per step, got shape {tuple(x.shape)}")
        return (x.shape[0], x.shape[1], 1, 1)


class SeqToANNContainer(nn.Sequential):
    """Runs stateless modules on [T, N, ...] by folding T into the batch (one call for all steps)."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return F.seq_to_ann_forward(x_seq, super().forward)


class MultiStepContainer(nn.Sequential):
    """Runs single-step modules on [T, N, ...] one time step at a time."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return F.multi_step_forward(x_seq, super().forward)


class _ThresholdDependentBatchNorm(nn.modules.batchnorm._BatchNorm):
    """tdBN (Zheng et al. 2021), SpikingJelly form: weight initialised to α·V_th; multi-step input only.

    Statistics are taken over time and batch (and space) jointly: [T, N, C, ...] is folded to [T·N, C, ...].
    """

    _expected_step_dims: tuple[int, ...] = ()

    def __init__(self, alpha: float, v_th: float, *args, step_mode: str = "m", **kwargs):
        super().__init__(*args, **kwargs)
        if step_mode != "m":
            raise ValueError("threshold-dependent BatchNorm works on whole sequences: step_mode must be 'm'")
        self.step_mode = step_mode
        self.alpha = float(alpha)
        self.v_th = F.check_threshold(v_th)
        if self.affine:
            nn.init.constant_(self.weight, self.alpha * self.v_th)

    def _check_input_dim(self, x):  # called by BatchNorm on the folded [T·N, C, ...] tensor
        if x.dim() not in self._expected_step_dims:
            raise ValueError(f"{type(self).__name__} got a folded input of shape {tuple(x.shape)}")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() - 1 not in self._expected_step_dims:
            raise ValueError(f"{type(self).__name__} expects x_seq [T, N, C, ...] with "
                             f"{[d + 1 for d in self._expected_step_dims]} dims, got shape {tuple(x_seq.shape)}")
        return F.seq_to_ann_forward(x_seq, super().forward)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, v_th={self.v_th}"


class ThresholdDependentBatchNorm1d(_ThresholdDependentBatchNorm):
    _expected_step_dims = (2, 3)

    def __init__(self, alpha: float, v_th: float, num_features: int, *args, **kwargs):
        super().__init__(alpha, v_th, num_features, *args, **kwargs)


class ThresholdDependentBatchNorm2d(_ThresholdDependentBatchNorm):
    _expected_step_dims = (4,)

    def __init__(self, alpha: float, v_th: float, num_features: int, *args, **kwargs):
        super().__init__(alpha, v_th, num_features, *args, **kwargs)


class tdBatchNorm(nn.BatchNorm2d):  # noqa: N801 - the STBP name
    """STBP's tdBN: y = γ·α·V_th·(x − μ)/√(σ² + ε) + β, μ and σ² over (T, N, H, W) jointly.

    The state_dict is a plain BatchNorm2d's (weight, bias, running_mean, running_var, num_batches_tracked),
    so STBP checkpoints load. Input is time-first [T, N, C, H, W] (or [T, N, C]); ``time_dim=-1`` accepts STBP's
    time-last layout [N, C, H, W, T]. The running variance uses the unbiased n/(n−1) correction, n = T·N·H·W.
    """

    def __init__(self, num_features: int, alpha: float = 1.0, v_th: float = 0.4, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True, track_running_stats: bool = True,
                 time_dim: int = 0):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.alpha = float(alpha)
        self.v_th = F.check_threshold(v_th)
        self.time_dim = int(time_dim)

    def _check_input_dim(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f"tdBatchNorm expects [T, N, C, H, W] or [T, N, C] input, got {x.dim() + 1} dims")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.movedim(self.time_dim, 0) if self.time_dim != 0 else x
        if x_seq.dim() not in (3, 5):
            raise ValueError(f"tdBatchNorm expects x of shape [T, N, C, H, W] or [T, N, C], got {tuple(x.shape)}")
        y = F.seq_to_ann_forward(x_seq, self._normalise)
        return y.movedim(0, self.time_dim) if self.time_dim != 0 else y

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training or not self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        scale = self.weight * (self.alpha * self.v_th) if self.affine else None
        return torch_F.batch_norm(x, self.running_mean, self.running_var, scale, self.bias, use_batch_stats,
                                  momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, v_th={self.v_th}"


class tdLayer(nn.Module):  # noqa: N801 - the STBP name
    """Apply a stateless ``layer`` (Conv2d, Linear, AvgPool2d, ...) to every time step, then ``bn`` if given.

    Time-first ([T, N, ...]); ``time_dim=-1`` accepts STBP's time-last tensors. The sub-modules are named
    ``layer`` and ``bn`` so STBP state_dict keys (``conv1_s.layer.weight``, ``conv1_s.bn.running_mean``) match.
    """

    def __init__(self, layer: nn.Module, bn: nn.Module | None = None, time_dim: int = 0):
        super().__init__()
        self.layer = layer
        self.bn = bn
        self.time_dim = int(time_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.movedim(self.time_dim, 0) if self.time_dim != 0 else x
        y = F.seq_to_ann_forward(x_seq, self.layer)
        if self.time_dim != 0:
            y = y.movedim(0, self.time_dim)
        return self.bn(y) if self.bn is not None else y


__all__ = [
    "StatelessStepModule", "Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "MaxPool1d", "MaxPool2d",
    "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "Upsample", "Flatten",
    "Dropout", "Dropout2d", "SeqToANNContainer", "MultiStepContainer", "ThresholdDependentBatchNorm1d",
    "ThresholdDependentBatchNorm2d", "tdBatchNorm", "tdLayer",
]
