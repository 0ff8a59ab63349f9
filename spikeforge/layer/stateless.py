"""Stateless layers with a ``step_mode`` (SpikingJelly's ``layer`` wrappers of ``torch.nn``).

In single-step mode ('s') each layer is the plain ``torch.nn`` layer. In multi-step mode ('m') it sees
``[T, N, ...]``: time and batch are folded into one dimension, the layer runs once, and the result is unfolded
(:func:`fold_time`). Every constructor takes ``torch.nn``'s positional arguments in ``torch.nn``'s order followed
by ``step_mode``, as SpikingJelly 2.0 does, so ``layer.Conv2d(1, 2, 3, 1, 0, 1, 1, True, 'zeros', 'm')`` is a
multi-step convolution; ``device``/``dtype`` stay keyword-only.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn
import torch.nn.functional as torch_F

from ..base import StepModule


def fold_time(x_seq, fn):
    """Fold [T, N, ...] (or a tuple of such tensors) into [T·N, ...], call ``fn`` once, and unfold its output(s).

    Tuples in and out are supported (max pooling with ``return_indices``, max unpooling with indices).
    """
    items = x_seq if isinstance(x_seq, tuple) else (x_seq,)
    lead = tuple(items[0].shape[:2])
    if items[0].dim() < 2:
        raise ValueError(f"multi-step input must have shape [T, N, ...], got shape {tuple(items[0].shape)}")
    for item in items[1:]:
        if tuple(item.shape[:2]) != lead:
            raise ValueError(f"all multi-step inputs must share [T, N] = {list(lead)}, got shape {tuple(item.shape)}")
    y = fn(*(item.flatten(0, 1) for item in items))
    if isinstance(y, tuple):
        return tuple(v.unflatten(0, lead) for v in y)
    return y.unflatten(0, lead)


class StatelessStepModule(StepModule):
    """Mixin for a stateless ``torch.nn`` layer: 's' is the plain layer, 'm' folds T into the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return super().forward(x)
        if x.dim() < 2:
            raise ValueError(f"{type(self).__name__} in multi-step mode expects x_seq of shape [T, N, ...], "
                             f"got shape {tuple(x.shape)}")
        return fold_time(x, super().forward)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, step_mode={self.step_mode}"


_KEYWORD_ONLY_TORCH = ("device", "dtype")


def _step_signature(base: type[nn.Module]) -> tuple[list[str], inspect.Signature]:
    """``base``'s positional parameters (without device/dtype), then ``step_mode``, then keyword-only ones."""
    params = list(inspect.signature(base.__init__).parameters.values())
    positional = [p for p in params[1:] if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in _KEYWORD_ONLY_TORCH]
    keyword = [p.replace(kind=p.KEYWORD_ONLY) for p in params[1:]
               if p.kind is p.KEYWORD_ONLY or p.name in _KEYWORD_ONLY_TORCH]
    step = inspect.Parameter("step_mode", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="s", annotation=str)
    sig = inspect.Signature([params[0], *positional, step, *keyword], return_annotation=None)
    return [p.name for p in positional], sig


def _step_layer(base: type[nn.Module]) -> type[nn.Module]:
    """A subclass of ``base`` whose constructor is ``base``'s positional arguments followed by ``step_mode``."""
    names, sig = _step_signature(base)

    def __init__(self, *args, **kwargs):
        if len(args) > len(names) + 1:
            raise TypeError(f"{base.__name__}() takes at most {len(names) + 1} positional arguments "
                            f"({', '.join(names)}, step_mode), got {len(args)}")
        if len(args) == len(names) + 1:
            if "step_mode" in kwargs:
                raise TypeError(f"{base.__name__}() got step_mode both by position and by keyword")
            *args, kwargs["step_mode"] = args
        step_mode = kwargs.pop("step_mode", "s")
        base.__init__(self, *args, **kwargs)
        self.step_mode = step_mode

    __init__.__signature__ = sig
    doc = f"``torch.nn.{base.__name__}`` with ``step_mode`` (its last positional argument)."
    return type(base.__name__, (StatelessStepModule, base), {"__init__": __init__, "__module__": __name__,
                                                           "__doc__": doc})


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
ConvTranspose1d = _step_layer(nn.ConvTranspose1d)
ConvTranspose2d = _step_layer(nn.ConvTranspose2d)
ConvTranspose3d = _step_layer(nn.ConvTranspose3d)


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
        return fold_time(x, lambda y: pool(self, y))

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


