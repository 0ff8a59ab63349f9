"""The integer fake-quant model: a float network whose spikes are those of its integer export, exactly.

:func:`prepare_integer` (``prepare_qat(model, integer=True, ...)``) rewrites a model that describes itself with
``integer_graph()`` (the STBP zoo) in place so that every quantity of the network lives on an integer grid:

* the input of the first layer is quantised to ``input_bits``: ``x_code = clamp(round(x·s_in), ±(2^(b−1)−1))``
  with ``s_in = (2^(b−1)−1)/input_range``;
* BatchNorm (tdBN included, with its α·V_th factor) is folded into the convolution feeding it, from its running
  statistics: ``W' = a·W``, ``b' = β − μ·a``, ``a = γ·α·V_th/√(σ²+ε)``; the BN module becomes an identity;
* weights are ``codes = round(s·W)``, ``s = (2^(b−1)−1)/max|W|`` per tensor (the reference's formula) or per
  output channel; synapses summed into one neuron (a residual block's two branches, and an identity shortcut,
  which counts as a weight of 1) share one scale per channel, so their currents add on one grid;
* the neuron of layer ℓ works in membrane units of ``1/S'``, ``S' = s·g·2^F``, with ``g`` the grid of its input
  (``s_in`` for the first layer, 1 for spikes, k² after a k×k average pool — a pool is a sum) and ``F``
  fractional bits. Everything below is then an integer, per channel:

      I_t = acc_t·2^F + B              acc_t = Σ codes·x_t (integer), B = round(b·S')
      V   = U_{t−1}·(1 − O_{t−1})      hard reset to 0 (STBP)
      L   = ⌊V·m / 2^k⌋                leak: retention r ≈ m/2^k (a right shift when m = 1: r = 0.25 is >> 2)
      U_t = clamp(L + I_t, −2^(B_m−1), 2^(B_m−1) − 1)     membrane of B_m bits, saturating
      O_t = 1[U_t > Θ]                 Θ = ⌊V_th·S'⌋ (⌈V_th·S'⌉ − 1 for a neuron that fires on a tie)

  ``Θ`` is the integer threshold: for an integer membrane, ``U > V_th·S'`` ⇔ ``U > Θ``. With ``F ≥ k·(T−1)``
  the shift loses nothing, and the only differences to the float network are the rounded weights, biases and
  input (and saturation).

The model's own forward then computes exactly this. With gradients disabled (evaluation) every synapse
computes its integer accumulator exactly in float64 (``conv(x_code, codes)``, sums below 2^53) and hands on
``(acc·2^F + B)/S'``; the neuron recovers the integer current with ``round(i·S')`` and runs the recurrence above
on integers held in float64. So the exported integer network (:mod:`spikeforge.quantize.network`) produces the
very same spikes. With gradients enabled (training) the same values are computed in float32 with
straight-through estimators for every rounding, floor and clamp, and the neuron's surrogate gradient is the
model's own (its ``spec.surrogate``) evaluated at the membrane's distance to the threshold in float units.

``model.integer_plan`` keeps the rewritten graph; :func:`spikeforge.quantize.export_integer` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import surrogate as _surrogate
from ..layer import tdBatchNorm
from ..spec import KernelFamily, LeakLaw, NeuronSpec
from .fake import check_bits, is_fake_quant, quantizable_layers, swap_class, weight_codes
from .profile import HardwareProfile, generic_profile

__all__ = ["prepare_integer", "IntegerPlan", "ScaleGroup", "SynapseQuant", "NeuronQuant", "leak_fraction",
           "fold_batchnorm_into", "is_integer_prepared", "IntegerLIFMixin"]


# ------------------------------------------------------------------------------------------------ helpers
def leak_fraction(retention: float, leak_bits: int) -> tuple[int, int, bool]:
    """``(m, k, exact)`` with ``m/2^k`` the retention factor: the smallest ``k ≤ leak_bits`` that represents it
    exactly, else ``k = leak_bits`` and ``m = round(r·2^k)``."""
    r = float(retention)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"the retention factor must be in [0, 1] for an integer leak, got {r}")
    for k in range(leak_bits + 1):
        m = r * 2 ** k
        if m == int(m):
            return int(m), k, True
    return int(round(r * 2 ** leak_bits)), leak_bits, False


def _channel_view(t: torch.Tensor, ndim: int, channel_dim: int) -> torch.Tensor:
    """A per-channel vector ``[C]`` shaped to broadcast at ``channel_dim`` of an ``ndim``-D tensor (0-d stays)."""
    if t.dim() == 0:
        return t
    return t.view(-1, *([1] * (ndim - channel_dim - 1)))


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (x.round() - x).detach()


def fold_batchnorm_into(layer: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode ``bn`` (BatchNorm or tdBatchNorm) into ``layer`` (Conv/Linear) in place; ``bn`` becomes an
    identity without parameters or buffers (every name it is registered under sees that)."""
    if getattr(bn, "running_var", None) is None:
        raise ValueError(f"{type(bn).__name__} has no running statistics to fold")
    if bn.num_features != layer.weight.shape[0]:
        raise ValueError(f"{type(bn).__name__} has {bn.num_features} channels, the layer has {layer.weight.shape[0]}")
    inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv_std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv_std)
    factor = bn.alpha * bn.v_th if isinstance(bn, tdBatchNorm) else 1.0
    scale = gamma * factor * inv_std
    shift = beta - bn.running_mean.double() * scale
    with torch.no_grad():
        w = layer.weight.double() * scale.view(-1, *([1] * (layer.weight.dim() - 1)))
        b = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
        layer.weight.copy_(w.to(layer.weight.dtype))
        new_bias = (b * scale + shift).to(layer.weight.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias, requires_grad=layer.weight.requires_grad)
    else:
        with torch.no_grad():
            layer.bias.copy_(new_bias)
    bn._parameters.clear()
    bn._buffers.clear()
    bn.__class__ = _FoldedBatchNorm


