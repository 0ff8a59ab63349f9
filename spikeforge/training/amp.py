"""Automatic mixed precision policy: which autocast dtype, and whether gradients need a scaler.

``AmpPolicy(True, device)`` (the ``-amp`` flag) means bfloat16 autocast on the CPU (no scaler: bf16 has
float32's range) and float16 autocast with a ``GradScaler`` on CUDA. ``'bf16'`` / ``'fp16'`` choose the dtype
explicitly (a scaler only for fp16 on CUDA); ``False`` / ``'off'`` turns it off. Neuron states stay float32
under autocast (the kernels keep the membrane in float32).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["AmpPolicy"]

_MODES = {True: "auto", False: "off", None: "off", "auto": "auto", "off": "off", "bf16": "bf16",
          "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16"}


class AmpPolicy:
    def __init__(self, mode: bool | str | None, device: torch.device | str):
        try:
            mode = _MODES[mode]
        except (KeyError, TypeError):
            raise ValueError(f"amp must be True/False or one of 'auto', 'off', 'bf16', 'fp16'; got {mode!r}") from None
        self.device = torch.device(device)
        if mode == "auto":
            mode = "fp16" if self.device.type == "cuda" else "bf16"
        self.mode = mode
        self.enabled = mode != "off"
        self.dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        self.scaler = torch.amp.GradScaler("cuda") if mode == "fp16" and self.device.type == "cuda" else None

    def autocast(self):
        """The context to run the forward pass (and loss) in."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip_grad_norm: float | None = None) -> None:
        """Optimizer step; gradients are clipped to ``clip_grad_norm`` (total 2-norm) after unscaling."""
        if clip_grad_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

    def __repr__(self) -> str:
        return f"AmpPolicy(mode={self.mode!r}, device={str(self.device)!r}, scaler={self.scaler is not None})"
