"""Functional API: network-wide state helpers, step-mode helpers and the multi-step neuron calls.

``if_multi_step`` / ``lif_multi_step`` / ``plif_multi_step`` are the kernel boundary: the neuron modules call
them, and they hand the work to :func:`spikeforge.kernels.neuron_multi_step`, which picks the reference, fused
CPU or Triton kernel. Each takes the state explicitly and returns ``(spike_seq, v_last, v_seq_or_None)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from . import surrogate as _surrogate
from .base import MemoryModule, check_step_mode
from .kernels import NeuronSpec, compute_dtype, neuron_multi_step


# --------------------------------------------------------------------------------------------- validation
def check_threshold(v_threshold: float) -> float:
    v_threshold = float(v_threshold)
    if not math.isfinite(v_threshold):
        raise ValueError(f"v_threshold must be a finite number, got {v_threshold}")
    return v_threshold


def check_reset(v_reset: float | None) -> float | None:
    if v_reset is None:
        return None
    v_reset = float(v_reset)
    if not math.isfinite(v_reset):
        raise ValueError(f"v_reset must be a finite number or None (soft reset), got {v_reset}")
    return v_reset


def check_tau(tau: float, name: str = "tau") -> float:
    if isinstance(tau, bool) or not isinstance(tau, int | float):
        raise TypeError(f"{name} must be a number > 1, got {type(tau).__name__}")
    tau = float(tau)
    if not math.isfinite(tau) or tau <= 1.0:
        raise ValueError(f"{name} must be a finite number > 1 (the membrane time constant in steps), got {tau}")
    return tau


def check_sequence(x_seq: torch.Tensor, name: str = "x_seq") -> torch.Tensor:
    if not isinstance(x_seq, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x_seq).__name__}")
    if not x_seq.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
                        f"got dtype {x_seq.dtype}; convert spikes or images with .float()")
    if x_seq.dim() < 1 or x_seq.shape[0] == 0:
        raise ValueError(f"{name} must have shape [T, ...] with T >= 1 time steps, got shape {tuple(x_seq.shape)}")
    return x_seq


def _initial_state(x_seq: torch.Tensor, v_init, name: str = "v_init") -> torch.Tensor:
    """v_init as a tensor of the per-step shape, in the state dtype (float32, float64 for float64 input)."""
    state_dtype = compute_dtype(x_seq.dtype)
    step_shape = x_seq.shape[1:]
    if isinstance(v_init, torch.Tensor):
        if v_init.shape != step_shape:
            if v_init.numel() == 1:
                return v_init.to(state_dtype).expand(step_shape)
            raise ValueError(f"{name} has shape {tuple(v_init.shape)} but one step of the input has shape "
                             f"{tuple(step_shape)}; reset the state (functional.reset_net) before feeding "
                             "inputs of a new shape")
        return v_init if v_init.dtype == state_dtype else v_init.to(state_dtype)
    return torch.full(step_shape, float(v_init), dtype=state_dtype, device=x_seq.device)


def _spec(v_threshold, v_reset, surrogate_function, detach_reset, decay_input, fire_on_tie=True) -> NeuronSpec:
    surrogate_function = surrogate_function if surrogate_function is not None else _surrogate.Sigmoid()
    if not isinstance(surrogate_function, _surrogate.SurrogateFunctionBase):
        raise TypeError("surrogate_function must be a spikeforge.surrogate module (e.g. surrogate.ATan()), got "
                        f"{type(surrogate_function).__name__}")
    kernel_id, p0, p1 = surrogate_function.kernel_params
    return NeuronSpec(
        v_threshold=check_threshold(v_threshold),
        v_reset=check_reset(v_reset),
        detach_reset=bool(detach_reset),
        decay_input=bool(decay_input),
        surrogate_id=kernel_id,
        surrogate_p0=p0,
        surrogate_p1=p1,
        fire_on_tie=fire_on_tie,
        smooth=not surrogate_function.spiking,
    )


# ------------------------------------------------------------------------------------ multi-step neurons
def if_multi_step(
    x_seq: torch.Tensor,
    v_init: float | torch.Tensor = 0.0,
    *,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate_function: _surrogate.SurrogateFunctionBase | None = None,
    detach_reset: bool = False,
    store_v_seq: bool = False,
    backend: str | None = None,
):
    """Integrate-and-fire for T steps: H_t = V_{t-1} + X_t, then fire and reset.

    Returns ``(spike_seq, v_last, v_seq or None)``.
    """
    x_seq = check_sequence(x_seq)
    spec = _spec(v_threshold, v_reset, surrogate_function, detach_reset, decay_input=False)
    return neuron_multi_step(x_seq, _initial_state(x_seq, v_init), 0.0, spec, store_v_seq, backend)


def lif_multi_step(
    x_seq: torch.Tensor,
    v_init: float | torch.Tensor = 0.0,
    *,
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate_function: _surrogate.SurrogateFunctionBase | None = None,
    detach_reset: bool = False,
    store_v_seq: bool = False,
    backend: str | None = None,
):
    """Leaky integrate-and-fire for T steps.

    H_t = V_{t-1} + (X_t − (V_{t-1} − V_r))/τ  (decay_input) or  V_{t-1} − (V_{t-1} − V_r)/τ + X_t.
    Returns ``(spike_seq, v_last, v_seq or None)``.
    """
    x_seq = check_sequence(x_seq)
    tau = check_tau(tau)
    spec = _spec(v_threshold, v_reset, surrogate_function, detach_reset, decay_input)
    return neuron_multi_step(x_seq, _initial_state(x_seq, v_init), 1.0 / tau, spec, store_v_seq, backend)


def plif_multi_step(
    x_seq: torch.Tensor,
    v_init: float | torch.Tensor,
    w: torch.Tensor,
    *,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate_function: _surrogate.SurrogateFunctionBase | None = None,
    detach_reset: bool = False,
    store_v_seq: bool = False,
    backend: str | None = None,
):
    """Parametric LIF for T steps: LIF with 1/τ = sigmoid(w), w a learnable scalar (gradient flows to w).

    Returns ``(spike_seq, v_last, v_seq or None)``.
    """
    x_seq = check_sequence(x_seq)
    if not isinstance(w, torch.Tensor) or w.numel() != 1:
        raise ValueError("w must be a one-element tensor (1/tau = sigmoid(w))")
    spec = _spec(v_threshold, v_reset, surrogate_function, detach_reset, decay_input)
    decay = torch.sigmoid(w.reshape(()).to(compute_dtype(x_seq.dtype)))
    return neuron_multi_step(x_seq, _initial_state(x_seq, v_init), decay, spec, store_v_seq, backend)


# ------------------------------------------------------------------------------------ network helpers
def _memory_modules(net: nn.Module) -> Iterable[nn.Module]:
    for module in net.modules():
        if isinstance(module, MemoryModule) or (
            callable(getattr(module, "reset", None)) and hasattr(module, "step_mode")
        ):
            yield module


def reset_net(net: nn.Module) -> None:
    """Reset the state (membranes, masks, encoder phases) of every stateful module in ``net``."""
    for module in _memory_modules(net):
        module.reset()


def detach_net(net: nn.Module) -> None:
    """Detach every stateful module's state from the graph (truncated BPTT between calls)."""
    for module in _memory_modules(net):
        if callable(getattr(module, "detach", None)):
            module.detach()


