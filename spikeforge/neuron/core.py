"""The charge-fire-reset neurons: SpikingJelly's IFNode / LIFNode / ParametricLIFNode and STBP's LIFSpike.

Thin modules: each holds its hyper-parameters and state, exposes its :class:`~spikeforge.spec.NeuronSpec` as
``module.spec`` and calls :func:`spikeforge.functional.neuron_multi_step` (the equations live once, in
:mod:`spikeforge.kernels.reference`). The SpikingJelly and STBP spellings are translated into the spec here, in
the constructors (``tau`` of ``LIFNode`` is a time constant > 1; ``tau`` of ``LIFSpike`` is a retention factor
in [0, 1]; ``v_th`` is STBP's ``v_threshold``). Single-step mode is the same kernel with T = 1, so both modes
compute identical numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .. import functional as F
from .. import surrogate
from ..base import MemoryModule, StepModule
from ..spec import (
    NeuronSpec,
    SurrogateKind,
    SurrogateSpec,
    check_reset,
    check_retention,
    check_threshold,
    check_time_constant,
    if_spec,
    lif_spec,
    plif_spec,
    stbp_lif_spec,
)
from ._dynamics import LIBRARY_STEPS, PythonDynamics, log_python_path, overrides_dynamics


class BaseNode(PythonDynamics, MemoryModule):
    """Charge → fire → reset neuron (SpikingJelly's ``neuron.BaseNode``).

    Positional arguments follow SpikingJelly 2.0: ``(v_threshold, v_reset, surrogate_function, detach_reset,
    step_mode, store_v_seq)``; spikeforge's kernel choice ``backend`` is keyword-only.

    **Built-in neurons** (IF / LIF / ParametricLIF) build a :class:`~spikeforge.spec.NeuronSpec` in
    :meth:`_build_spec` and run through :func:`spikeforge.functional.neuron_multi_step` (a fused kernel);
    ``module.spec`` is rebuilt (and validated) only when a hyper-parameter changed. ``v`` starts as the float
    ``v_reset`` (0.0 for soft reset) and becomes a tensor shaped like one step of the input, in the spec's state
    dtype, on first use.

    **Your own neuron**: subclass and override ``neuronal_charge(self, x)`` (update ``self.v`` from the input),
    and optionally ``neuronal_fire()`` / ``neuronal_reset(spike)``; add state with ``register_memory``. Such a
    class (detected once per class, by comparing its methods with the built-in it derives from) runs the Python
    step loop of :mod:`spikeforge.neuron._dynamics` — one autograd graph over T, any surrogate callable — and logs
    that once (``spikeforge.neuron``, INFO). It has no ``spec`` (``module.spec is None``): the exporters, the
    quantiser and the energy report do not know its equations. SpikingJelly 2.0's
    ``single_step_functional_forward(inputs, states)`` is honoured too (see :meth:`single_step_forward`).
    """

    # True: the dynamics are Python methods; False: they are the spec's (set in the class body of a built-in)
    _python_dynamics: bool = True
    decay_input: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_python_dynamics" in cls.__dict__:
            return
        owner = next(c for c in cls.__mro__[1:] if "_python_dynamics" in c.__dict__)
        cls._python_dynamics = (owner._python_dynamics or overrides_dynamics(cls, owner)
                                or cls.single_step_functional_forward is not BaseNode.single_step_functional_forward)

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(step_mode)
        if surrogate_function is None:
            surrogate_function = surrogate.default()
        if not type(self)._python_dynamics:
            F.surrogate_spec(surrogate_function)  # type check (a Python neuron may use any callable)
        elif not callable(surrogate_function):
            raise TypeError(f"surrogate_function must be callable, got {type(surrogate_function).__name__}")
        self.v_threshold = check_threshold(v_threshold)
        self.v_reset = check_reset(v_reset)
        self.surrogate_function = surrogate_function
        self.detach_reset = bool(detach_reset)
        self.backend = F.check_backend(backend)
        self.store_v_seq = check_store_v_seq(store_v_seq)
        self._spec_cache: tuple | None = None
        self.register_memory("v", 0.0 if v_reset is None else float(v_reset))
        self.register_memory("v_seq", None)

    def _spec_inputs(self) -> tuple:
        sg = self.surrogate_function
        return (self.v_threshold, self.v_reset, self.detach_reset, self.decay_input, type(sg), sg.kernel_params,
                sg.spiking)

    def _build_spec(self) -> NeuronSpec:
        raise NotImplementedError(f"{type(self).__name__} subclasses BaseNode: define neuronal_charge(self, x)")

    def _kernel_spec(self) -> NeuronSpec:
        """The spec the kernels get (validated; rebuilt only when a hyper-parameter was changed)."""
        inputs = self._spec_inputs()
        cache = self._spec_cache
        if cache is None or cache[0] != inputs:
            cache = (inputs, self._build_spec())
            self._spec_cache = cache
        return cache[1]

    def _describe(self) -> NeuronSpec:
        return self._kernel_spec()

    @property
    def spec(self) -> NeuronSpec | None:
        """This neuron's description; ``None`` for a neuron whose dynamics are Python methods."""
        return None if type(self)._python_dynamics else self._describe()

    def _decay(self, spec: NeuronSpec, x_seq: torch.Tensor) -> torch.Tensor | None:
        """The learnable charge coefficient as a tensor (ParametricLIF), else None (it is in the spec)."""
        return None

    # ------------------------------------------------------------------ SpikingJelly's per-step protocol
    @staticmethod
    def apply_hard_reset(v: torch.Tensor, spike: torch.Tensor, v_reset: float) -> torch.Tensor:
        """V = (1 − S)·H + S·V_reset."""
        return (1.0 - spike) * v + spike * v_reset

    @staticmethod
    def apply_soft_reset(v: torch.Tensor, spike: torch.Tensor, v_threshold: float) -> torch.Tensor:
        """V = H − S·V_th."""
        return v - spike * v_threshold

    jit_hard_reset = apply_hard_reset  # SpikingJelly 0.0.0.0.14's names
    jit_soft_reset = apply_soft_reset

    def neuronal_charge(self, x: torch.Tensor) -> None:
        """H = V − d·(V − V_r) + c·X with the spec's d and c (what ``super().neuronal_charge(x)`` runs in a
        subclass of a built-in); a direct subclass of BaseNode must define its own."""
        if type(self)._build_spec is BaseNode._build_spec:
            PythonDynamics.neuronal_charge(self, x)
        spec = self._kernel_spec()
        decay = self._decay(spec, x.unsqueeze(0))
        d = spec.leak.decay if decay is None else decay.to(x.dtype)
        v_r = spec.reset_value
        self.v = self.v - d * (self.v - v_r) + (d * x if spec.decay_input else x)

    def single_step_functional_forward(self, inputs: tuple, states: tuple, **kwargs):
        """SpikingJelly 2.0's explicit-state step; override it (returning ``(outputs, states)``) instead of
        ``neuronal_charge`` if you prefer. ``states`` are the registered memories (``v`` first) without
        ``v_seq``, floats already turned into tensors like the input."""
        raise NotImplementedError(f"{type(self).__name__} does not define single_step_functional_forward")

    def _state_names(self) -> list[str]:
        return [name for name in self._memories if name != "v_seq"]

    def _python_step(self, x: torch.Tensor) -> torch.Tensor:
        if type(self).single_step_functional_forward is BaseNode.single_step_functional_forward:
            return super()._python_step(x)
        names = self._state_names()
        states = tuple(torch.full_like(x.data, float(self._memories[n])) if isinstance(self._memories[n], int | float)
                       else self._memories[n] for n in names)
        outputs, states = self.single_step_functional_forward((x,), states)
        for name, value in zip(names, states, strict=True):
            self._memories[name] = value
        return outputs[0] if len(outputs) == 1 else outputs

    # --------------------------------------------------------------------------------------- forward
    def _run(self, x_seq: torch.Tensor, store_v_seq: bool):
        F.check_sequence(x_seq, "x" if self.step_mode == "s" else "x_seq")
        spec = self._kernel_spec()
        v0 = F.initial_state(x_seq, self.v, spec, name="the stored membrane v")
        spike_seq, v_last, v_seq = F.neuron_multi_step(x_seq, v0, spec, self._decay(spec, x_seq), store_v_seq,
                                                       self.backend)
        self.v = v_last
        return spike_seq, v_seq

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step. With ``store_v_seq`` the membrane after the step is appended to ``v_seq`` (as SpikingJelly
        2.0 does in single-step mode) until :meth:`reset`."""
        if not isinstance(x, torch.Tensor):
            raise ValueError("x must be a tensor of shape [N, ...] in single-step mode")
        if x.dim() == 0:
            # One neuron fed a 0-d tensor (SpikingJelly's recurrent-container docstring does this): run it as a
            # one-element layer and hand back 0-d spike and membrane, as SpikingJelly does.
            if isinstance(self.v, torch.Tensor):
                self.v = self.v.reshape(1)
            spike = self.single_step_forward(x.reshape(1)).reshape(())
            if isinstance(self.v, torch.Tensor):
                self.v = self.v.reshape(())
            return spike
        if type(self)._python_dynamics:
            log_python_path(type(self))
            spike = self._python_step(x)
        else:
            spike = self._run(x.unsqueeze(0), store_v_seq=False)[0][0]
        if self.store_v_seq and isinstance(self.v, torch.Tensor):
            self._append_v_seq(self.v)
        return spike

    def _append_v_seq(self, v: torch.Tensor) -> None:
        step = v.unsqueeze(0)
        seq = self.v_seq
        if seq is None or seq.shape[1:] != step.shape[1:] or seq.device != step.device or seq.dtype != step.dtype:
            self.v_seq = step.clone()
        else:
            self.v_seq = torch.cat((seq, step))

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if type(self)._python_dynamics:
            F.check_sequence(x_seq)
            spike_seq, v_seq = self._python_multi_step(x_seq, self.store_v_seq)
        else:
            spike_seq, v_seq = self._run(x_seq, store_v_seq=self.store_v_seq)
        if self.store_v_seq:
            self.v_seq = v_seq
        return spike_seq

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self.step_mode}, backend={self.backend}")


LIBRARY_STEPS.add(BaseNode.single_step_forward)


def check_store_v_seq(store_v_seq) -> bool:
    """``store_v_seq`` is SpikingJelly 2.0's sixth positional argument of IFNode (there is no ``backend`` slot)."""
    if isinstance(store_v_seq, str):
        raise TypeError(f"store_v_seq must be a bool, got the string {store_v_seq!r}: SpikingJelly 2.0's positional "
                        "order is (v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq); "
                        "choose the kernel with the keyword backend=...")
    return bool(store_v_seq)


class IFNode(BaseNode):
    """Integrate-and-fire: H_t = V_{t−1} + X_t; fire S_t = Θ(H_t − V_th); hard or soft reset."""

    _python_dynamics = False

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        self._kernel_spec()  # validate the hyper-parameters now, not at the first call

    def _build_spec(self) -> NeuronSpec:
        return if_spec(self.v_threshold, self.v_reset, self.surrogate_function.spec, self.detach_reset)


class LIFNode(BaseNode):
    """Leaky integrate-and-fire with time constant ``tau`` (> 1).

    decay_input=True:  H_t = V_{t−1} + (X_t − (V_{t−1} − V_reset)) / τ
    decay_input=False: H_t = V_{t−1} − (V_{t−1} − V_reset) / τ + X_t
    (V_reset = 0 in the charge for soft reset), then fire and reset as :class:`IFNode`.
    """

    _python_dynamics = False

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        self.tau = check_time_constant(tau)
        self.decay_input = bool(decay_input)
        self._kernel_spec()  # validate now

    def _spec_inputs(self) -> tuple:
        return (*super()._spec_inputs(), self.tau)

    def _build_spec(self) -> NeuronSpec:
        return lif_spec(self.tau, self.decay_input, self.v_threshold, self.v_reset, self.surrogate_function.spec,
                        self.detach_reset)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class ParametricLIFNode(BaseNode):
    """LIF with a learnable time constant (Fang et al. 2021): 1/τ = sigmoid(w), w₀ = −log(init_tau − 1)."""

    _python_dynamics = False

    def __init__(
        self,
        init_tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        init_tau = F.check_tau(init_tau, "init_tau")
        self.decay_input = bool(decay_input)
        self.w = nn.Parameter(torch.tensor(-math.log(init_tau - 1.0)))
        self._kernel_spec()  # validate now

    @property
    def tau(self) -> float:
        """The current time constant 1/sigmoid(w)."""
        return 1.0 / torch.sigmoid(self.w.detach().double()).item()

    def _describe(self) -> NeuronSpec:
        """The description with the current τ (the kernels' spec leaves the value out: d arrives as a tensor)."""
        return self._kernel_spec().replace(leak=plif_spec(self.tau).leak)

    def _decay(self, spec: NeuronSpec, x_seq: torch.Tensor) -> torch.Tensor:
        return F.plif_decay(self.w, spec.state_dtype_for(x_seq.dtype))

    def _build_spec(self) -> NeuronSpec:
        return plif_spec(None, self.decay_input, self.v_threshold, self.v_reset, self.surrogate_function.spec,
                         self.detach_reset)

    def extra_repr(self) -> str:
        return f"tau={self.tau:.4g}, decay_input={self.decay_input}, " + super().extra_repr()


class LIFSpike(nn.Module):
    """The STBP LIF neuron (Wu et al. 2018; tdBN, Zheng et al. 2021), used like an activation.

    u_t = τ·u_{t−1}·(1 − o_{t−1}) + x_t,   o_t = 1[u_t > V_th]  (strict),   u_0 = 0,

    with τ a multiplicative decay (0.25) and V_th = 0.4 by default, both per instance. The reset path is
    differentiable (o_{t−1} is not detached); ∂o/∂u is the STBP rectangle (1/(2a))·1[|u − V_th| < a], a = 0.5,
    centred at the threshold (the STBP repository centres it at 0 by a bug).

    Like STBP's LIFSpike it consumes a whole sequence per call and keeps no state between calls. spikeforge is
    time-first ([T, N, ...]); pass ``time_dim=-1`` for STBP's time-last tensors ([N, ..., T]).
    """

    def __init__(self, tau: float = 0.25, v_th: float = 0.4, a: float = 0.5, time_dim: int = 0,
                 surrogate_function: surrogate.SurrogateFunctionBase | None = None, backend: str | None = None):
        super().__init__()
        self.surrogate_function = surrogate_function if surrogate_function is not None else surrogate.STBPRectangle(a)
        F.surrogate_spec(self.surrogate_function)  # type check
        self.tau = check_retention(tau)
        self.v_th = check_threshold(v_th, "v_th")
        self.time_dim = int(time_dim)
        self.backend = F.check_backend(backend)
        self._spec_cache: tuple | None = None
        self.spec  # noqa: B018 - validate now

    @property
    def spec(self) -> NeuronSpec:
        """STBP's spellings translated: ``tau`` is the retention factor r, ``v_th`` the threshold."""
        sg = self.surrogate_function
        inputs = (self.tau, self.v_th, type(sg), sg.kernel_params, sg.spiking)
        if self._spec_cache is None or self._spec_cache[0] != inputs:
            self._spec_cache = (inputs, stbp_lif_spec(self.tau, self.v_th, sg.spec))
        return self._spec_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.movedim(self.time_dim, 0) if self.time_dim != 0 else x
        F.check_sequence(x_seq, "x")
        spike_seq, _, _ = F.neuron_multi_step(x_seq, 0.0, self.spec, None, False, self.backend)
        return spike_seq.movedim(0, self.time_dim) if self.time_dim != 0 else spike_seq

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_th={self.v_th}, time_dim={self.time_dim}"


__all__ = ["MemoryModule", "StepModule", "BaseNode", "IFNode", "LIFNode", "ParametricLIFNode", "LIFSpike",
           "NeuronSpec", "SurrogateKind", "SurrogateSpec"]
