"""Surrogate gradient functions.

A spiking neuron fires with the Heaviside step Θ(x) = 1[x ≥ 0], whose derivative is zero almost everywhere.
Surrogate-gradient training keeps Θ in the forward pass and uses the derivative g'(x) of a smooth stand-in g
in the backward pass. Each class below is one choice of g; ``spiking=False`` returns g(x) itself.

Every surrogate has a small integer ``kernel_id`` and two float parameters ``(p0, p1)``: the fused neuron
kernels (``spikeforge.kernels``) evaluate g' from these three numbers, so the formulas here are the single
reference the kernels are tested against (:func:`derivative`).

=====================  ==========================================================  =========================
class (default)        g'(x)                                                       g(x)
=====================  ==========================================================  =========================
Sigmoid(α=4)           α·σ(αx)·(1 − σ(αx))                                         σ(αx)
ATan(α=2)              (α/2) / (1 + (π/2·αx)²)                                     arctan(π/2·αx)/π + 1/2
PiecewiseQuadratic(1)  α − α²|x| for |x| ≤ 1/α, else 0                             piecewise quadratic
PiecewiseExp(α=1)      (α/2)·exp(−α|x|)                                            ½e^{αx} (x<0), 1−½e^{−αx}
SoftSign(α=2)          α / (2(1 + α|x|)²)                                          (softsign(αx) + 1)/2
SuperSpike(α=1)        α / (1 + |x|)²                                              αx/(1 + |x|) + 1/2
Erf(α=2)               (α/√π)·exp(−α²x²)                                           erfc(−αx)/2
Rect(α=1)              α·1[|x| < 0.5/α]                                            clamp(αx + ½, 0, 1)
PiecewiseLeakyReLU     1/(2w) for |x| < w, else c  (w=1, c=0.01)                   leaky piecewise linear
STBPRectangle(a=0.5)   (1/(2a))·1[|x| < a]  (the STBP box, centred at threshold)    Rect with α = 1/(2a)
=====================  ==========================================================  =========================
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spec import DEFAULT_SURROGATE, SurrogateKind, SurrogateSpec

# The kernel ids, one enum (spikeforge.spec.SurrogateKind); the names stay importable from here.
(SIGMOID, ATAN, PIECEWISE_QUADRATIC, PIECEWISE_EXP, SOFT_SIGN, SUPER_SPIKE, ERF, RECT,
 PIECEWISE_LEAKY_RELU) = SurrogateKind


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """Θ(x) = 1 where x ≥ 0 else 0, in x's dtype."""
    return (x >= 0).to(x.dtype)


def derivative(kernel_id: int, x: torch.Tensor, p0: float, p1: float = 0.0) -> torch.Tensor:
    """g'(x) of surrogate ``kernel_id`` with parameters ``(p0, p1)`` — the reference for every kernel."""
    if kernel_id == SIGMOID:
        s = torch.sigmoid(p0 * x)
        return p0 * s * (1.0 - s)
    if kernel_id == ATAN:
        return (p0 / 2.0) / (1.0 + (math.pi / 2.0 * p0 * x).square())
    if kernel_id == PIECEWISE_QUADRATIC:
        return torch.where(x.abs() > 1.0 / p0, torch.zeros_like(x), p0 - p0 * p0 * x.abs())
    if kernel_id == PIECEWISE_EXP:
        return (p0 / 2.0) * torch.exp(-p0 * x.abs())
    if kernel_id == SOFT_SIGN:
        return p0 / (2.0 * (1.0 + p0 * x.abs()).square())
    if kernel_id == SUPER_SPIKE:
        return p0 / (1.0 + x.abs()).square()
    if kernel_id == ERF:
        return (p0 / math.sqrt(math.pi)) * torch.exp(-(p0 * x).square())
    if kernel_id == RECT:
        return p0 * (x.abs() < 0.5 / p0).to(x.dtype)
    if kernel_id == PIECEWISE_LEAKY_RELU:
        return torch.where(x.abs() < p0, torch.full_like(x, 1.0 / (2.0 * p0)), torch.full_like(x, p1))
    raise ValueError(f"kernel_id={kernel_id} is not a known surrogate id (0..{PIECEWISE_LEAKY_RELU})")


