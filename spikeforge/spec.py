"""Neuron descriptions: one typed, immutable answer to "what neuron is this?".

Every spiking module exposes ``module.spec``, a frozen :class:`NeuronSpec`. Everything that needs to know a
neuron's dynamics reads it — the kernels, the ANN→SNN converter, and later the quantiser, the exporters (NIR,
ONNX) and the energy report — and nothing re-derives a neuron from attribute names or float comparisons.

A spec holds:

=================  ==========================================================================================
``kind``           :class:`NeuronKind`: IF, LIF, PLIF, STBP_LIF, CONVERSION_IF, GROUP_LIF
``v_threshold``    V_th (a float; ``None`` when the module holds a per-channel threshold tensor)
``v_reset``        hard reset to this value, or ``None`` for a soft reset (subtract V_th on a spike)
``leak``           :class:`Leak`: the leak law and its parameter (see below)
``detach_reset``   the reset path is cut from the graph
``decay_input``    the input is scaled by the charge coefficient (SpikingJelly's ``decay_input``)
``fire_on_tie``    Θ(H − V_th) fires at H == V_th (SpikingJelly) or only above (STBP, SNN-MLP)
``surrogate``      :class:`SurrogateSpec` (enum + alpha, beta, spiking) or ``None`` (no surrogate gradient)
``binary_output``  the output is a {0, 1} spike tensor (False: graded values, e.g. SNN-MLP's max(u, V_th))
``state_dtype``    :class:`StateDtype`: the precision of the membrane for a given input dtype
``conversion``     :class:`ConversionOptions` for the ANN→SNN IF neuron, else ``None``
``group``          :class:`GroupOptions` for SNN-MLP's group LIF, else ``None``
=================  ==========================================================================================

The leak laws, written once (d is the *charge coefficient* of the reference kernel,
H_t = V_{t−1} − d·(V_{t−1} − V_r) + c·X_t, see :mod:`spikeforge.kernels.reference`):

=========================  ==================================  =================================================
law                        parameter (``leak.value``)          d
=========================  ==================================  =================================================
``NONE``                   —                                   0 (IF: no leak)
``TIME_CONSTANT``          τ > 1, in steps (SpikingJelly)      1/τ
``LEARNABLE_TIME_CONSTANT`` τ = 1/sigmoid(w), the current value sigmoid(w), w learnable (ParametricLIF)
``RETENTION``              r in [0, 1], kept per step (STBP)   1 − r   (u_t = r·u_{t−1} + x_t)
=========================  ==================================  =================================================

The SpikingJelly and STBP spellings (``v_threshold`` / ``v_th`` / ``Vth``, ``tau`` as a time constant or as a
retention factor) are translated into these fields once, in the module constructors; validation lives here, in
:meth:`NeuronSpec.__post_init__` and the ``check_*`` helpers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from enum import Enum, IntEnum

import torch

__all__ = [
    "NeuronKind",
    "DEFAULT_SURROGATE",
    "SurrogateKind",
    "SurrogateSpec",
    "LeakLaw",
    "Leak",
    "StateDtype",
    "ConversionOptions",
    "GroupOptions",
    "NeuronSpec",
    "KernelFamily",
    "if_spec",
    "lif_spec",
    "plif_spec",
    "stbp_lif_spec",
    "conversion_if_spec",
    "group_lif_spec",
    "check_threshold",
    "check_reset",
    "check_time_constant",
    "check_retention",
]


class NeuronKind(str, Enum):
    """Which neuron a module is (the family's name in the papers)."""

    IF = "if"                          # integrate-and-fire (SpikingJelly IFNode)
    LIF = "lif"                        # leaky integrate-and-fire with a time constant (LIFNode)
    PLIF = "plif"                      # LIF with a learnable time constant (ParametricLIFNode, Fang et al. 2021)
    STBP_LIF = "stbp_lif"              # STBP's LIF: u_t = r·u_{t−1}·(1 − o_{t−1}) + x_t (Wu et al. 2018)
    CONVERSION_IF = "conversion_if"    # soft-reset IF of ANN→SNN conversion (per-channel V_th, signed spikes)
    GROUP_LIF = "group_lif"            # SNN-MLP's full-precision group LIF along a spatial axis (Li et al. 2022)


class KernelFamily(str, Enum):
    """Which kernel contract runs a kind; the dispatch keeps one registry per family."""

    CHARGE_FIRE_RESET = "charge_fire_reset"   # IF, LIF, PLIF, STBP LIF: kernels/reference.py
    CONVERSION_IF = "conversion_if"           # kernels/conversion.py
    GROUP_LIF = "group_lif"                   # kernels/group.py


_FAMILY = {
    NeuronKind.IF: KernelFamily.CHARGE_FIRE_RESET,
    NeuronKind.LIF: KernelFamily.CHARGE_FIRE_RESET,
    NeuronKind.PLIF: KernelFamily.CHARGE_FIRE_RESET,
    NeuronKind.STBP_LIF: KernelFamily.CHARGE_FIRE_RESET,
    NeuronKind.CONVERSION_IF: KernelFamily.CONVERSION_IF,
    NeuronKind.GROUP_LIF: KernelFamily.GROUP_LIF,
}


class SurrogateKind(IntEnum):
    """The surrogate derivatives the kernels implement (formulas: :func:`spikeforge.surrogate.derivative`)."""

    SIGMOID = 0
    ATAN = 1
    PIECEWISE_QUADRATIC = 2
    PIECEWISE_EXP = 3
    SOFT_SIGN = 4
    SUPER_SPIKE = 5
    ERF = 6
    RECT = 7
    PIECEWISE_LEAKY_RELU = 8
    # Any other surrogate module (SpikingJelly's LeakyKReLU, S2NN, ... or a user's SurrogateFunctionBase
    # subclass): no fused kernel implements it; the reference kernel evaluates the module's own autograd
    # derivative, found through SurrogateSpec.custom (spikeforge.surrogate.spec_derivative).
    CUSTOM = 99


@dataclass(frozen=True)
class SurrogateSpec:
    """A surrogate gradient: g'(x) of kind ``kind`` with parameters ``alpha`` (and ``beta`` where it has two).

    ``spiking=False`` means the neuron emits the smooth g(H − V_th) instead of Θ (reference kernel only).
    ``kind=CUSTOM`` stands for a surrogate module the kernels do not implement: ``custom`` is its number in
    :mod:`spikeforge.surrogate`'s registry (``alpha``/``beta`` are unused); only the reference kernel runs it.
    """

    kind: SurrogateKind = SurrogateKind.SIGMOID
    alpha: float = 4.0
    beta: float = 0.0
    spiking: bool = True
    custom: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "kind", SurrogateKind(self.kind))
        alpha = float(self.alpha)
        if not math.isfinite(alpha) or alpha <= 0.0:
            raise ValueError(f"surrogate alpha must be a finite number > 0, got {self.alpha}")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", float(self.beta))
        object.__setattr__(self, "spiking", bool(self.spiking))
        if (self.kind is SurrogateKind.CUSTOM) != (self.custom is not None):
            raise ValueError("a CUSTOM surrogate spec needs its registry number (custom=...), and only it has one")
        if self.custom is not None:
            if isinstance(self.custom, bool) or not isinstance(self.custom, int) or self.custom < 0:
                raise ValueError(f"custom must be a registry number >= 0, got {self.custom!r}")