class _FoldedBatchNorm(nn.Module):
    """A BatchNorm folded into the layer before it: the identity."""

    def forward(self, x):
        return x

    def extra_repr(self) -> str:
        return "folded into the preceding layer"


# ------------------------------------------------------------------------------------------------ scales
class ScaleGroup:
    """One weight scale (per tensor, or per output channel) shared by the synapses that feed one neuron.

    ``s = (2^(b−1)−1) / max`` over the members' |weights| (and 1 for an identity shortcut), float32 like the
    weights; computed from the detached weights at every call.
    """

    def __init__(self, members: list[nn.Module], bits: int, per_channel: bool, identity: bool = False,
                 max_scale: float | None = None):
        self.members = list(members)
        self.bits = check_bits(bits)
        self.per_channel = bool(per_channel)
        self.identity = bool(identity)
        self.max_scale = max_scale  # a ceiling that keeps the threshold in its register (tiny weights)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def _key(self) -> tuple:
        # the weights' identity and in-place version: optimizer steps and loads bump it
        return tuple((id(m.weight), m.weight.data_ptr(), m.weight._version) for m in self.members) + (
            self.max_scale,)

    def scale(self) -> torch.Tensor:
        key = self._key()
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        s = self._compute_scale()
        self._cache = (key, s)
        return s

    def _compute_scale(self) -> torch.Tensor:
        maxes = []
        for m in self.members:
            w = m.weight.detach().abs()
            maxes.append(w.flatten(1).amax(1) if self.per_channel else w.max())
        m = torch.stack(maxes).amax(0)
        if self.identity:
            m = torch.clamp(m, min=1.0)
        s = self.qmax / m
        s = torch.where(m > 0, s, torch.ones_like(s))
        if self.max_scale is not None:
            s = torch.clamp(s, max=self.max_scale)
        return s

    def scale_for(self, weight: torch.Tensor) -> torch.Tensor:
        """The scale shaped to multiply ``weight`` ([C_out, ...])."""
        s = self.scale()
        return s.view(-1, *([1] * (weight.dim() - 1))) if s.dim() else s


