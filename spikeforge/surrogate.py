"""Surrogate gradient functions.

A spiking neuron fires with the Heaviside step Θ(x) = 1[x ≥ 0], whose derivative is zero almost everywhere.
Surrogate-gradient training keeps Θ in the forward pass and uses the derivative g'(x) of a smooth stand-in g
in the backward pass. Each class below is one choice of g; ``spiking=False`` returns g(x) itself.

Every surrogate the fused kernels implement has a small integer ``kernel_id`` and two float parameters
``(p0, p1)``: the fused neuron kernels (``spikeforge.kernels``) evaluate g' from these three numbers, so the
formulas here are the single reference the kernels are tested against (:func:`derivative`).

SpikingJelly's other surrogates (second table) and any user subclass of :class:`SurrogateFunctionBase` with
``spiking_function`` / ``primitive_function`` static methods (SpikingJelly's way of writing one) are *custom*:
their spec is ``SurrogateKind.CUSTOM`` with the module's registry number, the dispatch gives such a neuron the
reference kernel, and that kernel takes g'(x) from the module's own autograd function (:func:`spec_derivative`).
The lowercase autograd functions (``sigmoid.apply(x, alpha)``, ``atan``, ...) are SpikingJelly's functional
API: Θ forward, the surrogate backward.

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

Custom (reference kernel only), SpikingJelly 2.0's formulas:

==========================  ======================================================================
class (default)             g'(x)
==========================  ======================================================================
LeakyKReLU(leak=0, k=1)     k for x ≥ 0, leak for x < 0                 (g = (k or leak)·x)
S2NN(α=4, β=1)              α·σ(αx)(1 − σ(αx)) for x < 0, β/(x + 1) for x ≥ 0
QPseudoSpike(α=2)           (1 + 2|x|/(α − 1))^(−α)
LogTailedReLU(α=0)          α for x ≤ 0, 1 for 0 < x ≤ 1, 1/x for x > 1
NonzeroSignLogAbs(α=1)      1 / (1/α + |x|)
SquarewaveFourierSeries     (4/T)·Σ_{i=1}^{n−1} cos((2i − 1)·2πx/T)     (n=2, T_period=8)
FakeNumericalGradient(0.3)  min(sgn(x)/x, α) with sgn(0) = 1            (spiking only)
DeterministicPass           1 (straight through; g(x) = x)
PoissonPass                 1; its forward draws Bernoulli(x) instead of Θ (an encoder, not a neuron's)
MultiLevelSpikeCount(K)     the spike count round(clamp(x, 0, K)), gradient 1 inside a window
==========================  ======================================================================
"""

from __future__ import annotations

import inspect
import itertools
import math
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spec import DEFAULT_SURROGATE, SurrogateKind, SurrogateSpec

# The kernel ids, one enum (spikeforge.spec.SurrogateKind); the names stay importable from here.
(SIGMOID, ATAN, PIECEWISE_QUADRATIC, PIECEWISE_EXP, SOFT_SIGN, SUPER_SPIKE, ERF, RECT,
 PIECEWISE_LEAKY_RELU, CUSTOM) = SurrogateKind


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
    raise ValueError(f"kernel_id={kernel_id} is not a known surrogate id (0..{PIECEWISE_LEAKY_RELU}); a custom "
                     "surrogate's derivative is spec_derivative(spec, x)")


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
    raise ValueError(f"kernel_id={kernel_id} is not a known surrogate id (0..{PIECEWISE_LEAKY_RELU}); a custom "
                     "surrogate's primitive is spec_primitive(spec, x)")


# ------------------------------------------------------------------------- custom surrogates: the registry
# A surrogate the kernels do not implement is found again by the reference kernel through this table: its
# spec carries the module's number (SurrogateSpec.custom). Weak values: the table never keeps a module alive.
_CUSTOM: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_CUSTOM_NUMBERS = itertools.count()


def custom_module(number: int) -> nn.Module:
    """The custom surrogate module registered as ``number`` (see :attr:`SurrogateFunctionBase.spec`)."""
    module = _CUSTOM.get(number)
    if module is None:
        raise LookupError(f"no live surrogate module is registered as custom surrogate {number}; a spec of a "
                          "custom surrogate is valid only while its module exists (rebuild it from the module)")
    return module


def _register(module: nn.Module) -> int:
    number = module.__dict__.get("_custom_number")
    if number is None or _CUSTOM.get(number) is not module:  # new, or a copy (deepcopy / unpickled)
        number = next(_CUSTOM_NUMBERS)
        module.__dict__["_custom_number"] = number
        _CUSTOM[number] = module
    return number