def primitive(kernel_id: int, x: torch.Tensor, p0: float, p1: float = 0.0) -> torch.Tensor:
    """g(x) of surrogate ``kernel_id``: the smooth function whose derivative :func:`derivative` returns."""
    if kernel_id == SIGMOID:
        return torch.sigmoid(p0 * x)
    if kernel_id == ATAN:
        return torch.atan(math.pi / 2.0 * p0 * x) / math.pi + 0.5
    if kernel_id == PIECEWISE_QUADRATIC:
        inside = -(p0 * p0) / 2.0 * x * x.abs() + p0 * x + 0.5
        return torch.where(x > 1.0 / p0, torch.ones_like(x), torch.where(x < -1.0 / p0, torch.zeros_like(x), inside))
    if kernel_id == PIECEWISE_EXP:
        half_exp = 0.5 * torch.exp(-p0 * x.abs())
        return torch.where(x < 0, half_exp, 1.0 - half_exp)
    if kernel_id == SOFT_SIGN:
        return (F.softsign(p0 * x) + 1.0) / 2.0
    if kernel_id == SUPER_SPIKE:
        # The exact antiderivative of α/(1 + |x|)², shifted so that g(0) = 1/2.
        return p0 * x / (1.0 + x.abs()) + 0.5
    if kernel_id == ERF:
        return torch.erfc(-p0 * x) / 2.0
    if kernel_id == RECT:
        return torch.clamp(p0 * x + 0.5, 0.0, 1.0)
    if kernel_id == PIECEWISE_LEAKY_RELU:
        w, c = p0, p1
        return torch.where(x < -w, c * x + c * w, torch.where(x > w, c * x - c * w + 1.0, x / (2.0 * w) + 0.5))
    raise ValueError(f"kernel_id={kernel_id} is not a known surrogate id (0..{PIECEWISE_LEAKY_RELU})")


class _HeavisideWithSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_id, p0, p1):
        ctx.save_for_backward(x)
        ctx.params = (kernel_id, p0, p1)
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * derivative(*ctx.params[:1], x, *ctx.params[1:]), None, None, None


class SurrogateFunctionBase(nn.Module):
    """Θ(x) forward, g'(x) backward; ``spiking=False`` makes the module compute g(x) instead."""

    kernel_id: int = -1

    def __init__(self, alpha: float, spiking: bool = True):
        super().__init__()
        checked = SurrogateSpec(SurrogateKind.SIGMOID, alpha, 0.0, spiking)  # validation lives in spec.py
        self.alpha = checked.alpha
        self.spiking = checked.spiking

    @property
    def spec(self) -> SurrogateSpec:
        """This surrogate as plain data: the enum of its formula, its parameters and the spiking flag."""
        kernel_id, p0, p1 = self.kernel_params
        return SurrogateSpec(SurrogateKind(kernel_id), p0, p1, self.spiking)

    @property
    def kernel_params(self) -> tuple[int, float, float]:
        """``(kernel_id, p0, p1)``: what a fused kernel needs to evaluate g'."""
        return self.kernel_id, self.alpha, 0.0

    def set_spiking_mode(self, spiking: bool) -> None:
        self.spiking = bool(spiking)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, spiking={self.spiking}"

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        kernel_id, p0, p1 = self.kernel_params
        return derivative(kernel_id, x, p0, p1)

    def primitive_function(self, x: torch.Tensor) -> torch.Tensor:
        kernel_id, p0, p1 = self.kernel_params
        return primitive(kernel_id, x, p0, p1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spiking:
            return _HeavisideWithSurrogate.apply(x, *self.kernel_params)
        return self.primitive_function(x)


class Sigmoid(SurrogateFunctionBase):
    kernel_id = SIGMOID

    def __init__(self, alpha: float = 4.0, spiking: bool = True):
        super().__init__(alpha, spiking)



class ATan(SurrogateFunctionBase):
    kernel_id = ATAN

    def __init__(self, alpha: float = 2.0, spiking: bool = True):
        super().__init__(alpha, spiking)



class PiecewiseQuadratic(SurrogateFunctionBase):
    kernel_id = PIECEWISE_QUADRATIC

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)



