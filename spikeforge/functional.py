"""Functional API: network-wide state helpers, step-mode helpers and the neuron calls.

The neuron calls are the kernel boundary: every neuron module calls one of them, and they alone hand the work
to :mod:`spikeforge.kernels` (module → functional → one dispatch → kernel). Each takes a
:class:`~spikeforge.spec.NeuronSpec` (or builds one from SpikingJelly-style keywords), the state explicitly, and
returns the new state with the output:

* :func:`neuron_multi_step` — any charge-fire-reset spec (IF / LIF / PLIF / STBP LIF);
  :func:`if_multi_step`, :func:`lif_multi_step`, :func:`plif_multi_step` build the spec from keywords;
* :func:`conversion_if_multi_step` — the ANN→SNN IF neuron;
* :func:`group_lif` — SNN-MLP's group LIF (:func:`group_lif_tensors`: the same with plain arguments, for TorchScript).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from . import kernels as _kernels
from . import surrogate as _surrogate
from .base import MemoryModule, check_step_mode
from .spec import (
    DEFAULT_SURROGATE,
    KernelFamily,
    NeuronSpec,
    SurrogateSpec,
    check_reset,
    check_retention,
    check_threshold,
    check_time_constant,
    if_spec,
    lif_spec,
    plif_spec,
)

# validation is written once, in spikeforge.spec; these names stay importable from here
check_tau = check_time_constant


def check_backend(backend: str | None, name: str = "backend") -> str | None:
    """Validate a neuron ``backend`` name ('auto', 'reference', 'cpu', 'triton'; SpikingJelly's 'torch'/'cupy')."""
    return _kernels.check_backend(backend, name)


# --------------------------------------------------------------------------------------------- validation
def check_sequence(x_seq: torch.Tensor, name: str = "x_seq") -> torch.Tensor:
    if not isinstance(x_seq, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x_seq).__name__}")
    if not x_seq.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
                        f"got dtype {x_seq.dtype}; convert spikes or images with .float()")
    if x_seq.dim() < 1 or x_seq.shape[0] == 0:
        raise ValueError(f"{name} must have shape [T, ...] with T >= 1 time steps, got shape {tuple(x_seq.shape)}")
    return x_seq


def initial_state(x_seq: torch.Tensor, v_init, spec: NeuronSpec, name: str = "v_init") -> torch.Tensor:
    """``v_init`` (a number or a tensor) as the membrane before step 0: per-step shape, the spec's state dtype."""
    state_dtype = spec.state_dtype_for(x_seq.dtype)
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


def surrogate_spec(surrogate_function: _surrogate.SurrogateFunctionBase | None) -> SurrogateSpec:
    """The spec of a surrogate module; ``None`` means the default (:data:`spikeforge.spec.DEFAULT_SURROGATE`)."""
    if surrogate_function is None:
        return DEFAULT_SURROGATE
    if not isinstance(surrogate_function, _surrogate.SurrogateFunctionBase):
        raise TypeError("surrogate_function must be a spikeforge.surrogate module (e.g. surrogate.ATan()), got "
                        f"{type(surrogate_function).__name__}")
    return surrogate_function.spec


# ------------------------------------------------------------------------------------ multi-step neurons
def neuron_multi_step(
    x_seq: torch.Tensor,
    v_init: float | torch.Tensor,
    spec: NeuronSpec,
    decay: torch.Tensor | None = None,
    store_v_seq: bool = False,
    backend: str | None = None,
):
    """T steps of the charge-fire-reset neuron ``spec`` (equations: :mod:`spikeforge.kernels.reference`).

    ``decay`` is the learnable charge coefficient (a 0-d tensor) when ``spec.leak`` is learnable, else ``None``.
    Returns ``(spike_seq, v_last, v_seq or None)``; the state stays in the spec's state dtype.
    """
    x_seq = check_sequence(x_seq)
    if spec.family is not KernelFamily.CHARGE_FIRE_RESET:
        raise ValueError(f"neuron_multi_step runs IF / LIF / PLIF / STBP LIF specs, got a {spec.kind.value} spec")
    v0 = initial_state(x_seq, v_init, spec)
    return _kernels.neuron_multi_step(x_seq, v0, spec, decay, store_v_seq, backend)


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
    spec = if_spec(v_threshold, v_reset, surrogate_spec(surrogate_function), detach_reset)
    return neuron_multi_step(x_seq, v_init, spec, None, store_v_seq, backend)


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
    spec = lif_spec(tau, decay_input, v_threshold, v_reset, surrogate_spec(surrogate_function), detach_reset)
    return neuron_multi_step(x_seq, v_init, spec, None, store_v_seq, backend)