def _max_unpool(base: type[nn.Module]) -> type[nn.Module]:
    cls = _step_layer(base)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size=None) -> torch.Tensor:
        if self.step_mode == "s":
            return base.forward(self, x, indices, output_size)
        if indices.shape != x.shape:
            raise ValueError(f"{base.__name__}: indices must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(indices.shape)}")
        if output_size is not None and len(output_size) == x.dim():  # a [T, N, C, ...] size: drop T
            output_size = list(output_size)[1:]
        return fold_time((x, indices), lambda v, i: base.forward(self, v, i, output_size))

    cls.forward = forward
    cls.__doc__ = (f"``torch.nn.{base.__name__}`` with ``step_mode``; ``forward(x, indices, output_size=None)``, "
                   "in 'm' mode x and indices are [T, N, C, ...] (the output of a max pool with return_indices).")
    return cls


MaxUnpool1d = _max_unpool(nn.MaxUnpool1d)
MaxUnpool2d = _max_unpool(nn.MaxUnpool2d)
MaxUnpool3d = _max_unpool(nn.MaxUnpool3d)


class Flatten(StatelessStepModule, nn.Flatten):
    """``torch.nn.Flatten`` with ``step_mode``; in 'm' mode it flattens each time step ([T, N, ...] → [T, N, F])."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1, step_mode: str = "s"):
        nn.Flatten.__init__(self, start_dim, end_dim)
        self.step_mode = step_mode


def _standardised(weight: torch.Tensor, gain: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Ŵ = gain · (W − mean) / sqrt(var · fan_in + eps), mean and unbiased var over each output unit's fan-in."""
    dims = tuple(range(1, weight.dim()))
    fan_in = weight[0].numel()
    mean = weight.mean(dim=dims, keepdim=True)
    var = weight.var(dim=dims, keepdim=True)
    w = (weight - mean) / (var * fan_in + eps) ** 0.5
    return w * gain if gain is not None else w


class WSConv2d(Conv2d):
    """Conv2d with weight standardisation (Brock et al. 2021, as in SpikingJelly's ``WSConv2d``).

    Ŵ = g · (W − μ) / √(σ²·fan_in + ε), μ and unbiased σ² over (C_in, k_h, k_w) per output channel, g a learnable
    gain of shape [C_out, 1, 1, 1] (``gain=False``: none). ``step_mode`` comes before ``gain`` and ``eps``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", step_mode: str = "s",
                 gain: bool = True, eps: float = 1e-4) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, step_mode)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1)) if gain else None
        self.eps = eps

    def get_weight(self) -> torch.Tensor:
        return _standardised(self.weight, self.gain, self.eps)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.get_weight(), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self._conv(x)
        if x.dim() != 5:
            raise ValueError(f"WSConv2d in multi-step mode expects [T, N, C, H, W], got shape {tuple(x.shape)}")
        return fold_time(x, self._conv)


class WSLinear(Linear):
    """Linear with weight standardisation: Ŵ = g · (W − μ) / √(σ²·in_features + ε) per output unit, g [out, 1]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, step_mode: str = "s",
                 gain: bool = True, eps: float = 1e-4) -> None:
        super().__init__(in_features, out_features, bias, step_mode)
        self.gain = nn.Parameter(torch.ones(self.out_features, 1)) if gain else None
        self.eps = eps

    def get_weight(self) -> torch.Tensor:
        return _standardised(self.weight, self.gain, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch_F.linear(x, self.get_weight(), self.bias)


__all__ = [
    "fold_time", "StatelessStepModule", "Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d",
    "ConvTranspose2d", "ConvTranspose3d", "MaxPool1d", "MaxPool2d", "MaxPool3d", "MaxUnpool1d", "MaxUnpool2d",
    "MaxUnpool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "Upsample", "Flatten",
    "WSConv2d", "WSLinear",
]