class PiecewiseExp(SurrogateFunctionBase):
    kernel_id = PIECEWISE_EXP

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)



class SoftSign(SurrogateFunctionBase):
    kernel_id = SOFT_SIGN

    def __init__(self, alpha: float = 2.0, spiking: bool = True):
        super().__init__(alpha, spiking)



class SuperSpike(SurrogateFunctionBase):
    """SuperSpike (Zenke & Ganguli 2018): g'(x) = α / (1 + |x|)²; g(x) = αx/(1 + |x|) + 1/2."""

    kernel_id = SUPER_SPIKE

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)


class Erf(SurrogateFunctionBase):
    kernel_id = ERF

    def __init__(self, alpha: float = 2.0, spiking: bool = True):
        super().__init__(alpha, spiking)



class Rect(SurrogateFunctionBase):
    kernel_id = RECT

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)



class STBPRectangle(Rect):
    """The STBP rectangle: ∂o/∂u = (1/(2a))·1[|u − V_th| < a], a = 0.5.

    The STBP reference repository centres this box at u = 0 by mistake; here, as in the STBP paper, it is
    centred at the threshold (the neuron evaluates it at u − V_th). It equals ``Rect(alpha=1/(2a))``.
    """

    def __init__(self, a: float = 0.5, spiking: bool = True):
        a = float(a)
        if not math.isfinite(a) or a <= 0:
            raise ValueError(f"a (the half-width of the STBP rectangle) must be > 0, got {a}")
        super().__init__(alpha=1.0 / (2.0 * a), spiking=spiking)
        self.a = a

    def extra_repr(self) -> str:
        return f"a={self.a}, spiking={self.spiking}"


class PiecewiseLeakyReLU(SurrogateFunctionBase):
    kernel_id = PIECEWISE_LEAKY_RELU

    def __init__(self, w: float = 1.0, c: float = 0.01, spiking: bool = True):
        super().__init__(alpha=w, spiking=spiking)
        self.w = float(w)
        self.c = float(c)

    @property
    def kernel_params(self) -> tuple[int, float, float]:
        return self.kernel_id, self.w, self.c

    def extra_repr(self) -> str:
        return f"w={self.w}, c={self.c}, spiking={self.spiking}"



_CLASSES: dict[SurrogateKind, type[SurrogateFunctionBase]] = {
    SurrogateKind.SIGMOID: Sigmoid, SurrogateKind.ATAN: ATan, SurrogateKind.PIECEWISE_QUADRATIC: PiecewiseQuadratic,
    SurrogateKind.PIECEWISE_EXP: PiecewiseExp, SurrogateKind.SOFT_SIGN: SoftSign, SurrogateKind.SUPER_SPIKE: SuperSpike,
    SurrogateKind.ERF: Erf, SurrogateKind.RECT: Rect,
}


def from_spec(spec: SurrogateSpec) -> SurrogateFunctionBase:
    """The surrogate module a :class:`~spikeforge.spec.SurrogateSpec` describes (``module.spec == spec``)."""
    if spec.kind is SurrogateKind.PIECEWISE_LEAKY_RELU:
        return PiecewiseLeakyReLU(w=spec.alpha, c=spec.beta, spiking=spec.spiking)
    return _CLASSES[spec.kind](alpha=spec.alpha, spiking=spec.spiking)


def default() -> SurrogateFunctionBase:
    """A new module of the default surrogate (:data:`spikeforge.spec.DEFAULT_SURROGATE`, SpikingJelly's)."""
    return from_spec(DEFAULT_SURROGATE)


__all__ = [
    "from_spec",
    "default",
    "heaviside",
    "derivative",
    "primitive",
    "SurrogateFunctionBase",
    "Sigmoid",
    "ATan",
    "PiecewiseQuadratic",
    "PiecewiseExp",
    "SoftSign",
    "SuperSpike",
    "Erf",
    "Rect",
    "STBPRectangle",
    "PiecewiseLeakyReLU",
]
