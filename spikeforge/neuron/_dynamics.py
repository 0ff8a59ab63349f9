"""The Python step path: SpikingJelly's ``neuronal_charge`` → ``neuronal_fire`` → ``neuronal_reset`` protocol.

A neuron whose dynamics the user wrote in Python (a subclass of :class:`~spikeforge.neuron.BaseNode` or
:class:`~spikeforge.neuron.SimpleBaseNode` that overrides ``neuronal_charge``, ``neuronal_fire`` or
``neuronal_reset``) cannot run on a fused kernel: the kernels only know the charge laws of
:class:`~spikeforge.spec.NeuronSpec`. It runs here instead, one time step after another, as ordinary autograd
operations (so the T steps form one autograd graph and any surrogate module works), and says so once per class in
the ``spikeforge.neuron`` log (level INFO).

Per step, with the membrane ``self.v`` (a float until the first input, then a tensor shaped like one step):

    neuronal_charge(x)   user-defined: H = f(V, X), stored in ``self.v``
    neuronal_fire()      S = surrogate_function(H − V_th)            (Θ forward, surrogate gradient backward)
    neuronal_reset(S)    hard: V = S_r·V_reset + (1 − S_r)·H;  soft (v_reset None): V = H − S_r·V_th
                         S_r = S, or S.detach() when ``detach_reset``
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger("spikeforge.neuron")

# the three methods that define a neuron's dynamics in SpikingJelly's protocol
DYNAMICS_METHODS = ("neuronal_charge", "neuronal_fire", "neuronal_reset")

_logged: set[type] = set()


def log_python_path(cls: type, why: str = "") -> None:
    """Say once per class that its neurons run the Python step loop, not a fused kernel."""
    if cls in _logged:
        return
    _logged.add(cls)
    logger.info("spikeforge: %s runs its Python neuronal_charge/fire/reset step by step (the reference path, "
                "one autograd graph over T), not a fused kernel%s", cls.__qualname__, f" ({why})" if why else "")


def overrides_dynamics(cls: type, owner: type) -> bool:
    """True when ``cls`` replaces one of ``owner``'s dynamics methods (a class-attribute comparison)."""
    return any(getattr(cls, name, None) is not getattr(owner, name, None) for name in DYNAMICS_METHODS)


class PythonDynamics:
    """Mixin for modules with ``v``, ``v_threshold``, ``v_reset``, ``surrogate_function`` and ``detach_reset``."""

    def v_float_to_tensor(self, x: torch.Tensor) -> None:
        """Turn a float membrane (the initial value) into a tensor shaped like ``x``."""
        if not isinstance(self.v, torch.Tensor):
            self.v = torch.full_like(x.data, float(self.v))

    def neuronal_charge(self, x: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define neuronal_charge(self, x), which updates self.v")

    def neuronal_fire(self) -> torch.Tensor:
        return self.surrogate_function(self.v - self.v_threshold)

    def neuronal_reset(self, spike: torch.Tensor) -> None:
        spike_d = spike.detach() if self.detach_reset else spike
        if self.v_reset is None:
            self.v = self.v - self.v_threshold * spike_d
        else:
            self.v = spike_d * self.v_reset + (1.0 - spike_d) * self.v

    def _python_step(self, x: torch.Tensor) -> torch.Tensor:
        self.v_float_to_tensor(x)
        self.neuronal_charge(x)
        spike = self.neuronal_fire()
        self.neuronal_reset(spike)
        return spike

    def _python_multi_step(self, x_seq: torch.Tensor, store_v_seq: bool):
        """T Python steps; returns ``(output_seq, v_seq or None)`` (``v_seq``: ``self.v`` after each step)."""
        log_python_path(type(self))
        # a subclass that rewrote single_step_forward (e.g. to add a refractory state) defines the step itself
        step = self._python_step if type(self).single_step_forward in LIBRARY_STEPS else self.single_step_forward
        outputs, v_seq = [], []
        for x in x_seq:
            outputs.append(step(x))
            if store_v_seq:
                v_seq.append(self.v)
        return torch.stack(outputs), (torch.stack(v_seq) if store_v_seq else None)


# the library's own single_step_forward functions (registered by the neuron classes that define them)
LIBRARY_STEPS: set = set()
