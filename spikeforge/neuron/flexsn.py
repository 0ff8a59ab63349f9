r"""``FlexSN``: a stateful neuron from a pure single-step function (SpikingJelly 2.0's ``FlexSN``; reference path).

``core(*step_inputs, *states, *static_inputs) -> (*outputs, *new_states)`` describes one time step; the last
``num_states`` returned tensors are the new states. The states start at zero (shaped like one step of the first
input) and persist between calls until :meth:`reset`. ``static_inputs`` are tensors passed unchanged at every step
(an ``nn.Parameter`` is registered as a parameter and learns; other tensors become buffers). In multi-step mode
the T steps run as a Python loop of ordinary autograd operations (SpikingJelly lowers it to a scan or a Triton
kernel on CUDA; the numbers are the same); ``store_state_seqs=True`` keeps ``state_seqs``, the ``[T, ...]``
sequences of every state. A call returns the single output, or the tuple of outputs.

The core must not capture tensors or modules (pass them as ``static_inputs``), so that the module owns them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
import torch.nn as nn

from ..base import MemoryModule
from ._dynamics import log_python_path

__all__ = ["FlexSN"]


def _as_tuple(value) -> tuple:
    return (value,) if isinstance(value, torch.Tensor) else tuple(value)


def _holds_tensor(value) -> bool:
    if isinstance(value, torch.Tensor | nn.Module):
        return True
    if isinstance(value, functools.partial):
        return _holds_tensor(value.func) or _holds_tensor(value.args) or _holds_tensor(value.keywords)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    if isinstance(value, tuple | list):
        return any(_holds_tensor(v) for v in value)
    return False


def _check_core(core: Callable) -> None:
    if isinstance(core, nn.Module):
        raise TypeError("FlexSN core must be a pure callable, not an nn.Module: pass its tensors as static_inputs")
    if isinstance(core, functools.partial) and _holds_tensor(core):
        raise TypeError("FlexSN core cannot bind tensors with functools.partial: pass them as static_inputs")
    while isinstance(core, functools.partial):
        core = core.func
    for cell in getattr(core, "__closure__", None) or ():
        try:
            captured = cell.cell_contents
        except ValueError:
            continue
        if _holds_tensor(captured):
            raise TypeError("FlexSN core cannot capture tensors or modules: pass them as static_inputs")


class FlexSN(MemoryModule):
    """A neuron defined by ``core`` (see the module)."""

    spec = None

    def __init__(self, core: Callable, num_states: int, static_inputs: tuple = (), step_mode: str = "m",
                 store_state_seqs: bool = False):
        if not callable(core):
            raise TypeError("FlexSN core must be callable")
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 0:
            raise ValueError(f"num_states must be a non-negative int, got {num_states!r}")
        _check_core(core)
        super().__init__(step_mode)
        self.core, self.num_states = core, num_states
        self._static_names = tuple(f"_static_input_{i}" for i in range(len(static_inputs)))
        for name, tensor in zip(self._static_names, static_inputs, strict=True):
            if isinstance(tensor, nn.Parameter):
                self.register_parameter(name, tensor)
            elif isinstance(tensor, torch.Tensor):
                self.register_buffer(name, tensor)
            else:
                raise TypeError(f"static_inputs must be tensors, got {type(tensor).__name__}")
        self._state_names = tuple(f"_state_{i}" for i in range(num_states))
        for name in self._state_names:
            self.register_memory(name, None)
        params = tuple(inspect.signature(core).parameters.values())
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            raise TypeError("FlexSN core cannot take *args")
        positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        self._num_inputs = positional - num_states - len(self._static_names)
        if self._num_inputs <= 0:
            raise ValueError("FlexSN core must take at least one step input before its states and static inputs")
        self._num_outputs = self._probe_outputs()
        self.store_state_seqs = bool(store_state_seqs)
        self.state_seqs = None

    def _probe_outputs(self) -> int:
        statics = self.static_inputs
        unit = torch.zeros(1, dtype=statics[0].dtype if statics else torch.float32,
                           device=statics[0].device if statics else "cpu")
        try:
            returns = _as_tuple(self.core(*([unit] * (self._num_inputs + self.num_states)), *([unit] * len(statics))))
        except Exception as error:  # noqa: BLE001 - any failure of the user's function is reported the same way
            raise RuntimeError("FlexSN core must run on one-element tensors (to count its outputs)") from error
        if len(returns) < self.num_states:
            raise ValueError(f"FlexSN core returned {len(returns)} tensors, fewer than num_states={self.num_states}")
        return len(returns) - self.num_states

    @property
    def static_inputs(self) -> tuple:
        return tuple(getattr(self, name) for name in self._static_names)

    @property
    def states(self) -> tuple:
        return tuple(self._memories[name] for name in self._state_names)

    @states.setter
    def states(self, values) -> None:
        values = tuple(values)
        if len(values) != self.num_states:
            raise ValueError(f"FlexSN expected {self.num_states} states, got {len(values)}")
        for name, value in zip(self._state_names, values, strict=True):
            self._memories[name] = value

    def reset(self) -> None:
        super().reset()
        self.state_seqs = None

    def _step(self, inputs: tuple, states: tuple) -> tuple[tuple, tuple]:
        if len(inputs) != self._num_inputs:
            raise ValueError(f"FlexSN core takes {self._num_inputs} inputs, got {len(inputs)}")
        returns = _as_tuple(self.core(*inputs, *states, *self.static_inputs))
        if len(returns) != self._num_outputs + self.num_states:
            raise ValueError(f"FlexSN core returned {len(returns)} tensors, expected "
                             f"{self._num_outputs} outputs + {self.num_states} states")
        return returns[:self._num_outputs], returns[self._num_outputs:]

    def forward(self, *inputs: torch.Tensor):
        if not inputs:
            raise ValueError("FlexSN needs at least one input tensor")
        log_python_path(type(self))
        multi = self.step_mode == "m"
        if multi and (inputs[0].dim() == 0 or inputs[0].shape[0] == 0):
            raise ValueError("FlexSN multi-step inputs need a non-empty time dimension [T, ...]")
        states = self.states
        if any(s is None for s in states):
            reference = inputs[0][0] if multi else inputs[0]
            states = tuple(torch.zeros_like(reference) for _ in states)
        if not multi:
            outputs, states = self._step(inputs, states)
            self.state_seqs = None
        else:
            steps, state_steps = [], []
            for t in range(inputs[0].shape[0]):
                out, states = self._step(tuple(x[t] for x in inputs), states)
                steps.append(out)
                if self.store_state_seqs:
                    state_steps.append(states)
            outputs = tuple(torch.stack(seq) for seq in zip(*steps, strict=True))
            self.state_seqs = (tuple(torch.stack(seq) for seq in zip(*state_steps, strict=True))
                               if self.store_state_seqs else None)
        self.states = states
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return (f"num_inputs={self._num_inputs}, num_states={self.num_states}, num_outputs={self._num_outputs}, "
                f"step_mode={self.step_mode}")
