"""SpikingJelly 2.0's teaching / customisation interface: ``SimpleBaseNode``, ``SimpleIFNode``, ``SimpleLIFNode``.

These neurons are written as Python methods — ``neuronal_charge(x)`` updates ``self.v``, ``neuronal_fire()``
returns the spikes, ``neuronal_reset(spike)`` resets — and always run step by step as ordinary autograd
operations (the reference path of :mod:`spikeforge.neuron._dynamics`, logged once per class). Subclass
:class:`SimpleBaseNode` and override ``neuronal_charge`` to try a new neuron; for speed, use the fused
:class:`~spikeforge.neuron.IFNode` / :class:`~spikeforge.neuron.LIFNode` once the equations are among theirs.

As in SpikingJelly 2.0, ``v`` starts at 0.0 (not at ``v_reset``) and these classes take no ``store_v_seq``.
A ``SimpleIFNode`` / ``SimpleLIFNode`` whose methods are not overridden describes itself with the IF / LIF
:class:`~spikeforge.spec.NeuronSpec` (``module.spec``) so the exporters and the energy report see it; a subclass
that changes the dynamics has ``spec = None``.
"""

from __future__ import annotations

import torch

from .. import surrogate
from ..base import MemoryModule
from ..spec import NeuronSpec, check_reset, check_threshold, check_time_constant, if_spec, lif_spec
from ._dynamics import LIBRARY_STEPS, PythonDynamics, log_python_path, overrides_dynamics


class SimpleBaseNode(PythonDynamics, MemoryModule):
    """A neuron defined by its Python ``neuronal_charge`` (SpikingJelly's ``SimpleBaseNode``).

    Per step: ``neuronal_charge(x)`` (yours: H = f(V, X) into ``self.v``), then
    S = ``surrogate_function``(H − V_th) and the reset V = S_r·V_reset + (1 − S_r)·H (hard) or V = H − S_r·V_th
    (``v_reset=None``), S_r = S or S.detach() (``detach_reset``). Multi-step mode runs the T steps in a loop.
    """

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
    ):
        super().__init__(step_mode)
        if surrogate_function is None:
            surrogate_function = surrogate.default()
        if not callable(surrogate_function):
            raise TypeError(f"surrogate_function must be callable, got {type(surrogate_function).__name__}")
        self.v_threshold = check_threshold(v_threshold)
        self.v_reset = check_reset(v_reset)
        self.surrogate_function = surrogate_function
        self.detach_reset = bool(detach_reset)
        self.register_memory("v", 0.0)

    @property
    def spec(self) -> NeuronSpec | None:
        """None: the dynamics are Python methods (see :class:`SimpleIFNode` / :class:`SimpleLIFNode`)."""
        return None

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        log_python_path(type(self))
        return self._python_step(x)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self._python_multi_step(x_seq, store_v_seq=False)[0]

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self.step_mode}")


LIBRARY_STEPS.add(SimpleBaseNode.single_step_forward)


class _DescribedSimpleNode(SimpleBaseNode):
    """A Simple* neuron that has a spec as long as a subclass does not change its dynamics."""

    _owner: type

    def _build_spec(self) -> NeuronSpec:
        raise NotImplementedError

    @property
    def spec(self) -> NeuronSpec | None:
        cls = type(self)
        if overrides_dynamics(cls, cls._owner) or cls.single_step_forward is not SimpleBaseNode.single_step_forward:
            return None
        sg = self.surrogate_function
        if not isinstance(sg, surrogate.SurrogateFunctionBase):
            return None
        return self._build_spec()


class SimpleIFNode(_DescribedSimpleNode):
    """Integrate-and-fire in Python: H_t = V_{t−1} + X_t (SpikingJelly's ``SimpleIFNode``)."""

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = self.v + x

    def _build_spec(self) -> NeuronSpec:
        return if_spec(self.v_threshold, self.v_reset, self.surrogate_function.spec, self.detach_reset)


class SimpleLIFNode(_DescribedSimpleNode):
    """Leaky integrate-and-fire in Python (SpikingJelly's ``SimpleLIFNode``; ``tau`` and ``decay_input`` have no
    default there, and none here):

    decay_input=True:  H_t = V_{t−1} + (V_reset − V_{t−1} + X_t) / τ
    decay_input=False: H_t = V_{t−1} + (V_reset − V_{t−1}) / τ + X_t
    """

    def __init__(
        self,
        tau: float,
        decay_input: bool,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode)
        self.tau = check_time_constant(tau)
        self.decay_input = bool(decay_input)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        v_reset = 0.0 if self.v_reset is None else self.v_reset
        if self.decay_input:
            self.v = self.v + (v_reset - self.v + x) / self.tau
        else:
            self.v = self.v + (v_reset - self.v) / self.tau + x

    def _build_spec(self) -> NeuronSpec:
        return lif_spec(self.tau, self.decay_input, self.v_threshold, self.v_reset, self.surrogate_function.spec,
                        self.detach_reset)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


SimpleIFNode._owner = SimpleIFNode
SimpleLIFNode._owner = SimpleLIFNode

__all__ = ["SimpleBaseNode", "SimpleIFNode", "SimpleLIFNode"]