def set_step_mode(net: nn.Module, step_mode: str) -> None:
    """Set ``step_mode`` ('s' or 'm') on every module of ``net`` that has one."""
    check_step_mode(step_mode)
    for module in net.modules():
        if hasattr(module, "step_mode"):
            module.step_mode = step_mode


def set_backend(net: nn.Module, backend: str | None) -> None:
    """Choose the neuron kernel ('auto', 'reference', 'cpu', 'triton') for every neuron in ``net``."""
    for module in net.modules():
        if hasattr(module, "backend"):
            module.backend = backend


def multi_step_forward(x_seq: torch.Tensor, single_step_module: nn.Module | Callable | list) -> torch.Tensor:
    """Run a single-step module (or a list of them, in order) on each step of ``x_seq`` and stack the outputs."""
    modules = single_step_module if isinstance(single_step_module, list | tuple) else [single_step_module]
    outputs = []
    for t in range(x_seq.shape[0]):
        y = x_seq[t]
        for module in modules:
            y = module(y)
        outputs.append(y)
    return torch.stack(outputs)


def seq_to_ann_forward(x_seq: torch.Tensor, stateless_module: nn.Module | Callable | list) -> torch.Tensor:
    """Fold [T, N, ...] into [T·N, ...], run stateless module(s) once, and unfold to [T, N, ...]."""
    modules = stateless_module if isinstance(stateless_module, list | tuple) else [stateless_module]
    T, N = x_seq.shape[0], x_seq.shape[1]
    y = x_seq.flatten(0, 1)
    for module in modules:
        y = module(y)
    return y.reshape(T, N, *y.shape[1:])


def firing_rate(spike_seq: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Mean of the spikes over the time dimension ``dim``."""
    return spike_seq.float().mean(dim=dim)


__all__ = [
    "if_multi_step",
    "lif_multi_step",
    "plif_multi_step",
    "reset_net",
    "detach_net",
    "set_step_mode",
    "set_backend",
    "multi_step_forward",
    "seq_to_ann_forward",
    "firing_rate",
    "check_step_mode",
]