@dataclass(eq=False)
class SynapseQuant:
    """Integer description of one Conv/Linear (``module.integer_quant``)."""

    name: str
    module: nn.Module
    in_grid: float                           # x·in_grid is an integer (after input quantisation for the first)
    input_bits: int | None = None            # first layer: quantise the input to this many bits here
    group: ScaleGroup | None = None          # set by the neuron it feeds
    frac_bits: int = 0                       # likewise

    @property
    def first(self) -> bool:
        return self.input_bits is not None

    @property
    def input_qmax(self) -> int:
        return 2 ** (self.input_bits - 1) - 1

    def scale(self) -> torch.Tensor:
        """Weight scale s (float32; 0-d or [C_out])."""
        return self.group.scale()

    def current_scale(self) -> torch.Tensor:
        """S' = s·g·2^F in float64 (0-d or [C_out]): the membrane units of the neuron this synapse feeds."""
        return self.scale().double() * self.in_grid * 2.0 ** self.frac_bits

    def codes(self) -> torch.Tensor:
        """Weight codes round(s·W), float with the STE (differentiable in ``weight``)."""
        return weight_codes(self.module.weight, self.group.scale_for(self.module.weight))

    def bias_codes(self) -> torch.Tensor | None:
        """B = round(b·S') in float64 (no gradient), or None."""
        if self.module.bias is None:
            return None
        return (self.module.bias.detach().double() * self.current_scale()).round()

    def input_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer input of this synapse (float64 holding integers)."""
        y = (x.double() * self.in_grid).round()
        if self.first:
            y = y.clamp(-self.input_qmax, self.input_qmax)
        return y

    def forward(self, x: torch.Tensor, op) -> torch.Tensor:
        """The synapse's current ``(acc·2^F + B)/S'`` with ``op(x, weight, bias)`` the layer's operation."""
        channel_dim = 1
        if not torch.is_grad_enabled():  # evaluation: exact integer accumulation in float64
            key = self.group._key()
            cached = getattr(self, "_exact_cache", None)
            if cached is None or cached[0] != key:
                cached = (key, self.codes().detach().double())
                self._exact_cache = cached
            acc = op(self.input_codes(x), cached[1], None)
            current = acc * 2.0 ** self.frac_bits
            b = self.bias_codes()
            if b is not None:
                current = current + _channel_view(b, current.dim(), channel_dim)
            return current / _channel_view(self.current_scale(), current.dim(), channel_dim)
        s = self.group.scale_for(self.module.weight)
        w = self.codes() / s
        if self.first:
            x = (_round_ste(x * self.in_grid).clamp(-self.input_qmax, self.input_qmax)) / self.in_grid
        bias = None
        if self.module.bias is not None:
            scale = self.current_scale().to(self.module.bias.dtype)
            bias = _round_ste(self.module.bias * scale) / scale
        return op(x, w, bias)


class _IntegerConvMixin:
    integer_quant: SynapseQuant

    def _conv_forward(self, input, weight, bias):
        return self.integer_quant.forward(input, super()._conv_forward)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, integer weights"


class _IntegerLinearMixin:
    integer_quant: SynapseQuant

    def forward(self, input):
        return self.integer_quant.forward(input, F.linear)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, integer weights"


@dataclass(eq=False)
class IdentityQuant:
    """An identity shortcut on the integer grid: ``x·G/s`` with the per-channel gain ``G = round(s)``."""

    name: str
    module: nn.Module
    in_grid: float
    group: ScaleGroup | None = None
    frac_bits: int = 0

    def gain(self) -> torch.Tensor:
        return self.group.scale().round()

    def current_scale(self) -> torch.Tensor:
        return self.group.scale().double() * self.in_grid * 2.0 ** self.frac_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_dim = 2  # the identity sees the sequence [T, N, C, ...]
        if not torch.is_grad_enabled():
            acc = (x.double() * self.in_grid).round() * _channel_view(self.gain().double(), x.dim(), channel_dim)
            return acc * 2.0 ** self.frac_bits / _channel_view(self.current_scale(), x.dim(), channel_dim)
        s = self.group.scale()
        return x * _channel_view((self.gain() / s).to(x.dtype), x.dim(), channel_dim)