# SpikingJelly's default surrogate, Sigmoid(alpha=4): the one place this default is written.
DEFAULT_SURROGATE = SurrogateSpec(SurrogateKind.SIGMOID, 4.0)


class LeakLaw(str, Enum):
    """How the membrane leaks between steps; see the table in the module docstring."""

    NONE = "none"
    TIME_CONSTANT = "time_constant"
    LEARNABLE_TIME_CONSTANT = "learnable_time_constant"
    RETENTION = "retention"


@dataclass(frozen=True)
class Leak:
    """A leak law and its parameter. ``decay`` is the kernels' charge coefficient d; ``retention`` is 1 − d."""

    law: LeakLaw = LeakLaw.NONE
    value: float | None = None

    def __post_init__(self):
        law = LeakLaw(self.law)
        object.__setattr__(self, "law", law)
        if law is LeakLaw.NONE:
            if self.value is not None:
                raise ValueError("a neuron without leak takes no leak parameter")
        elif law is LeakLaw.RETENTION:
            # the [0, 1] range is checked where the value is chosen (constructors); a learnt one may leave it
            value = float(self.value) if isinstance(self.value, int | float) else self.value
            if not isinstance(value, float) or not math.isfinite(value):
                raise ValueError(f"a retention leak needs a finite factor, got {self.value!r}")
            object.__setattr__(self, "value", value)
        elif law is LeakLaw.TIME_CONSTANT or self.value is not None:
            object.__setattr__(self, "value", check_time_constant(self.value))

    @property
    def leaky(self) -> bool:
        """True when the membrane decays towards V_r between steps (every law but NONE)."""
        return self.law is not LeakLaw.NONE

    @property
    def learnable(self) -> bool:
        return self.law is LeakLaw.LEARNABLE_TIME_CONSTANT

    @property
    def decay(self) -> float:
        """The charge coefficient d (for a learnable law: of the value recorded in the spec)."""
        if self.law is LeakLaw.NONE:
            return 0.0
        if self.law is LeakLaw.RETENTION:
            return 1.0 - self.value
        if self.value is None:
            raise ValueError("this learnable leak carries no value; its decay comes from the module's parameter")
        return 1.0 / self.value

    @property
    def retention(self) -> float:
        """The share of the membrane kept per step, 1 − d."""
        return 1.0 - self.decay


