"""Fake quantisation of Conv/Linear weights: symmetric, signed, per tensor or per output channel.

The STBP reference (``main.py``: ``quantize_tensor`` + ``quantize_layers``) quantises the ``.weight`` of every
Conv2d and Linear from a float master copy::

    s   = (2**(b-1) - 1) / W.abs().max()
    y   = s * W;  y = (y.round() - y).detach() + y      # straight-through estimator
    W_q = y / s                                          # = round(s*W) / s

Codes lie in [−(2^(b−1)−1), 2^(b−1)−1] (no zero point; −2^(b−1) is never used), ``round`` is half to even.
:func:`quantize_tensor` is exactly that expression (per channel: one ``max`` per output channel).

:func:`prepare_qat` turns a model's Conv/Linear layers into fake-quant layers *in place*: the class of each
layer object becomes a subclass that computes its forward with ``W_q`` while the parameter ``weight`` stays the
float master copy (never rounded in place), so the optimizer updates the float weights through the
straight-through estimator, ``state_dict`` keys do not change, and a layer registered under two names (STBP's
``conv1`` / ``conv1_s.layer``) stays one object. The scale is computed from the detached weights at every
forward (the estimator's gradient is that of ``W`` itself, as in the reference apart from the reference's
second-order term through ``max``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["quantize_tensor", "weight_scale", "weight_codes", "FakeQuantConfig", "FakeQuantMixin",
           "prepare_qat", "is_fake_quant", "quantizable_layers", "check_bits"]

_QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def check_bits(bits, name: str = "bits") -> int:
    """An integer number of bits in [2, 16]."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{name} must be an integer number of bits, got {bits!r}")
    if not 2 <= bits <= 16:
        raise ValueError(f"{name} must be between 2 and 16, got {bits}")
    return bits


def _abs_max(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    if per_channel:
        return w.abs().flatten(1).amax(1).view(-1, *([1] * (w.dim() - 1)))
    return w.abs().max()


def weight_scale(w: torch.Tensor, bits: int, per_channel: bool = False) -> torch.Tensor:
    """``s = (2^(b−1) − 1) / max|W|`` (0-d, or ``[C_out, 1, ...]`` per channel), float like ``w``, detached.

    Written as the reference writes it (a Python int divided by a tensor), so it is the same float. A channel
    (or tensor) of zeros gets the scale 1 instead of infinity.
    """
    m = _abs_max(w.detach(), per_channel)
    s = (2 ** (check_bits(bits) - 1) - 1) / m
    return torch.where(m > 0, s, torch.ones_like(s))


def weight_codes(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``round(s·W)`` with the straight-through estimator (the value is integral, the gradient is ``s``)."""
    y = scale * w
    return (y.round() - y).detach() + y


def quantize_tensor(w: torch.Tensor, bits: int, per_channel: bool = False) -> torch.Tensor:
    """The reference's fake quantisation ``round(s·W)/s``, ``s = (2^(b−1)−1)/max|W|``, with the STE.

    Per tensor (the reference's ``channel_level=False``) it equals the reference bit for bit, including its one
    difference from ``torch.round(s*W)/s``: codes that round to −0.0 come out as +0.0.
    """
    s = weight_scale(w, bits, per_channel)
    return weight_codes(w, s) / s


class FakeQuantConfig:
    """How a layer's weight is quantised: ``bits``, ``per_channel``."""

    def __init__(self, bits: int, per_channel: bool = False):
        self.bits = check_bits(bits)
        self.per_channel = bool(per_channel)

    def __repr__(self) -> str:
        return f"FakeQuantConfig(bits={self.bits}, per_channel={self.per_channel})"


class FakeQuantMixin:
    """Mixed into a Conv/Linear layer's class by :func:`prepare_qat`: the forward uses the quantised weight."""

    fake_quant: FakeQuantConfig

    def quantized_weight(self) -> torch.Tensor:
        """``W_q`` (differentiable with respect to the float ``weight`` through the STE)."""
        return quantize_tensor(self.weight, self.fake_quant.bits, self.fake_quant.per_channel)

    def weight_scale(self) -> torch.Tensor:
        return weight_scale(self.weight, self.fake_quant.bits, self.fake_quant.per_channel)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.fake_quant.bits}, per_channel={self.fake_quant.per_channel}"


class _FakeQuantConv(FakeQuantMixin):
    def _conv_forward(self, input, weight, bias):
        return super()._conv_forward(input, self.quantized_weight(), bias)


class _FakeQuantLinear(FakeQuantMixin):
    def forward(self, input):
        return F.linear(input, self.quantized_weight(), self.bias)


_CLASS_CACHE: dict[tuple[type, type], type] = {}


def swap_class(module: nn.Module, mixin: type, prefix: str) -> None:
    """Give ``module`` the class ``(mixin, type(module))`` (cached), keeping the object and its parameters."""
    base = type(module)
    key = (mixin, base)
    if key not in _CLASS_CACHE:
        _CLASS_CACHE[key] = type(f"{prefix}{base.__name__}", (mixin, base), {"__module__": __name__})
    module.__class__ = _CLASS_CACHE[key]


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv1d/2d/3d and Linear layers of ``model`` (each object once, under its first name)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QUANTIZABLE)]


def is_fake_quant(module: nn.Module) -> bool:
    return isinstance(module, FakeQuantMixin)


def prepare_qat(model: nn.Module, bits: int = 8, per_channel: bool = False, *, integer: bool = False,
                **integer_options) -> nn.Module:
    """Prepare ``model`` for quantisation-aware training, in place, and return it.

    ``integer=False`` (the reference's scheme, any model): every Conv/Linear computes with ``bits``-bit
    fake-quantised weights (float master copy + STE); biases, BatchNorm and neurons stay float.

    ``integer=True`` (models with ``integer_graph()``, e.g. the STBP zoo): the whole network becomes the
    integer network's exact fake-quant twin; see :func:`spikeforge.quantize.integer.prepare_integer` for
    ``integer_options`` (``profile``, ``input_range``, ``frac_bits``, ``fold_bn`` ...).
    """
    check_bits(bits)
    if integer:
        from .integer import prepare_integer

        return prepare_integer(model, bits=bits, per_channel=per_channel, **integer_options)
    if integer_options:
        raise TypeError(f"{', '.join(sorted(integer_options))}: options of integer=True")
    layers = quantizable_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv/Linear layer to quantise")
    for name, module in layers:
        if is_fake_quant(module):
            raise ValueError(f"layer {name!r} is already fake-quantised (prepare_qat was called before)")
    for _, module in layers:
        mixin = _FakeQuantLinear if isinstance(module, nn.Linear) else _FakeQuantConv
        swap_class(module, mixin, "FakeQuant")
        module.fake_quant = FakeQuantConfig(bits, per_channel)
    return model