class _IntegerIdentityMixin:
    integer_quant: IdentityQuant

    def forward(self, x):
        return self.integer_quant.forward(x)


# ------------------------------------------------------------------------------------------------ neurons
class _SpikeWithSurrogate(torch.autograd.Function):
    """O = 1[H > Θ] on the integer membrane; backward: the surrogate g'((H − Θ)/S') / S' (float units)."""

    @staticmethod
    def forward(ctx, h, theta, scale, surrogate_id, p0, p1):
        ctx.save_for_backward(h, theta, scale)
        ctx.surrogate = (surrogate_id, p0, p1)
        return (h > theta).to(h.dtype)

    @staticmethod
    def backward(ctx, grad):
        h, theta, scale = ctx.saved_tensors
        sid, p0, p1 = ctx.surrogate
        sg = _surrogate.derivative(sid, (h - theta) / scale, p0, p1) / scale
        return grad * sg, None, None, None, None, None


@dataclass(eq=False)
class NeuronQuant:
    """Integer description of one neuron call site (``module.integer_quant``)."""

    name: str
    module: nn.Module
    spec: NeuronSpec
    inputs: list                          # SynapseQuant / IdentityQuant feeding it; empty: a pool feeds it
    pool_grid: float | None               # the grid of the pooled input when ``inputs`` is empty
    frac_bits: int
    leak_mult: int
    leak_shift: int
    membrane_bits: int

    def current_scale(self) -> torch.Tensor:
        if self.inputs:
            return self.inputs[0].current_scale()
        return torch.tensor(self.pool_grid * 2.0 ** self.frac_bits, dtype=torch.float64)

    def threshold(self) -> torch.Tensor:
        """Θ (float64 holding integers, 0-d or [C]): fire iff U > Θ."""
        x = self.spec.v_threshold * self.current_scale()
        return x.ceil() - 1 if self.spec.fire_on_tie else x.floor()

    @property
    def membrane_range(self) -> tuple[int, int]:
        return -(2 ** (self.membrane_bits - 1)), 2 ** (self.membrane_bits - 1) - 1

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Spikes ``[T, N, C, ...]`` (float32, or x's dtype when it is float16/bfloat16) for currents ``x_seq``."""
        ndim = x_seq.dim()
        scale = _channel_view(self.current_scale(), ndim, 2)
        theta = _channel_view(self.threshold(), ndim, 2)
        lo, hi = self.membrane_range
        m, k = self.leak_mult, self.leak_shift
        out_dtype = x_seq.dtype if x_seq.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
        if not torch.is_grad_enabled():  # exact: integers in float64
            current = (x_seq.double() * scale).round()
            u = torch.zeros_like(current[0])
            o = torch.zeros_like(u)
            spikes = []
            for t in range(current.shape[0]):
                v = u * (1.0 - o)
                u = torch.clamp(torch.floor(v * m / 2.0 ** k) + current[t], lo, hi)
                o = (u > theta).to(u.dtype)
                spikes.append(o)
            return torch.stack(spikes).to(out_dtype)
        work = torch.float32 if x_seq.dtype != torch.float64 else torch.float64
        scale, theta = scale.to(work), theta.to(work)
        current = _round_ste(x_seq.to(work) * scale)
        r = m / 2.0 ** k
        spec = self.spec
        u = torch.zeros_like(current[0])
        o = torch.zeros_like(u)
        spikes = []
        for t in range(current.shape[0]):
            v = u * (1.0 - o)
            leak = v * r
            leak = leak + (torch.floor(v * m / 2.0 ** k) - leak).detach()
            h = leak + current[t]
            h = h + (h.clamp(lo, hi) - h).detach()
            o = _SpikeWithSurrogate.apply(h, theta.expand_as(h), scale.expand_as(h), spec.surrogate_id,
                                          spec.surrogate_p0, spec.surrogate_p1)
            u = h
            spikes.append(o)
        return torch.stack(spikes).to(out_dtype)


class IntegerLIFMixin:
    """Mixed into a neuron module's class: its forward is the integer neuron of ``integer_quant``."""

    integer_quant: NeuronQuant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time_dim = getattr(self, "time_dim", 0)
        x_seq = x.movedim(time_dim, 0) if time_dim != 0 else x
        spikes = self.integer_quant.forward(x_seq)
        return spikes.movedim(0, time_dim) if time_dim != 0 else spikes

    def extra_repr(self) -> str:
        q = self.integer_quant
        return (f"{super().extra_repr()}, integer: membrane_bits={q.membrane_bits}, frac_bits={q.frac_bits}, "
                f"leak={q.leak_mult}/2^{q.leak_shift}")


# ------------------------------------------------------------------------------------------------ the plan
@dataclass(eq=False)
class PlanNode:
    """One node of the integer graph: ``op`` in input / synapse / identity / pool / flatten / neuron."""

    op: str
    src: list[int] = field(default_factory=list)    # indices of the nodes it reads
    quant: object = None                            # SynapseQuant / IdentityQuant / NeuronQuant
    name: str = ""
    pool_kernel: int | None = None                  # k of a k×k sum pool; None with pool_global
    pool_global: bool = False


@dataclass(eq=False)
class IntegerPlan:
    """The rewritten graph of an integer-prepared model (``model.integer_plan``)."""

    nodes: list[PlanNode]
    bits: int
    per_channel: bool
    profile: HardwareProfile
    input_bits: int
    input_scale: float
    input_range: float
    input_size: tuple[int, ...]
    steps: int
    global_pool_areas: dict = field(default_factory=dict)   # node index -> pooled H·W of a global pool

    def neurons(self) -> list[NeuronQuant]:
        return [n.quant for n in self.nodes if n.op == "neuron"]

    def frac_bits(self) -> dict[str, int]:
        """``{neuron name: F}``: pass it as ``frac_bits=`` to prepare the same network again (resuming)."""
        return {q.name: q.frac_bits for q in self.neurons()}


def is_integer_prepared(model: nn.Module) -> bool:
    return isinstance(getattr(model, "integer_plan", None), IntegerPlan)


def _pool_kernel(module: nn.Module, in_shape: tuple[int, ...] | None, name: str) -> tuple[int | None, bool, int]:
    """``(k, global, k²)`` of an average pool (a tdLayer around AvgPool2d(k) or AdaptiveAvgPool2d(1))."""
    pool = getattr(module, "layer", module)
    if isinstance(pool, nn.AvgPool2d):
        k = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
        ks = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (k, k)
        st = pool.stride if isinstance(pool.stride, tuple) else (pool.stride, pool.stride)
        pad = pool.padding if isinstance(pool.padding, tuple) else (pool.padding, pool.padding)
        if ks != (k, k) or st != ks or pad != (0, 0) or pool.ceil_mode or pool.divisor_override is not None:
            raise ValueError(f"pool {name!r}: only AvgPool2d(k) with stride k, no padding and no ceil_mode has an "
                             f"integer form (a k×k sum), got {pool}")
        return k, False, k * k
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        size = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size, pool.output_size)
        if tuple(size) != (1, 1) or in_shape is None:
            raise ValueError(f"pool {name!r}: only a global AdaptiveAvgPool2d((1, 1)) has an integer form")
        return None, True, int(in_shape[-1] * in_shape[-2])
    raise ValueError(f"pool {name!r}: {type(pool).__name__} is not an average pool")


