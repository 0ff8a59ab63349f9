"""Containers: run modules over time (SpikingJelly's ``layer.container``) and recurrent connections.

* :class:`SeqToANNContainer` — stateless modules, T folded into the batch (one call for all steps).
* :class:`MultiStepContainer` — single-step (stateful) modules, one call per time step.
* :class:`TLastSeqToANNContainer`, :class:`TLastMultiStepContainer` — the same for time-last tensors [N, ..., T].
* :class:`StepModeContainer` — either of the above, chosen by ``stateful`` and switchable by ``step_mode``.
* :class:`ElementWiseRecurrentContainer` — y[t] = m(f(y[t−1], x[t])) with an element-wise f.
* :class:`LinearRecurrentContainer` — y[t] = m(W [x[t], y[t−1]] + b), a learnable recurrent connection.
* :class:`tdLayer` — STBP's per-step layer + optional BN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .. import functional as F
from ..base import MemoryModule, StepModule


class SeqToANNContainer(nn.Sequential):
    """Runs stateless modules on [T, N, ...] by folding T into the batch (one call for all steps)."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return F.seq_to_ann_forward(x_seq, super().forward)


class MultiStepContainer(nn.Sequential):
    """Runs single-step modules on [T, N, ...] one time step at a time."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return F.multi_step_forward(x_seq, super().forward)


class TLastSeqToANNContainer(nn.Sequential):
    """Runs stateless modules on a time-last [N, ..., T] tensor, each time step as a separate call (vmapped).

    Each step is mapped independently (``torch.vmap`` over the last dimension), so a BatchNorm inside sees one
    time step's statistics, as in SpikingJelly.
    """

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return F.t_last_seq_to_ann_forward(x_seq, super().forward)


class TLastMultiStepContainer(nn.Sequential):
    """Runs single-step modules on a time-last [N, ..., T] tensor, one time step at a time."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return F.t_last_multi_step_forward(x_seq, super().forward)


class StepModeContainer(StepModule, nn.Sequential):
    """A Sequential with a ``step_mode``: 's' calls the modules on one step; 'm' runs them on [T, N, ...].

    In 'm' mode stateful modules (``stateful=True``) are called once per step, stateless ones once for all steps
    with T folded into the batch. The contained modules stay single-step. Signature as SpikingJelly's:
    ``StepModeContainer(stateful, step_mode='s', *modules)``.
    """

    def __init__(self, stateful: bool, step_mode: str = "s", *args: nn.Module):
        nn.Sequential.__init__(self, *args)
        for m in self:
            if getattr(m, "step_mode", "s") != "s":
                raise ValueError(f"StepModeContainer: the contained {type(m).__name__} must have step_mode='s' "
                                 f"(the container does the stepping), got {m.step_mode!r}")
        self.stateful = bool(stateful)
        self.step_mode = step_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = super().forward
        if self.step_mode == "s":
            return run(x)
        if self.stateful:
            return F.multi_step_forward(x, run)
        return F.seq_to_ann_forward(x, run)

    def extra_repr(self) -> str:
        return f"stateful={self.stateful}, step_mode={self.step_mode}"


def _single_step_sub_module(container: str, sub_module: nn.Module) -> nn.Module:
    if getattr(sub_module, "step_mode", "s") != "s":
        raise ValueError(f"{container}: sub_module must be single-step (step_mode='s'); the container steps it, "
                         f"got step_mode={sub_module.step_mode!r}")
    return sub_module


class ElementWiseRecurrentContainer(MemoryModule):
    """Element-wise recurrence around ``sub_module``: y[t] = sub_module(f(y[t−1], x[t])), y[−1] = 0.

    ``element_wise_function(y, x)`` combines the previous output with the input (e.g. ``lambda y, x: y + x``); the
    output must have the input's shape. ``sub_module`` is single-step; in 'm' mode the container loops over T.
    The state ``y`` persists until :meth:`reset` (``functional.reset_net``).
    """

    def __init__(self, sub_module: nn.Module, element_wise_function: Callable, step_mode: str = "s"):
        super().__init__(step_mode)
        self.sub_module = _single_step_sub_module("ElementWiseRecurrentContainer", sub_module)
        self.element_wise_function = element_wise_function
        self.register_memory("y", None)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        y_prev = torch.zeros_like(x) if self.y is None else self.y
        self.y = self.sub_module(self.element_wise_function(y_prev, x))
        return self.y

    def extra_repr(self) -> str:
        return f"element_wise_function={self.element_wise_function}, step_mode={self.step_mode}"


class LinearRecurrentContainer(MemoryModule):
    """Linear recurrence around ``sub_module``: y[t] = sub_module(W · [x[t], y[t−1]] + b), y[−1] = 0.

    ``x`` has ``in_features`` on its last dimension, ``sub_module``'s output has ``out_features``. The recurrent
    connection ``rc`` is ``nn.Linear(in_features + out_features, in_features, bias)`` applied to the
    concatenation (input first), so ``sub_module`` sees ``in_features`` again. State ``y`` persists until reset.
    """

    def __init__(self, sub_module: nn.Module, in_features: int, out_features: int, bias: bool = True,
                 step_mode: str = "s") -> None:
        super().__init__(step_mode)
        self.sub_module_out_features = out_features
        self.rc = nn.Linear(in_features + out_features, in_features, bias)
        self.sub_module = _single_step_sub_module("LinearRecurrentContainer", sub_module)
        self.register_memory("y", None)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], self.sub_module_out_features)
        if self.y is None:
            y_prev = x.new_zeros(shape)
        elif tuple(self.y.shape) != shape:
            raise ValueError(f"LinearRecurrentContainer: the recurrent state has shape {tuple(self.y.shape)} but "
                             f"this input needs {shape}; call functional.reset_net before changing the batch shape")
        else:
            y_prev = self.y
        self.y = self.sub_module(self.rc(torch.cat((x, y_prev), dim=-1)))
        return self.y

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"


class tdLayer(nn.Module):  # noqa: N801 - the STBP name
    """Apply a stateless ``layer`` (Conv2d, Linear, AvgPool2d, ...) to every time step, then ``bn`` if given.

    Time-first ([T, N, ...]); ``time_dim=-1`` accepts STBP's time-last tensors. The sub-modules are named
    ``layer`` and ``bn`` so STBP state_dict keys (``conv1_s.layer.weight``, ``conv1_s.bn.running_mean``) match.
    """

    def __init__(self, layer: nn.Module, bn: nn.Module | None = None, time_dim: int = 0):
        super().__init__()
        self.layer = layer
        self.bn = bn
        self.time_dim = int(time_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.movedim(self.time_dim, 0) if self.time_dim != 0 else x
        y = F.seq_to_ann_forward(x_seq, self.layer)
        if self.time_dim != 0:
            y = y.movedim(0, self.time_dim)
        return self.bn(y) if self.bn is not None else y




__all__ = [
    "SeqToANNContainer", "MultiStepContainer", "TLastSeqToANNContainer", "TLastMultiStepContainer",
    "StepModeContainer", "ElementWiseRecurrentContainer", "LinearRecurrentContainer", "tdLayer",
]