def _elementwise_grad(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d module(x) / dx for an elementwise module, by autograd (ones as the upstream gradient)."""
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        y = module(z)
        if not y.requires_grad:
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(y, z, torch.ones_like(y), allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.to(x.dtype)


def spec_derivative(spec: SurrogateSpec | None, x: torch.Tensor) -> torch.Tensor:
    """g'(x) of a surrogate spec: the table (:func:`derivative`) or, for ``CUSTOM``, the module's autograd."""
    if spec is None:
        spec = DEFAULT_SURROGATE
    if spec.kind is SurrogateKind.CUSTOM:
        return _elementwise_grad(custom_module(spec.custom), x)
    return derivative(spec.kind, x, spec.alpha, spec.beta)


def spec_fire(spec: SurrogateSpec | None, x: torch.Tensor) -> torch.Tensor:
    """What a neuron emits for x = H − V_th when it does not fire Θ: the smooth g(x) of a ``spiking=False``
    surrogate, or the forward of a ``CUSTOM`` module (Θ for SpikingJelly's, as in SpikingJelly's neurons)."""
    if spec is None:
        spec = DEFAULT_SURROGATE
    if spec.kind is SurrogateKind.CUSTOM:
        with torch.no_grad():
            return custom_module(spec.custom)(x).to(x.dtype)
    return primitive(spec.kind, x, spec.alpha, spec.beta)


spec_primitive = spec_fire


# --------------------------------------------------------- SpikingJelly's functional API (autograd functions)
class _ThetaFunction(torch.autograd.Function):
    """Θ(x) forward; subclasses set ``_grad(x, *params)``, the surrogate derivative (no grad for the params)."""

    @staticmethod
    def _grad(x, *params):
        raise NotImplementedError

    @classmethod
    def forward(cls, ctx, x, *params):
        ctx.save_for_backward(x)
        ctx.params = params
        return heaviside(x)

    @classmethod
    def backward(cls, ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad_x = grad_output * cls._grad(x, *ctx.params) if ctx.needs_input_grad[0] else None
        return (grad_x, *([None] * len(ctx.params)))


def _table_function(kind: SurrogateKind, name: str, n_params: int = 1):
    def grad(x, *params):
        return derivative(kind, x, *params)

    doc = (f"``{name}.apply(x, {'w, c' if n_params == 2 else 'alpha'})``: Θ(x) forward, the {kind.name} "
           "surrogate derivative backward (the kernels' formula).")
    return type(name, (_ThetaFunction,), {"_grad": staticmethod(grad), "__doc__": doc})


sigmoid = _table_function(SurrogateKind.SIGMOID, "sigmoid")
atan = _table_function(SurrogateKind.ATAN, "atan")
piecewise_quadratic = _table_function(SurrogateKind.PIECEWISE_QUADRATIC, "piecewise_quadratic")
piecewise_exp = _table_function(SurrogateKind.PIECEWISE_EXP, "piecewise_exp")
soft_sign = _table_function(SurrogateKind.SOFT_SIGN, "soft_sign")
super_spike = _table_function(SurrogateKind.SUPER_SPIKE, "super_spike")
erf = _table_function(SurrogateKind.ERF, "erf")
rect = _table_function(SurrogateKind.RECT, "rect")
_piecewise_leaky_relu = _table_function(SurrogateKind.PIECEWISE_LEAKY_RELU, "piecewise_leaky_relu", 2)


class piecewise_leaky_relu(_piecewise_leaky_relu):  # noqa: N801 - SpikingJelly's name
    """``piecewise_leaky_relu.apply(x, w=1, c=0.01)``: Θ forward, 1/(2w) inside |x| < w, c outside."""

    @classmethod
    def forward(cls, ctx, x, w=1.0, c=0.01):
        return super().forward(ctx, x, w, c)


def _leaky_k_relu_grad(x, leak, k):
    return torch.where(x >= 0, torch.full_like(x, k), torch.full_like(x, leak))


def _s2nn_grad(x, alpha, beta):
    s = torch.sigmoid(alpha * x)
    return torch.where(x < 0, alpha * s * (1.0 - s), beta / (x + 1.0))


def _q_pseudo_spike_grad(x, alpha):
    return (1.0 + 2.0 / (alpha - 1.0) * x.abs()).pow(-alpha)


def _log_tailed_relu_grad(x, alpha):
    return torch.where(x > 1.0, 1.0 / x.clamp_min(1.0), torch.where(x <= 0, torch.full_like(x, alpha),
                                                                    torch.ones_like(x)))


def _nonzero_sign_log_abs_grad(x, alpha):
    return 1.0 / (1.0 / alpha + x.abs())


def _squarewave_fourier_series_grad(x, n, T_period):
    w = 2.0 * math.pi / T_period
    total = torch.zeros_like(x)
    for i in range(1, int(n)):
        total = total + torch.cos((2 * i - 1.0) * w * x)
    return total * (4.0 / T_period)


def _fake_numerical_gradient_grad(x, alpha):
    sign = (x >= 0).to(x.dtype) * 2.0 - 1.0
    return torch.clamp_max(sign / x, alpha)


def _function(name: str, grad, doc: str):
    return type(name, (_ThetaFunction,), {"_grad": staticmethod(grad), "__doc__": doc})


leaky_k_relu = _function("leaky_k_relu", _leaky_k_relu_grad, "``leaky_k_relu.apply(x, leak, k)``")
s2nn = _function("s2nn", _s2nn_grad, "``s2nn.apply(x, alpha, beta)``")
q_pseudo_spike = _function("q_pseudo_spike", _q_pseudo_spike_grad, "``q_pseudo_spike.apply(x, alpha)``")
log_tailed_relu = _function("log_tailed_relu", _log_tailed_relu_grad, "``log_tailed_relu.apply(x, alpha)``")
nonzero_sign_log_abs = _function("nonzero_sign_log_abs", _nonzero_sign_log_abs_grad,
                                 "``nonzero_sign_log_abs.apply(x, alpha)``")
squarewave_fourier_series = _function("squarewave_fourier_series", _squarewave_fourier_series_grad,
                                      "``squarewave_fourier_series.apply(x, n, T_period)``")
fake_numerical_gradient = _function("fake_numerical_gradient", _fake_numerical_gradient_grad,
                                    "``fake_numerical_gradient.apply(x, alpha)``")


class deterministic_pass(torch.autograd.Function):  # noqa: N801 - SpikingJelly's name
    """``deterministic_pass.apply(x)``: Θ(x) forward, the gradient passed straight through."""

    @staticmethod
    def forward(ctx, x):
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class poisson_pass(torch.autograd.Function):  # noqa: N801 - SpikingJelly's name
    """``poisson_pass.apply(p)``: a Bernoulli(p) draw forward (float), the gradient passed straight through."""

    @staticmethod
    def forward(ctx, x):
        return torch.bernoulli(x).float()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class multi_level_spike_count(torch.autograd.Function):  # noqa: N801
    """``multi_level_spike_count.apply(x, K, grad_min, grad_max)``: round(clamp(x, 0, K)) forward, the gradient
    passed through where grad_min ≤ x ≤ grad_max."""

    @staticmethod
    def forward(ctx, x, max_spike_count, grad_min, grad_max):
        ctx.save_for_backward(x)
        ctx.window = (grad_min, grad_max)
        return torch.round(torch.clamp(x, 0, max_spike_count))

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.window
        return grad_output * ((x >= lo) & (x <= hi)).to(grad_output.dtype), None, None, None


def _backward_helper(grad):
    def backward(grad_output, x, *params):
        return grad_output * grad(x, *params), *([None] * len(params))

    return backward


# SpikingJelly's ``*_backward(grad_output, x, *params) -> (grad_x, None...)`` helpers
sigmoid_backward = _backward_helper(sigmoid._grad)
atan_backward = _backward_helper(atan._grad)
piecewise_quadratic_backward = _backward_helper(piecewise_quadratic._grad)
piecewise_exp_backward = _backward_helper(piecewise_exp._grad)
soft_sign_backward = _backward_helper(soft_sign._grad)
super_spike_backward = _backward_helper(super_spike._grad)
erf_backward = _backward_helper(erf._grad)
rect_backward = _backward_helper(rect._grad)
piecewise_leaky_relu_backward = _backward_helper(piecewise_leaky_relu._grad)
leaky_k_relu_backward = _backward_helper(_leaky_k_relu_grad)
log_tailed_relu_backward = _backward_helper(_log_tailed_relu_grad)
nonzero_sign_log_abs_backward = _backward_helper(_nonzero_sign_log_abs_grad)
fake_numerical_gradient_backward = _backward_helper(_fake_numerical_gradient_grad)


# ----------------------------------------------------------------------------------------------- modules
class _BoundStatic:
    """A static method that, called on an instance with the tensor alone, gets the instance's parameters
    (``sg.primitive_function(x)``), and otherwise takes them explicitly, as SpikingJelly's static methods do
    (``Sigmoid.primitive_function(x, 4.0)``, ``self.primitive_function(x, self.alpha)``)."""

    def __init__(self, function):
        self.function = function
        self.__doc__ = function.__doc__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self.function
        function = self.function

        def bound(x, *args, **kwargs):
            if not args and not kwargs:
                return function(x, **instance._sg_params)
            return function(x, *args, **kwargs)

        return bound


class SurrogateFunctionBase(nn.Module):
    """Θ(x) forward, a surrogate derivative backward; ``spiking=False`` computes the smooth g(x) instead.

    SpikingJelly's signature: ``SurrogateFunctionBase(spiking=True, **params)`` stores each parameter as an
    attribute, and ``forward`` calls ``spiking_function(x, **params)`` (or ``primitive_function``); subclasses
    define those two as static methods. The older order ``SurrogateFunctionBase(alpha, spiking)`` is accepted
    too (the parameters are then passed positionally).

    The surrogates of the kernels' table set ``kernel_id``; a neuron with one runs on any kernel. Every other
    subclass (and a subclass of a table class that overrides ``forward`` / ``spiking_function`` /
    ``primitive_function``) is *custom*: its :attr:`spec` is ``SurrogateKind.CUSTOM`` and neurons run it on the
    reference kernel, with g'(x) from its own autograd function.
    """

    kernel_id: int | None = None

    def __init__(self, *args, spiking: bool = True, **params):
        super().__init__()
        positional = False
        if len(args) == 1 and isinstance(args[0], bool) and not params:
            spiking = args[0]  # SpikingJelly 2.0: the first positional argument is ``spiking``
        elif len(args) in (1, 2):
            params = {"alpha": args[0], **params}  # the older (alpha, spiking) order
            positional = True
            if len(args) == 2:
                spiking = args[1]
        elif args:
            raise TypeError(f"SurrogateFunctionBase takes (spiking=True, **params) or (alpha, spiking), "
                            f"got {len(args)} positional arguments")
        self.spiking = bool(spiking)
        self._sg_param_names = tuple(params)
        self._sg_positional = positional
        for name, value in params.items():
            setattr(self, name, value)
        if self._native():
            SurrogateSpec(SurrogateKind(self.kernel_id), *self.kernel_params[1:], self.spiking)  # validate now

    # ---------------------------------------------------------------------------------- SpikingJelly's API
    @property
    def _sg_params(self) -> dict:
        return {name: getattr(self, name) for name in self._sg_param_names}

    def set_spiking_mode(self, spiking: bool) -> None:
        self.spiking = bool(spiking)

    def extra_repr(self) -> str:
        return ", ".join([*(f"{k}={v}" for k, v in self._sg_params.items()), f"spiking={self.spiking}"])

    @staticmethod
    def spiking_function(x, *args, **kwargs):
        raise NotImplementedError("a SurrogateFunctionBase subclass defines spiking_function(x, ...)")

    @staticmethod
    def primitive_function(x, *args, **kwargs):
        raise NotImplementedError("this surrogate defines no primitive function (spiking=False is unavailable)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        function = self.spiking_function if self.spiking else self.primitive_function
        if self._sg_positional:
            return function(x, *self._sg_params.values())
        return function(x, **self._sg_params)

    # ------------------------------------------------------------------------------- spikeforge's view
    _kernel_native = False  # set per class by __init_subclass__ (a plain attribute: torch.compile reads it)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        native = False
        if cls.kernel_id is not None:
            owner = next(c for c in cls.__mro__ if "kernel_id" in c.__dict__)
            native = all(getattr(cls, name) is getattr(owner, name)
                         for name in ("forward", "spiking_function", "primitive_function", "kernel_params"))
        cls._kernel_native = native

    @classmethod
    def _native(cls) -> bool:
        """True when the kernels' table describes this class exactly (no behaviour overridden below it)."""
        return cls._kernel_native

    @property
    def is_custom(self) -> bool:
        """The kernels do not implement this surrogate (neurons run it on the reference kernel)."""
        return not self._native()

    @property
    def kernel_params(self) -> tuple[int, float, float]:
        """``(kernel_id, p0, p1)``: what a fused kernel needs to evaluate g' (custom: ``(CUSTOM, number, 0)``)."""
        if not self._kernel_native:
            return int(SurrogateKind.CUSTOM), _register(self), 0.0
        return self.kernel_id, self.alpha, 0.0

    @property
    def spec(self) -> SurrogateSpec:
        """This surrogate as plain data: the enum of its formula, its parameters and the spiking flag."""
        kernel_id, p0, p1 = self.kernel_params
        if kernel_id == SurrogateKind.CUSTOM:
            return SurrogateSpec(SurrogateKind.CUSTOM, 1.0, 0.0, self.spiking, custom=int(p0))
        return SurrogateSpec(SurrogateKind(kernel_id), p0, p1, self.spiking)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """g'(x) (the spiking-mode surrogate gradient; for a custom module, by autograd of its forward)."""
        if not self._native():
            spiking = self.spiking
            self.spiking = True
            try:
                return _elementwise_grad(self, x)
            finally:
                self.spiking = spiking
        kernel_id, p0, p1 = self.kernel_params
        return derivative(kernel_id, x, p0, p1)


class MultiArgsSurrogateFunctionBase(SurrogateFunctionBase):
    """SpikingJelly 0.0.0.0.14's base for surrogates with several parameters: ``__init__(spiking, *args,
    **kwargs)`` stores only ``spiking``; the subclass keeps its parameters and writes ``forward`` itself."""

    def __init__(self, spiking: bool = True, *args, **kwargs):
        super().__init__(spiking=spiking)


def _table_module(name: str, kind: SurrogateKind, function, default: float, doc: str):
    def __init__(self, alpha: float = default, spiking: bool = True):
        SurrogateFunctionBase.__init__(self, spiking=spiking, alpha=alpha)

    def spiking_function(x, alpha):
        return function.apply(x, alpha)

    def primitive_function(x, alpha):
        return primitive(kind, x, alpha)

    def backward(grad_output, x, alpha):
        return grad_output * derivative(kind, x, alpha)

    __init__.__signature__ = inspect.Signature([
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("alpha", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default),
        inspect.Parameter("spiking", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=True)])
    return type(name, (SurrogateFunctionBase,), {
        "__doc__": doc, "__init__": __init__, "kernel_id": int(kind), "__module__": __name__,
        "spiking_function": staticmethod(spiking_function), "primitive_function": _BoundStatic(primitive_function),
        "backward": staticmethod(backward),
    })


Sigmoid = _table_module("Sigmoid", SurrogateKind.SIGMOID, sigmoid, 4.0, "g(x) = σ(αx) (α = 4).")
ATan = _table_module("ATan", SurrogateKind.ATAN, atan, 2.0, "g(x) = arctan(π/2·αx)/π + 1/2 (α = 2).")
PiecewiseQuadratic = _table_module("PiecewiseQuadratic", SurrogateKind.PIECEWISE_QUADRATIC, piecewise_quadratic,
                                   1.0, "g'(x) = α − α²|x| for |x| ≤ 1/α, else 0 (α = 1).")
PiecewiseExp = _table_module("PiecewiseExp", SurrogateKind.PIECEWISE_EXP, piecewise_exp, 1.0,
                             "g'(x) = (α/2)·exp(−α|x|) (α = 1).")
SoftSign = _table_module("SoftSign", SurrogateKind.SOFT_SIGN, soft_sign, 2.0, "g(x) = (softsign(αx) + 1)/2 (α = 2).")
SuperSpike = _table_module("SuperSpike", SurrogateKind.SUPER_SPIKE, super_spike, 1.0,
                           "SuperSpike (Zenke & Ganguli 2018): g'(x) = α / (1 + |x|)²; g(x) = αx/(1 + |x|) + 1/2.")
Erf = _table_module("Erf", SurrogateKind.ERF, erf, 2.0, "g(x) = erfc(−αx)/2 (α = 2).")
Rect = _table_module("Rect", SurrogateKind.RECT, rect, 1.0, "g'(x) = α·1[|x| < 0.5/α] (α = 1).")


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
    """g'(x) = 1/(2w) for |x| < w, else c (w = 1, c = 0.01)."""

    kernel_id = PIECEWISE_LEAKY_RELU

    def __init__(self, w: float = 1.0, c: float = 0.01, spiking: bool = True):
        if not float(w) > 0:
            raise ValueError(f"w (the half-width) must be > 0, got {w}")
        super().__init__(spiking=spiking, w=float(w), c=float(c))

    @staticmethod
    def spiking_function(x, w, c):
        return piecewise_leaky_relu.apply(x, w, c)

    @_BoundStatic
    def primitive_function(x, w, c):
        return primitive(PIECEWISE_LEAKY_RELU, x, w, c)

    @staticmethod
    def backward(grad_output, x, w, c):
        return grad_output * derivative(PIECEWISE_LEAKY_RELU, x, w, c)

    @property
    def kernel_params(self) -> tuple[int, float, float]:
        if not self._native():
            return SurrogateFunctionBase.kernel_params.fget(self)
        return self.kernel_id, self.w, self.c


# --------------------------------------------------------------------------- custom (reference kernel only)
class LeakyKReLU(SurrogateFunctionBase):
    """g'(x) = k for x ≥ 0, ``leak`` for x < 0; g(x) = k·x or leak·x."""

    def __init__(self, leak: float = 0.0, k: float = 1.0, spiking: bool = True):
        super().__init__(spiking=spiking, leak=leak, k=k)

    @staticmethod
    def spiking_function(x, leak, k):
        return leaky_k_relu.apply(x, leak, k)

    @_BoundStatic
    def primitive_function(x, leak, k):
        return torch.where(x >= 0, k * x, leak * x)

    @staticmethod
    def backward(grad_output, x, leak, k):
        return grad_output * _leaky_k_relu_grad(x, leak, k)


class S2NN(SurrogateFunctionBase):
    """S2NN (Suetake et al. 2023): the sigmoid derivative for x < 0, β/(x + 1) for x ≥ 0."""

    def __init__(self, alpha: float = 4.0, beta: float = 1.0, spiking: bool = True):
        super().__init__(spiking=spiking, alpha=alpha, beta=beta)

    @staticmethod
    def spiking_function(x, alpha, beta):
        return s2nn.apply(x, alpha, beta)

    @_BoundStatic
    def primitive_function(x, alpha, beta):
        return torch.where(x < 0, torch.sigmoid(alpha * x), beta * torch.log((x + 1.0).abs() + 1e-5) + 0.5)


class QPseudoSpike(SurrogateFunctionBase):
    """q-PseudoSpike (Herranz-Celotti & Rouat 2022): g'(x) = (1 + 2|x|/(α − 1))^(−α), a tail set by α."""

    def __init__(self, alpha: float = 2.0, spiking: bool = True):
        super().__init__(spiking=spiking, alpha=alpha)

    @staticmethod
    def spiking_function(x, alpha):
        return q_pseudo_spike.apply(x, alpha)

    @_BoundStatic
    def primitive_function(x, alpha):
        sign = heaviside(x) * 2.0 - 1.0
        return heaviside(x) - sign * 0.5 * (1.0 + 2.0 / (alpha - 1.0) * x * sign).pow(1.0 - alpha)


class LogTailedReLU(SurrogateFunctionBase):
    """Log-tailed ReLU (Cai et al. 2017): g'(x) = α (x ≤ 0), 1 (0 < x ≤ 1), 1/x (x > 1)."""

    def __init__(self, alpha: float = 0.0, spiking: bool = True):
        super().__init__(spiking=spiking, alpha=alpha)

    @staticmethod
    def spiking_function(x, alpha):
        return log_tailed_relu.apply(x, alpha)

    @_BoundStatic
    def primitive_function(x, alpha):
        return torch.where(x > 1.0, torch.log(x.clamp_min(1.0)) + 1.0, F.leaky_relu(x, alpha))

    @staticmethod
    def backward(grad_output, x, alpha):
        return grad_output * _log_tailed_relu_grad(x, alpha)


class NonzeroSignLogAbs(SurrogateFunctionBase):
    """g'(x) = 1 / (1/α + |x|); g(x) = sgn(x)·log(α|x| + 1) with sgn(0) = 1."""

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(spiking=spiking, alpha=alpha)

    @staticmethod
    def spiking_function(x, alpha):
        return nonzero_sign_log_abs.apply(x, alpha)

    @_BoundStatic
    def primitive_function(x, alpha):
        sign = heaviside(x) * 2.0 - 1.0
        return sign * torch.log(alpha * sign * x + 1.0)

    @staticmethod
    def backward(grad_output, x, alpha):
        return grad_output * _nonzero_sign_log_abs_grad(x, alpha)


class SquarewaveFourierSeries(SurrogateFunctionBase):
    """g(x) = 1/2 + (2/π)·Σ_{i=1}^{n−1} sin((2i − 1)ωx)/(2i − 1), ω = 2π/T_period (a truncated square wave)."""

    def __init__(self, n: int = 2, T_period: float = 8, spiking: bool = True):
        if isinstance(n, bool) or not isinstance(n, int) or not T_period > 0:
            raise ValueError(f"n must be an int and T_period > 0, got n={n!r}, T_period={T_period!r}")
        super().__init__(spiking=spiking, n=n, T_period=T_period)

    @staticmethod
    def spiking_function(x, n, T_period):
        return squarewave_fourier_series.apply(x, n, T_period)

    @_BoundStatic
    def primitive_function(x, n, T_period):
        w = 2.0 * math.pi / T_period
        total = torch.zeros_like(x)
        for i in range(1, int(n)):
            c = 2 * i - 1.0
            total = total + torch.sin(c * w * x) / c
        return 0.5 + 2.0 / math.pi * total


class FakeNumericalGradient(SurrogateFunctionBase):
    """g'(x) = min(sgn(x)/x, α), sgn(0) = 1 (spiking mode only, as in SpikingJelly)."""

    def __init__(self, alpha: float = 0.3):
        super().__init__(spiking=True, alpha=alpha)

    @staticmethod
    def spiking_function(x, alpha):
        return fake_numerical_gradient.apply(x, alpha)

    @staticmethod
    def backward(grad_output, x, alpha):
        return grad_output * _fake_numerical_gradient_grad(x, alpha)


class DeterministicPass(SurrogateFunctionBase):
    """Θ(x) forward, the gradient passed straight through (g(x) = x with ``spiking=False``)."""

    def __init__(self, spiking: bool = True):
        super().__init__(spiking=spiking)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return deterministic_pass.apply(x) if self.spiking else x

    @staticmethod
    def backward(grad_output, x, alpha=None):
        return grad_output


class PoissonPass(SurrogateFunctionBase):
    """A Bernoulli(x) draw forward, the gradient straight through (x itself with ``spiking=False``)."""

    def __init__(self, spiking: bool = True):
        super().__init__(spiking=spiking)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return poisson_pass.apply(x) if self.spiking else x

    @staticmethod
    def backward(grad_output, x, alpha=None):
        return grad_output


class MultiLevelSpikeCount(SurrogateFunctionBase):
    """A multi-level spike: the count round(clamp(x, 0, K)) forward, gradient 1 inside ``grad_window``
    (default [0, K]); ``spiking=False``: clamp(x, 0, K)."""

    def __init__(self, max_spike_count: int, spiking: bool = True, grad_window=None):
        if isinstance(max_spike_count, bool) or not isinstance(max_spike_count, int):
            raise TypeError("max_spike_count must be an integer")
        if max_spike_count < 1:
            raise ValueError("max_spike_count must be >= 1")
        grad_min, grad_max = (0.0, float(max_spike_count)) if grad_window is None else grad_window
        if grad_min > grad_max:
            raise ValueError("grad_window must satisfy grad_min <= grad_max")
        super().__init__(spiking=spiking, max_spike_count=max_spike_count, grad_min=grad_min, grad_max=grad_max)

    @staticmethod
    def spiking_function(x, max_spike_count, grad_min, grad_max):
        return multi_level_spike_count.apply(x, max_spike_count, grad_min, grad_max)

    @_BoundStatic
    def primitive_function(x, max_spike_count, grad_min, grad_max):
        return torch.clamp(x, 0, max_spike_count)


# ---------------------------------------------------------------------------------------------- helpers
_CLASSES: dict[SurrogateKind, type[SurrogateFunctionBase]] = {
    SurrogateKind.SIGMOID: Sigmoid, SurrogateKind.ATAN: ATan, SurrogateKind.PIECEWISE_QUADRATIC: PiecewiseQuadratic,
    SurrogateKind.PIECEWISE_EXP: PiecewiseExp, SurrogateKind.SOFT_SIGN: SoftSign, SurrogateKind.SUPER_SPIKE: SuperSpike,
    SurrogateKind.ERF: Erf, SurrogateKind.RECT: Rect,
}


def from_spec(spec: SurrogateSpec) -> SurrogateFunctionBase:
    """The surrogate module a :class:`~spikeforge.spec.SurrogateSpec` describes (``module.spec == spec``);
    for a ``CUSTOM`` spec, the registered module itself."""
    if spec.kind is SurrogateKind.CUSTOM:
        return custom_module(spec.custom)
    if spec.kind is SurrogateKind.PIECEWISE_LEAKY_RELU:
        return PiecewiseLeakyReLU(w=spec.alpha, c=spec.beta, spiking=spec.spiking)
    return _CLASSES[spec.kind](alpha=spec.alpha, spiking=spec.spiking)


def default() -> SurrogateFunctionBase:
    """A new module of the default surrogate (:data:`spikeforge.spec.DEFAULT_SURROGATE`, SpikingJelly's)."""
    return from_spec(DEFAULT_SURROGATE)


def check_manual_grad(primitive_function, spiking_function, *args, **kwargs):
    """SpikingJelly's check: the autograd gradient of ``primitive_function`` against the hand-written backward of
    ``spiking_function`` on [−2, 2); prints both and returns the largest absolute difference."""
    x = torch.arange(-2, 2, 32 / 8192, requires_grad=True)
    primitive_function(x, *args, **kwargs).sum().backward()
    auto = x.grad.clone()
    x.grad = None
    spiking_function(x, *args, **kwargs).sum().backward()
    manual = x.grad.clone()
    error = (manual - auto).abs()
    i = int(error.argmax())
    x = x.detach()
    print(f"surrogate gradient: max |manual - auto| = {float(error[i]):.3g} at x = {float(x[i]):.4g} "
          f"(auto {float(auto[i]):.6g}, manual {float(manual[i]):.6g})")
    return float(error[i])


def plot_surrogate_function(surrogate_function: SurrogateFunctionBase, path: str | None = None):
    """Plot Θ, the primitive g and the surrogate gradient of a module on [−2, 2] (matplotlib, imported here);
    saves to ``path`` when given (SpikingJelly saves ``<Class>.pdf/.svg`` and also needs ``scienceplots``)."""
    import matplotlib.pyplot as plt

    x = torch.linspace(-2.0, 2.0, 801)
    fig, ax = plt.subplots(dpi=120)
    ax.plot(x, heaviside(x), "-.", label="Heaviside")
    spiking = surrogate_function.spiking
    try:
        surrogate_function.set_spiking_mode(False)
        try:
            with torch.no_grad():
                ax.plot(x, surrogate_function(x), label="Primitive")
        except NotImplementedError:
            pass
        surrogate_function.set_spiking_mode(True)
        xg = x.clone().requires_grad_(True)
        surrogate_function(xg).sum().backward()
        ax.plot(x, xg.grad, label="Gradient")
    finally:
        surrogate_function.set_spiking_mode(spiking)
    ax.set(xlim=(-2, 2), xlabel="Input", ylabel="Output", title=f"{type(surrogate_function).__name__} surrogate")
    ax.grid(linestyle="--")
    ax.legend()
    if path is not None:
        fig.savefig(path, bbox_inches="tight")
    return fig


__all__ = [
    "from_spec", "default", "heaviside", "derivative", "primitive", "spec_derivative", "spec_fire",
    "spec_primitive", "custom_module", "check_manual_grad", "plot_surrogate_function",
    "SurrogateFunctionBase", "MultiArgsSurrogateFunctionBase",
    "Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "Erf", "Rect",
    "STBPRectangle", "PiecewiseLeakyReLU", "LeakyKReLU", "S2NN", "QPseudoSpike", "LogTailedReLU",
    "NonzeroSignLogAbs", "SquarewaveFourierSeries", "FakeNumericalGradient", "DeterministicPass", "PoissonPass",
    "MultiLevelSpikeCount",
    "sigmoid", "atan", "piecewise_quadratic", "piecewise_exp", "soft_sign", "super_spike", "erf", "rect",
    "piecewise_leaky_relu", "leaky_k_relu", "s2nn", "q_pseudo_spike", "log_tailed_relu", "nonzero_sign_log_abs",
    "squarewave_fourier_series", "fake_numerical_gradient", "deterministic_pass", "poisson_pass",
    "multi_level_spike_count",
    "sigmoid_backward", "atan_backward", "piecewise_quadratic_backward", "piecewise_exp_backward",
    "soft_sign_backward", "super_spike_backward", "erf_backward", "rect_backward", "piecewise_leaky_relu_backward",
    "leaky_k_relu_backward", "log_tailed_relu_backward", "nonzero_sign_log_abs_backward",
    "fake_numerical_gradient_backward",
]