def _pool_input_shapes(model: nn.Module, names: list[str], input_size: tuple[int, ...]) -> dict[str, tuple]:
    modules = dict(model.named_modules())
    shapes: dict[str, tuple] = {}

    def record(name):
        def hook(module, inputs, output):
            shapes.setdefault(name, tuple(inputs[0].shape))  # returns None: the output is kept
        return hook

    hooks = [modules[n].register_forward_hook(record(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes


def _check_neuron_spec(name: str, spec: NeuronSpec) -> None:
    if spec.family is not KernelFamily.CHARGE_FIRE_RESET:
        raise ValueError(f"neuron {name!r} ({spec.kind.value}) has no integer form here: only charge-fire-reset "
                         "neurons (IF / LIF / STBP LIF) do")
    if spec.v_reset != 0.0:
        raise ValueError(f"neuron {name!r}: the integer neuron resets hard to 0, this one has v_reset="
                         f"{spec.v_reset}")
    if spec.leak.law not in (LeakLaw.NONE, LeakLaw.RETENTION) and spec.decay_input:
        raise ValueError(f"neuron {name!r}: decay_input=True scales the input by 1/tau; the integer neuron takes "
                         "u_t = r·u_(t−1) + x_t (STBP's LIF, or LIFNode(decay_input=False))")
    if spec.leak.learnable:
        raise ValueError(f"neuron {name!r}: a learnable leak has no fixed integer form")


def prepare_integer(model: nn.Module, bits: int = 8, per_channel: bool = False, *,
                    profile: HardwareProfile | None = None, input_range: float | None = None,
                    input_bits: int | None = None, frac_bits: int | Mapping[str, int] | None = None,
                    fold_bn: bool = True,
                    input_size: tuple[int, ...] | None = None, steps: int | None = None) -> nn.Module:
    """Make ``model`` its integer network's exact fake-quant twin, in place (see the module docstring).

    Args:
        model: a model with ``integer_graph()`` (the STBP zoo); fp32 (not prepared before).
        bits: weight bits; ``per_channel``: one weight scale per output channel.
        profile: the hardware profile (membrane bits, input bits, leak bits); default the generic one for
            ``bits``. The export checks the network against it.
        input_range: the largest |value| of the model's input (for normalised images: max |(p − mean)/std|
            over pixels p in [0, 1]); the input is quantised to ``input_bits`` over ±input_range. Required.
        frac_bits: fractional bits F of the membrane, one for all neurons or ``{neuron name: F}`` (what
            ``model.integer_plan.frac_bits()`` returns). Default ``min(k·(T−1), 4)`` for a leak r = m/2^k
            (exact leak for T steps up to 4 bits; 4 for a leak that is not a binary fraction), lowered for a
            neuron whose threshold would take more than half of its register with the current weights.
        fold_bn: fold BatchNorm into the layers before it (required when the model has BatchNorm; uses the
            running statistics, so prepare a trained model, or train the folded model).
        input_size: (C, H, W) of one image (default ``model.pretrained_cfg.input_size``); sizes global pools.
        steps: time steps (default ``model.steps``).
    """
    if not hasattr(model, "integer_graph"):
        raise TypeError(f"{type(model).__name__} does not describe its graph (integer_graph()); integer "
                        "quantisation supports the STBP zoo models. Use prepare_qat(model, bits) for weights only")
    if is_integer_prepared(model) or any(is_fake_quant(m) for m in model.modules()):
        raise ValueError("the model is already prepared for QAT; build a fresh fp32 model")
    bits = check_bits(bits)
    profile = profile if profile is not None else generic_profile(bits)
    if not isinstance(profile, HardwareProfile):
        raise TypeError(f"profile must be a HardwareProfile, got {type(profile).__name__}")
    input_bits = check_bits(input_bits if input_bits is not None else profile.input_bits, "input_bits")
    if input_range is None or not (isinstance(input_range, int | float) and math.isfinite(input_range)
                                   and input_range > 0):
        raise ValueError(f"input_range must be the largest |value| of the model's input (> 0), got {input_range!r}")
    steps = int(steps if steps is not None else getattr(model, "steps", 2))
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        input_size = tuple(cfg.input_size) if cfg is not None else None
    graph = model.integer_graph()
    modules = dict(model.named_modules())

    def module(name: str) -> nn.Module:
        if name not in modules:
            raise ValueError(f"integer_graph() names {name!r}, which is not a module of {type(model).__name__}")
        return modules[name]

    pool_names = [s[1] for s in _flat_steps(graph) if s[0] == "pool"]
    shapes = _pool_input_shapes(model, pool_names, input_size) if pool_names and input_size else {}

    nodes: list[PlanNode] = [PlanNode("input", name="input")]
    input_qmax = 2 ** (input_bits - 1) - 1
    input_scale = input_qmax / float(input_range)
    global_areas: dict[int, int] = {}
    seen_synapses: set[int] = set()
    seen_neurons: set[int] = set()

    class Cursor:  # the walk's state: the node that holds the current tensor and its integer grid
        def __init__(self):
            self.node = 0
            self.grid: float | None = None   # None: the raw input (quantised by the first synapse)
            self.pending: list[int] = []     # synapse / identity nodes awaiting their neuron

    def new_node(node: PlanNode) -> int:
        nodes.append(node)
        return len(nodes) - 1

    def synapse(cur: Cursor, step) -> None:
        name = step[1]
        layer = module(name)
        if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            raise ValueError(f"synapse {name!r} is a {type(layer).__name__}, not a Conv/Linear layer")
        if len(step) > 2 and step[2] is not None:
            if not fold_bn:
                raise ValueError(f"{step[2]!r} is a BatchNorm after {name!r}; the integer network needs fold_bn=True")
            fold_batchnorm_into(layer, module(step[2]))
        if cur.pending:
            raise ValueError(f"synapse {name!r} reads the current of {nodes[cur.pending[-1]].name!r}, which has no "
                             "neuron in between")
        first = cur.grid is None
        quant = SynapseQuant(name, layer, input_scale if first else cur.grid, input_bits if first else None)
        seen_synapses.add(id(layer))
        idx = new_node(PlanNode("synapse", [cur.node], quant, name))
        cur.node, cur.pending = idx, [idx]

    def pool(cur: Cursor, step) -> None:
        name = step[1]
        if cur.pending:
            raise ValueError(f"pool {name!r} pools a current; the integer network pools spikes only")
        if cur.grid is None:
            raise ValueError(f"pool {name!r} pools the raw input; put a synapse first")
        k, is_global, area = _pool_kernel(module(name), shapes.get(name), name)
        cur.node = new_node(PlanNode("pool", [cur.node], None, name, pool_kernel=k, pool_global=is_global))
        if is_global:
            global_areas[cur.node] = area
        cur.grid = cur.grid * area

    def neuron(cur: Cursor, name: str, inputs: list[int]) -> None:
        lif = module(name)
        spec = getattr(lif, "spec", None)
        if not isinstance(spec, NeuronSpec):
            raise ValueError(f"neuron {name!r} ({type(lif).__name__}) has no NeuronSpec (module.spec)")
        _check_neuron_spec(name, spec)
        m, k, exact = leak_fraction(spec.leak.retention, profile.leak_bits)
        chosen = frac_bits.get(name) if isinstance(frac_bits, Mapping) else frac_bits
        if isinstance(frac_bits, Mapping) and chosen is None:
            raise ValueError(f"frac_bits gives no value for neuron {name!r}")
        f = chosen if chosen is not None else (min(k * (steps - 1), 4) if exact else 4)
        if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f <= 16:
            raise ValueError(f"frac_bits must be an integer in [0, 16], got {f!r} (neuron {name!r})")
        quants = [nodes[i].quant for i in inputs]
        # the default F is lowered where the threshold would take more than half of the register
        # (the first layer's units are s_w·s_in, two 8-bit scales)
        room = 2.0 ** (min(profile.threshold_bits, profile.membrane_bits) - 2)
        if quants:
            grids = {q.in_grid for q in quants}
            if len(grids) != 1:
                raise ValueError(f"neuron {name!r} sums currents from inputs on different grids {sorted(grids)}")
            weighted = [q.module for q in quants if isinstance(q, SynapseQuant)]
            identity = any(isinstance(q, IdentityQuant) for q in quants)
            group = ScaleGroup(weighted, bits, per_channel, identity)
            if chosen is None:
                units = float((group.scale().double() * quants[0].in_grid).max())
                while f > 0 and abs(spec.v_threshold) * units * 2.0 ** f > room:
                    f -= 1
            if abs(spec.v_threshold) > 0:
                # channels with tiny weights would need a threshold beyond the register: cap their scale
                group.max_scale = room / (abs(spec.v_threshold) * quants[0].in_grid * 2.0 ** f)
            for q in quants:
                q.group, q.frac_bits = group, f
            src, pool_grid = inputs, None
        else:
            if cur.grid is None or cur.grid == 1.0:
                raise ValueError(f"neuron {name!r} has no synapse or pool before it")
            src, pool_grid = [cur.node], cur.grid
            if chosen is None:
                while f > 0 and abs(spec.v_threshold) * pool_grid * 2.0 ** f > room:
                    f -= 1
        quant = NeuronQuant(name, lif, spec, quants, pool_grid, f, m, k, profile.membrane_bits)
        swap_class(lif, IntegerLIFMixin, "Integer")
        lif.integer_quant = quant
        seen_neurons.add(id(lif))
        cur.node = new_node(PlanNode("neuron", src, quant, name))
        cur.grid, cur.pending = 1.0, []

    def walk(cur: Cursor, steps_: list) -> None:
        for step in steps_:
            kind = step[0]
            if kind == "synapse":
                synapse(cur, step)
            elif kind == "pool":
                pool(cur, step)
            elif kind == "flatten":
                cur.node = new_node(PlanNode("flatten", [cur.node], None, "flatten"))
            elif kind == "neuron":
                neuron(cur, step[1], cur.pending)
            elif kind == "block":
                _, main, shortcut, lif_name = step
                if cur.pending or cur.grid != 1.0:
                    raise ValueError(f"block ending in {lif_name!r} must start from spikes")
                start = cur.node
                walk(cur, main)
                main_pending = cur.pending
                cur.node, cur.grid, cur.pending = start, 1.0, []
                if isinstance(shortcut, tuple) and shortcut and shortcut[0] == "identity":
                    ident = module(shortcut[1])
                    quant = IdentityQuant(shortcut[1], ident, 1.0)
                    swap_class(ident, _IntegerIdentityMixin, "Integer")
                    ident.integer_quant = quant
                    short_pending = [new_node(PlanNode("identity", [start], quant, shortcut[1]))]
                else:
                    walk(cur, shortcut)
                    short_pending = cur.pending
                neuron(cur, lif_name, main_pending + short_pending)
            else:
                raise ValueError(f"unknown integer_graph step {step!r}")

    cur = Cursor()
    walk(cur, graph)
    if cur.pending:
        raise ValueError("integer_graph() ends with a synapse that feeds no neuron")
    for name, layer in quantizable_layers(model):
        if id(layer) not in seen_synapses:
            raise ValueError(f"layer {name!r} is not in integer_graph(); it would stay float")
    # swap the synapse classes last, so a failed preparation leaves them untouched
    for node in nodes:
        if node.op == "synapse":
            layer = node.quant.module
            swap_class(layer, _IntegerLinearMixin if isinstance(layer, nn.Linear) else _IntegerConvMixin,
                       "Integer")
            layer.integer_quant = node.quant
    for name, mod in model.named_modules():
        if isinstance(getattr(mod, "spec", None), NeuronSpec) and id(mod) not in seen_neurons:
            raise ValueError(f"neuron {name!r} is not in integer_graph(); it would stay float")
    model.integer_plan = IntegerPlan(nodes, bits, bool(per_channel), profile, input_bits, input_scale,
                                     float(input_range), tuple(input_size) if input_size else (), steps,
                                     global_areas)
    return model


def _flat_steps(graph: list):
    for step in graph:
        if step[0] == "block":
            yield from _flat_steps(step[1])
            if isinstance(step[2], list):
                yield from _flat_steps(step[2])
        else:
            yield step