class StateDtype(str, Enum):
    """The membrane's precision rule."""

    FLOAT32_OR_64 = "float32_or_64"   # float64 input → float64; every other input (incl. fp16/bf16) → float32

    def resolve(self, input_dtype: torch.dtype) -> torch.dtype:
        return torch.float64 if input_dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class ConversionOptions:
    """Options of the ANN→SNN IF neuron (see :class:`spikeforge.neuron.ConversionIFNode`)."""

    per_channel_threshold: bool = False   # one V_th per channel (held by the module as a tensor)
    signed_spikes: bool = False           # −1 spikes when the membrane goes negative after net positive firing
    half_threshold: bool = False          # the membrane starts at V_th/2 instead of 0
    emit_threshold: bool = False          # a spike has amplitude V_th instead of 1

    @property
    def initial_membrane_fraction(self) -> float:
        """V_0 / V_th."""
        return 0.5 if self.half_threshold else 0.0


@dataclass(frozen=True)
class GroupOptions:
    """SNN-MLP's group LIF: positions along axis ``dim`` in groups of ``group_size`` are the time steps."""

    group_size: int = 4
    dim: int = 2
    learnable_threshold: bool = True
    learnable_leak: bool = True

    def __post_init__(self):
        size = self.group_size
        if not isinstance(size, int) or isinstance(size, bool) or not (size == -1 or size >= 1):
            raise ValueError(f"lif must be -1 (identity) or a positive group size, got {size!r}")


