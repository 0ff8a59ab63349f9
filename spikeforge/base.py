"""Base classes: the ``step_mode`` contract and modules that keep state between calls (SpikingJelly's ``base``)."""

from __future__ import annotations

import torch
import torch.nn as nn

STEP_MODES = ("s", "m")


def check_step_mode(step_mode: str) -> str:
    if step_mode not in STEP_MODES:
        raise ValueError(f"step_mode must be 's' (single-step) or 'm' (multi-step), got {step_mode!r}")
    return step_mode


class StepModule:
    """Mixin: a validated ``step_mode`` attribute, 's' (one step [N, ...] per call) or 'm' ([T, N, ...] per call)."""

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        self._step_mode = check_step_mode(value)


class MemoryModule(StepModule, nn.Module):
    """A module with state that persists between calls (until :meth:`reset`) and a ``step_mode``.

    State is declared with :meth:`register_memory`; its initial value is restored by :meth:`reset`.
    """

    def __init__(self, step_mode: str = "s"):
        super().__init__()
        self._memories: dict[str, object] = {}
        self._memory_defaults: dict[str, object] = {}
        self.step_mode = step_mode

    def register_memory(self, name: str, value) -> None:
        if hasattr(self, name) and name not in self._memories:
            raise AttributeError(f"{name!r} is already an attribute of {type(self).__name__}")
        self._memories[name] = value
        self._memory_defaults[name] = value.clone() if isinstance(value, torch.Tensor) else value

    def __getattr__(self, name: str):
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            return memories[name]
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            memories[name] = value
        else:
            super().__setattr__(name, value)

    def reset(self) -> None:
        for name, default in self._memory_defaults.items():
            self._memories[name] = default.clone() if isinstance(default, torch.Tensor) else default

    def detach(self) -> None:
        for name, value in self._memories.items():
            if isinstance(value, torch.Tensor):
                self._memories[name] = value.detach()

    def memories(self):
        return iter(self._memories.items())

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"

    def single_step_forward(self, x: torch.Tensor):
        raise NotImplementedError

    def multi_step_forward(self, x_seq: torch.Tensor):
        return torch.stack([self.single_step_forward(x) for x in x_seq])

    def forward(self, *args, **kwargs):
        if self.step_mode == "s":
            return self.single_step_forward(*args, **kwargs)
        return self.multi_step_forward(*args, **kwargs)