def plif_decay(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ParametricLIF's charge coefficient d = sigmoid(w) = 1/τ, as a 0-d tensor in the state dtype."""
    if not isinstance(w, torch.Tensor) or w.numel() != 1:
        raise ValueError("w must be a one-element tensor (1/tau = sigmoid(w))")
    return torch.sigmoid(w.reshape(()).to(dtype))


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
    spec = plif_spec(None, decay_input, v_threshold, v_reset, surrogate_spec(surrogate_function), detach_reset)
    decay = plif_decay(w, spec.state_dtype_for(x_seq.dtype))
    return neuron_multi_step(x_seq, v_init, spec, decay, store_v_seq, backend)


def conversion_if_multi_step(
    x_seq: torch.Tensor,
    steps: int,
    static: bool,
    v: torch.Tensor,
    count: torch.Tensor | None,
    v_threshold: torch.Tensor,
    spec: NeuronSpec,
    backend: str | None = None,
) -> torch.Tensor:
    """``steps`` steps of the conversion IF neuron (equations: :mod:`spikeforge.kernels.conversion`).

    ``v`` and ``count`` (signed spikes only) are the state, updated in place; ``static=True`` feeds the single
    frame ``x_seq[0]`` at every step. Returns the output ``[steps, *frame shape]``.
    """
    if spec.family is not KernelFamily.CONVERSION_IF:
        raise ValueError(f"conversion_if_multi_step needs a conversion_if spec, got {spec.kind.value}")
    kernel = _kernels.select_kernel(x_seq.device, backend, spec)
    return kernel.run(x_seq, int(steps), bool(static), v, count, v_threshold, spec)


def group_lif(x: torch.Tensor, tau, v_th, spec: NeuronSpec, backend: str | None = None) -> torch.Tensor:
    """SNN-MLP's group LIF along ``spec.group.dim`` (equations: :mod:`spikeforge.kernels.group`)."""
    if spec.family is not KernelFamily.GROUP_LIF:
        raise ValueError(f"group_lif needs a group_lif spec, got {spec.kind.value}")
    if spec.group.group_size == -1:
        return x
    kernel = _kernels.select_kernel(x.device, backend, spec)
    return kernel.run(x, tau, v_th, spec)


def group_lif_tensors(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, lif: int, dim: int) -> torch.Tensor:
    """:func:`group_lif` with the spec as plain arguments, in the TorchScript subset (what a scripted
    :class:`~spikeforge.neuron.GroupLIF` calls): ``tau``/``v_th`` tensors, group size ``lif`` (``-1``: identity)
    and axis ``dim``. The group-LIF family has one kernel, the reference, whose implementation this runs."""
    return _kernels.group.group_lif_tensors(x, tau, v_th, lif, dim)


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
    """Choose the kernel ('auto', 'reference', 'cpu', 'triton') for every neuron in ``net``.

    Every neuron family uses the same backend names, so this reaches IF/LIF/PLIF, STBP's LIFSpike, the ANN→SNN
    conversion IF neuron and SNN-MLP's group LIF alike. A neuron is a module that exposes ``spec``.
    """
    backend = check_backend(backend)
    for module in net.modules():
        if isinstance(getattr(module, "spec", None), NeuronSpec):
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
    "neuron_multi_step",
    "conversion_if_multi_step",
    "group_lif",
    "initial_state",
    "surrogate_spec",
    "check_threshold",
    "check_reset",
    "check_tau",
    "check_backend",
    "check_retention",
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