@dataclass(frozen=True)
class NeuronSpec:
    """Everything a consumer needs to know about a neuron; see the module docstring for the fields."""

    kind: NeuronKind = NeuronKind.LIF
    v_threshold: float | None = 1.0
    v_reset: float | None = 0.0
    leak: Leak = field(default_factory=lambda: Leak(LeakLaw.TIME_CONSTANT, 2.0))
    detach_reset: bool = False
    decay_input: bool = True
    fire_on_tie: bool = True
    surrogate: SurrogateSpec | None = DEFAULT_SURROGATE
    binary_output: bool = True
    state_dtype: StateDtype = StateDtype.FLOAT32_OR_64
    conversion: ConversionOptions | None = None
    group: GroupOptions | None = None

    def __post_init__(self):
        kind = NeuronKind(self.kind)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "state_dtype", StateDtype(self.state_dtype))
        if self.v_threshold is not None:
            object.__setattr__(self, "v_threshold", check_threshold(self.v_threshold))
        elif kind is not NeuronKind.CONVERSION_IF:
            raise ValueError("v_threshold must be a finite number")
        object.__setattr__(self, "v_reset", check_reset(self.v_reset))
        for name in ("detach_reset", "decay_input", "fire_on_tie", "binary_output"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        if not isinstance(self.leak, Leak):
            raise TypeError(f"leak must be a spikeforge.spec.Leak, got {type(self.leak).__name__}")
        expected_law = {NeuronKind.IF: LeakLaw.NONE, NeuronKind.CONVERSION_IF: LeakLaw.NONE,
                        NeuronKind.LIF: LeakLaw.TIME_CONSTANT, NeuronKind.PLIF: LeakLaw.LEARNABLE_TIME_CONSTANT,
                        NeuronKind.STBP_LIF: LeakLaw.RETENTION, NeuronKind.GROUP_LIF: LeakLaw.RETENTION}[kind]
        if self.leak.law is not expected_law:
            raise ValueError(f"a {kind.value} neuron has leak law {expected_law.value}, got {self.leak.law.value}")
        if (kind is NeuronKind.CONVERSION_IF) != (self.conversion is not None):
            raise ValueError("conversion options belong to (and only to) the conversion IF neuron")
        if (kind is NeuronKind.GROUP_LIF) != (self.group is not None):
            raise ValueError("group options belong to (and only to) the group LIF neuron")
        # computed once: a plain attribute read is all a call (and torch.compile's tracing) pays for it
        object.__setattr__(self, "_key", self._make_key())

    # ----------------------------------------------------------------------------------------- derived facts
    @property
    def family(self) -> KernelFamily:
        """The kernel contract this neuron runs on (one dispatch registry per family)."""
        return _FAMILY[self.kind]

    @property
    def soft_reset(self) -> bool:
        """True: subtract V_th on a spike; False: set the membrane to ``v_reset``."""
        return self.v_reset is None

    @property
    def reset_value(self) -> float:
        """V_r in the charge equation: ``v_reset``, or 0 for a soft reset."""
        return 0.0 if self.v_reset is None else self.v_reset

    @property
    def leaky(self) -> bool:
        return self.leak.leaky

    @property
    def custom_surrogate(self) -> bool:
        """The surrogate is a module the fused kernels do not implement (reference kernel only)."""
        return self.surrogate is not None and self.surrogate.kind is SurrogateKind.CUSTOM

    @property
    def smooth(self) -> bool:
        """The surrogate runs in ``spiking=False`` mode: S = g(H − V_th) replaces Θ (reference kernel only)."""
        return self.surrogate is not None and not self.surrogate.spiking

    # What the kernels read of the surrogate: an integer id and two float parameters.
    @property
    def surrogate_id(self) -> int:
        return int(self.surrogate.kind) if self.surrogate is not None else int(SurrogateKind.SIGMOID)

    @property
    def surrogate_p0(self) -> float:
        return self.surrogate.alpha if self.surrogate is not None else 4.0

    @property
    def surrogate_p1(self) -> float:
        return self.surrogate.beta if self.surrogate is not None else 0.0

    def state_dtype_for(self, input_dtype: torch.dtype) -> torch.dtype:
        return self.state_dtype.resolve(input_dtype)

    def replace(self, **changes) -> NeuronSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------------- the spec as one opaque string
    @property
    def key(self) -> str:
        """A canonical string for this spec (how it travels through ``torch.library`` ops); see :meth:`from_key`.

        A learnable leak's current value is left out: it changes every optimiser step and reaches the kernel as
        a tensor, so the key (and a compiled graph holding it) stays the same while the parameter trains.
        """
        return self._key

    def _make_key(self) -> str:
        spec = self
        if self.leak.learnable and self.leak.value is not None:
            spec = dataclasses.replace(self, leak=Leak(self.leak.law, None))
        key = json.dumps(_plain(spec), sort_keys=True, separators=(",", ":"))
        _KNOWN.setdefault(key, spec)
        return key

    @staticmethod
    def from_key(key: str) -> NeuronSpec:
        """The spec whose :attr:`key` is ``key``."""
        spec = _KNOWN.get(key)
        return spec if spec is not None else _from_key_cached(key)

    def to_dict(self) -> dict:
        """Plain data (JSON-able): enums as their values, nested options as dicts."""
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict) -> NeuronSpec:
        data = dict(data)
        leak = data.pop("leak")
        surrogate = data.pop("surrogate")
        conversion = data.pop("conversion")
        group = data.pop("group")
        return cls(leak=Leak(**leak), surrogate=None if surrogate is None else SurrogateSpec(**surrogate),
                   conversion=None if conversion is None else ConversionOptions(**conversion),
                   group=None if group is None else GroupOptions(**group), **data)


_KNOWN: dict[str, NeuronSpec] = {}


@functools.lru_cache(maxsize=1024)
def _from_key_cached(key: str) -> NeuronSpec:
    return NeuronSpec.from_dict(json.loads(key))


def _plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    return obj


# ----------------------------------------------------------------------------------------------- validation
def check_threshold(v_threshold, name: str = "v_threshold") -> float:
    if isinstance(v_threshold, torch.Tensor) and v_threshold.numel() == 1:
        v_threshold = v_threshold.item()
    if isinstance(v_threshold, bool) or not isinstance(v_threshold, int | float):
        raise TypeError(f"{name} must be a number, got {type(v_threshold).__name__}")
    v_threshold = float(v_threshold)
    if not math.isfinite(v_threshold):
        raise ValueError(f"{name} must be a finite number, got {v_threshold}")
    return v_threshold


def check_reset(v_reset, name: str = "v_reset") -> float | None:
    if v_reset is None:
        return None
    if isinstance(v_reset, bool) or not isinstance(v_reset, int | float):
        raise TypeError(f"{name} must be a number or None (soft reset), got {type(v_reset).__name__}")
    v_reset = float(v_reset)
    if not math.isfinite(v_reset):
        raise ValueError(f"{name} must be a finite number or None (soft reset), got {v_reset}")
    return v_reset


def check_time_constant(tau, name: str = "tau") -> float:
    """τ of SpikingJelly's LIF: a membrane time constant in steps, > 1."""
    if isinstance(tau, bool) or not isinstance(tau, int | float):
        raise TypeError(f"{name} must be a number > 1, got {type(tau).__name__}")
    tau = float(tau)
    if not math.isfinite(tau) or tau <= 1.0:
        raise ValueError(f"{name} must be a finite number > 1 (the membrane time constant in steps), got {tau}")
    return tau


def check_retention(tau, name: str = "tau") -> float:
    """τ of STBP / SNN-MLP: the share of the membrane kept per step, in [0, 1]."""
    if isinstance(tau, torch.Tensor) and tau.numel() == 1:
        tau = tau.item()
    if isinstance(tau, bool) or not isinstance(tau, int | float):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(tau).__name__}")
    tau = float(tau)
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"{name} must be the multiplicative decay in [0, 1] (STBP uses 0.25), got {tau}")
    return tau


# ------------------------------------------------------------------------------- one constructor per kind
def if_spec(v_threshold=1.0, v_reset=0.0, surrogate: SurrogateSpec | None = None, detach_reset=False) -> NeuronSpec:
    """SpikingJelly's IFNode: H_t = V_{t−1} + X_t."""
    return NeuronSpec(NeuronKind.IF, v_threshold, v_reset, Leak(LeakLaw.NONE), detach_reset, decay_input=False,
                      fire_on_tie=True, surrogate=surrogate if surrogate is not None else DEFAULT_SURROGATE)


def lif_spec(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate: SurrogateSpec | None = None,
             detach_reset=False) -> NeuronSpec:
    """SpikingJelly's LIFNode with time constant ``tau`` (> 1): d = 1/τ."""
    return NeuronSpec(NeuronKind.LIF, v_threshold, v_reset, Leak(LeakLaw.TIME_CONSTANT, check_time_constant(tau)),
                      detach_reset, decay_input, fire_on_tie=True,
                      surrogate=surrogate if surrogate is not None else DEFAULT_SURROGATE)


def plif_spec(tau=None, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate: SurrogateSpec | None = None,
              detach_reset=False) -> NeuronSpec:
    """SpikingJelly's ParametricLIFNode: d = sigmoid(w), w learnable; ``tau`` records the current 1/d."""
    return NeuronSpec(NeuronKind.PLIF, v_threshold, v_reset, Leak(LeakLaw.LEARNABLE_TIME_CONSTANT, tau),
                      detach_reset, decay_input, fire_on_tie=True,
                      surrogate=surrogate if surrogate is not None else DEFAULT_SURROGATE)


def stbp_lif_spec(tau=0.25, v_th=0.4, surrogate: SurrogateSpec | None = None) -> NeuronSpec:
    """STBP's LIFSpike: u_t = τ·u_{t−1}·(1 − o_{t−1}) + x_t, o_t = 1[u_t > V_th]; τ is a retention factor."""
    return NeuronSpec(NeuronKind.STBP_LIF, v_th, 0.0, Leak(LeakLaw.RETENTION, check_retention(tau)),
                      detach_reset=False, decay_input=False, fire_on_tie=False,
                      surrogate=surrogate if surrogate is not None else SurrogateSpec(SurrogateKind.RECT, 1.0))


def conversion_if_spec(v_threshold=1.0, per_channel_threshold=False, half_threshold=False, signed_spikes=False,
                       emit_threshold=False) -> NeuronSpec:
    """Soft-reset IF for ANN→SNN conversion (inference only: no surrogate)."""
    return NeuronSpec(NeuronKind.CONVERSION_IF, None if per_channel_threshold else v_threshold, None,
                      Leak(LeakLaw.NONE), detach_reset=False, decay_input=False, fire_on_tie=True, surrogate=None,
                      binary_output=not (signed_spikes or emit_threshold),
                      conversion=ConversionOptions(per_channel_threshold, signed_spikes, half_threshold,
                                                   emit_threshold))


def group_lif_spec(tau=0.25, v_th=0.1, group_size=4, dim=2, learnable_leak=True,
                   learnable_threshold=True) -> NeuronSpec:
    """SNN-MLP's group LIF: u_j = τ·o_j + x_j, hard reset to 0, strict fire, output max(u, V_th) (graded)."""
    return NeuronSpec(NeuronKind.GROUP_LIF, v_th, 0.0, Leak(LeakLaw.RETENTION, check_retention(tau)),
                      detach_reset=False, decay_input=False, fire_on_tie=False, surrogate=None, binary_output=False,
                      group=GroupOptions(group_size, dim, learnable_threshold, learnable_leak))
