"""Functional API: network-wide state helpers, step-mode helpers and the neuron calls.

The neuron calls are the kernel boundary: every neuron module calls one of them, and they alone hand the work
to :mod:`spikeforge.kernels` (module → functional → one dispatch → kernel). Each takes a
:class:`~spikeforge.spec.NeuronSpec` (or builds one from SpikingJelly-style keywords), the state explicitly, and
returns the new state with the output:

* :func:`neuron_multi_step` — any charge-fire-reset spec (IF / LIF / PLIF / STBP LIF);
  :func:`if_multi_step`, :func:`lif_multi_step`, :func:`plif_multi_step` build the spec from SpikingJelly 2.0's
  arguments (its positional order; ``backend`` keyword-only), and ``if_step`` / ``lif_step`` / ``plif_step`` run
  one step of them;
* :func:`conversion_if_multi_step` — the ANN→SNN IF neuron;
* :func:`group_lif` — SNN-MLP's group LIF (:func:`group_lif_tensors`: the same with plain arguments, for TorchScript).

The rest are SpikingJelly 2.0's plain helpers, with its names and behaviour: ``reset_net`` (every module with a
``reset()``), ``set_step_mode`` (the children of stepping containers keep their mode), the forward helpers
(``multi_step_forward``, ``seq_to_ann_forward``, time-last and chunked variants), ``delay``, the TET and
spike-similarity losses, ``first_spike_index``, ``redundant_one_hot``, ``kaiming_normal_conv_linear_weight``; the
STDP rules are reachable here too (they live in :mod:`spikeforge.learning`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from . import kernels as _kernels
from . import surrogate as _surrogate
from .base import MemoryModule, check_step_mode
from .kernels import _alloc
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
    if x_seq.device.type == "cpu" and not torch.compiler.is_compiling():
        # eager: from the kernels' buffer cache, so no fresh (page-faulting) mapping per call; a compiled graph
        # allocates its own (and Dynamo does not trace the cache's lock)
        return _alloc.empty(step_shape, state_dtype).fill_(float(v_init))
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
    v: float | torch.Tensor = 0.0,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate_function: _surrogate.SurrogateFunctionBase | None = None,
    detach_reset: bool = False,
    store_v_seq: bool = False,
    *,
    backend: str | None = None,
    v_init: float | torch.Tensor | None = None,
    **precision,
):
    """Integrate-and-fire for T steps: H_t = V_{t-1} + X_t, then fire and reset.

    SpikingJelly 2.0's positional order ``(x_seq, v, v_threshold, v_reset, surrogate_function, detach_reset,
    store_v_seq)``; ``v`` (alias ``v_init``) is the membrane before step 0 (a number or a tensor). Returns
    ``(spike_seq, v_last, v_seq or None)``. SpikingJelly's keyword-only precision options (``neuron_storage``,
    ``neuron_fwd``, ``neuron_bwd``) are accepted at their defaults only (:func:`_check_precision`).
    """
    _check_precision(precision)
    spec = if_spec(v_threshold, v_reset, surrogate_spec(surrogate_function), detach_reset)
    return neuron_multi_step(x_seq, v if v_init is None else v_init, spec, None, store_v_seq, backend)


def lif_multi_step(
    x_seq: torch.Tensor,
    v: float | torch.Tensor = 0.0,
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate_function: _surrogate.SurrogateFunctionBase | None = None,
    detach_reset: bool = False,
    store_v_seq: bool = False,
    *,
    backend: str | None = None,
    v_init: float | torch.Tensor | None = None,
    **precision,
):
    """Leaky integrate-and-fire for T steps.

    H_t = V_{t-1} + (X_t − (V_{t-1} − V_r))/τ  (decay_input) or  V_{t-1} − (V_{t-1} − V_r)/τ + X_t.
    SpikingJelly 2.0's positional order ``(x_seq, v, tau, decay_input, v_threshold, v_reset,
    surrogate_function, detach_reset, store_v_seq)``. Returns ``(spike_seq, v_last, v_seq or None)``.
    """
    _check_precision(precision)
    spec = lif_spec(tau, decay_input, v_threshold, v_reset, surrogate_spec(surrogate_function), detach_reset)
    return neuron_multi_step(x_seq, v if v_init is None else v_init, spec, None, store_v_seq, backend)


def plif_decay(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ParametricLIF's charge coefficient d = sigmoid(w) = 1/τ, as a 0-d tensor in the state dtype."""
    if not isinstance(w, torch.Tensor) or w.numel() != 1:
        raise ValueError("w must be a one-element tensor (1/tau = sigmoid(w))")
    return torch.sigmoid(w.reshape(()).to(dtype))


def plif_multi_step(
    x_seq: torch.Tensor,
    v: float | torch.Tensor,
    w: torch.Tensor,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate_function: _surrogate.SurrogateFunctionBase | None = None,
    detach_reset: bool = False,
    store_v_seq: bool = False,
    *,
    backend: str | None = None,
    **precision,
):
    """Parametric LIF for T steps: LIF with 1/τ = sigmoid(w), w a learnable scalar (gradient flows to w).

    SpikingJelly 2.0's positional order ``(x_seq, v, w, decay_input, v_threshold, v_reset, surrogate_function,
    detach_reset, store_v_seq)``. Returns ``(spike_seq, v_last, v_seq or None)``.
    """
    _check_precision(precision)
    x_seq = check_sequence(x_seq)
    spec = plif_spec(None, decay_input, v_threshold, v_reset, surrogate_spec(surrogate_function), detach_reset)
    decay = plif_decay(w, spec.state_dtype_for(x_seq.dtype))
    return neuron_multi_step(x_seq, v, spec, decay, store_v_seq, backend)


def _check_precision(precision: dict) -> None:
    """SpikingJelly 2.0's ``neuron_storage=None, neuron_fwd='fp32', neuron_bwd='fp32'`` (Triton mixed-precision
    storage of the membrane): accepted at these defaults; spikeforge keeps the state in float32/64 (spec)."""
    defaults = {"neuron_storage": None, "neuron_fwd": "fp32", "neuron_bwd": "fp32"}
    for name, value in precision.items():
        if name not in defaults:
            raise TypeError(f"unexpected keyword argument {name!r}")
        if value != defaults[name]:
            raise ValueError(f"{name}={value!r} is not supported: spikeforge keeps the membrane in float32 "
                             f"(float64 for float64 inputs); leave {name} at {defaults[name]!r}")


def _one_step(run, x: torch.Tensor, v, *args):
    scalar = x.dim() == 0
    spike_seq, v_last, _ = run(x.reshape(1, 1) if scalar else x.unsqueeze(0),
                               v.reshape(1) if scalar and isinstance(v, torch.Tensor) else v, *args)
    if scalar:
        return spike_seq[0, 0], v_last.reshape(())
    return spike_seq[0], v_last


def if_step(x: torch.Tensor, v, v_threshold: float, v_reset: float | None, surrogate_function,
            detach_reset: bool = False):
    """One step of :func:`if_multi_step` (SpikingJelly 2.0's ``if_step``): returns ``(spike, v_next)``."""
    return _one_step(if_multi_step, x, v, v_threshold, v_reset, surrogate_function, detach_reset)


def lif_step(x: torch.Tensor, v, tau: float, decay_input: bool, v_threshold: float, v_reset: float | None,
             surrogate_function, detach_reset: bool = False):
    """One step of :func:`lif_multi_step`: returns ``(spike, v_next)``."""
    return _one_step(lif_multi_step, x, v, tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset)


def plif_step(x: torch.Tensor, v, w: torch.Tensor, decay_input: bool, v_threshold: float, v_reset: float | None,
              surrogate_function, detach_reset: bool = False):
    """One step of :func:`plif_multi_step`: returns ``(spike, v_next)``."""
    return _one_step(plif_multi_step, x, v, w, decay_input, v_threshold, v_reset, surrogate_function, detach_reset)


def lif_charge(x: torch.Tensor, v: torch.Tensor, tau: float, decay_input: bool, v_reset: float | None):
    """The LIF charge H = V + (X − (V − V_r))/τ (decay_input) or V − (V − V_r)/τ + X, V_r = 0 for soft reset —
    the charge line of :mod:`spikeforge.kernels.reference`, for a step the caller composes itself."""
    v_r = 0.0 if v_reset is None else v_reset
    if decay_input:
        return v + (x - (v - v_r)) / tau
    return v - (v - v_r) / tau + x


def voltage_reset(v: torch.Tensor, spike: torch.Tensor, v_threshold: float, v_reset: float | None,
                  detach_reset: bool) -> torch.Tensor:
    """The reset of :mod:`spikeforge.kernels.reference`: V − V_th·S (soft, ``v_reset=None``) or
    V·(1 − S) + V_r·S (hard), with S detached when ``detach_reset``."""
    spike = spike.detach() if detach_reset else spike
    if v_reset is None:
        return v - v_threshold * spike
    return v * (1.0 - spike) + v_reset * spike


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
def poisson_spikes(x: torch.Tensor, T: int, *, seed: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson spike trains ``[T, *x.shape]`` (uint8 0/1); see :func:`spikeforge.kernels.encoding.poisson_spikes`."""
    from .kernels import encoding  # imports numba when installed: only on first use

    return encoding.poisson_spikes(x, T, seed=seed, generator=generator)


def poisson_linear(x: torch.Tensor, weight: torch.Tensor, T: int, bias: torch.Tensor | None = None, *,
                   seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``linear(PoissonEncoder(x)_t, weight, bias)`` for all T steps from the non-zero inputs only, ``[T, B, O]``;
    see :func:`spikeforge.kernels.encoding.poisson_linear`."""
    from .kernels import encoding

    return encoding.poisson_linear(x, weight, T, bias, seed=seed, generator=generator)


def avg_pool2d_tiles(x: torch.Tensor, kernel_size) -> torch.Tensor:
    """Average pooling with non-overlapping windows (stride = kernel, no padding), the same floats as
    ``F.avg_pool2d``; fused on the CPU (see :mod:`spikeforge.kernels.pooling`)."""
    from .kernels import pooling

    kh, kw = (tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size))
    return pooling.avg_pool2d_tiles(x, int(kh), int(kw))


def has_fast_poisson_kernels() -> bool:
    """True when the fused Poisson kernels (numba) are available; otherwise dense torch code runs."""
    from .kernels import encoding

    return encoding.has_fast_kernels()


def collect_reset_modules(net: nn.Module) -> tuple[nn.Module, ...]:
    """Every module of ``net`` with a callable ``reset`` (what :func:`reset_net` resets)."""
    return tuple(m for m in net.modules() if callable(getattr(m, "reset", None)))


def reset_collected_modules(modules: Iterable[nn.Module]) -> None:
    """Call ``reset()`` on each of ``modules`` (e.g. collected once by :func:`collect_reset_modules`)."""
    for module in modules:
        module.reset()


def invalidate_reset_cache(net: nn.Module) -> None:
    """SpikingJelly 2.0 caches the modules :func:`reset_net` visits; spikeforge walks the net every call, so
    there is nothing to invalidate (kept so that code calling it runs)."""


def reset_net(net: nn.Module) -> None:
    """Reset the state (membranes, masks, encoder phases) of every module in ``net`` that has ``reset()``."""
    reset_collected_modules(collect_reset_modules(net))


def detach_net(net: nn.Module) -> None:
    """Detach every stateful module's state from the graph (truncated BPTT between calls)."""
    for module in net.modules():
        if isinstance(module, MemoryModule) or (
            callable(getattr(module, "detach", None)) and hasattr(module, "step_mode")
        ):
            module.detach()


def _step_mode_keepers() -> tuple[type, ...]:
    """Containers that do the stepping for their children: set_step_mode leaves the children alone."""
    from . import layer

    names = ("StepModeContainer", "MultiStepContainer", "SeqToANNContainer", "TLastMultiStepContainer",
             "TLastSeqToANNContainer", "ElementWiseRecurrentContainer", "LinearRecurrentContainer")
    return tuple(getattr(layer, name) for name in names if hasattr(layer, name))


def set_step_mode(net: nn.Module, step_mode: str) -> None:
    """Set ``step_mode`` ('s' or 'm') on every module of ``net`` that has one.

    As in SpikingJelly, the children of the containers that step them (``MultiStepContainer``,
    ``SeqToANNContainer``, ``StepModeContainer``, the time-last and recurrent containers) keep their mode; the
    container itself is set when it has a ``step_mode``.
    """
    check_step_mode(step_mode)
    keepers = _step_mode_keepers()
    stack = [net]
    while stack:
        module = stack.pop()
        if hasattr(module, "step_mode"):
            module.step_mode = step_mode
        if not isinstance(module, keepers):
            stack.extend(reversed(tuple(module.children())))


def set_backend(net: nn.Module, backend: str | None) -> None:
    """Choose the kernel ('auto', 'reference', 'cpu', 'triton') for every neuron in ``net``.

    Every neuron family uses the same backend names, so this reaches IF/LIF/PLIF, STBP's LIFSpike, the ANN→SNN
    conversion IF neuron and SNN-MLP's group LIF alike. A neuron is a module that exposes ``spec``.
    """
    backend = check_backend(backend)
    for module in net.modules():
        if isinstance(getattr(module, "spec", None), NeuronSpec):
            module.backend = backend


def _apply_modules(x, modules):
    args = x if isinstance(x, tuple) else (x,)
    if isinstance(modules, list | tuple):
        for module in modules:
            x = module(*args)
            args = (x,)
        return x
    return modules(*args)


def multi_step_forward(x_seq: torch.Tensor, single_step_module: nn.Module | Callable | list) -> torch.Tensor:
    """Run a single-step module (or a list of them, in order) on each step of ``x_seq`` and stack the outputs."""
    return torch.stack([_apply_modules(x_seq[t], single_step_module) for t in range(x_seq.shape[0])])


def t_last_multi_step_forward(x_seq: torch.Tensor, single_step_module: nn.Module | Callable | list) -> torch.Tensor:
    """:func:`multi_step_forward` for a time-last sequence ``[N, ..., T]``."""
    steps = [_apply_modules(x_seq.select(-1, t), single_step_module) for t in range(x_seq.shape[-1])]
    return torch.stack(steps, dim=-1)


def chunk_multi_step_forward(split_size: int, x_seq: torch.Tensor, multi_step_module: nn.Module) -> torch.Tensor:
    """Run a multi-step module on ``x_seq`` in chunks of ``split_size`` steps (state carried across chunks) and
    concatenate the outputs: the same result as one call, with less activation memory at a time."""
    return torch.cat([multi_step_module(chunk) for chunk in torch.split(x_seq, split_size)], 0)


def seq_to_ann_forward(x_seq: torch.Tensor | tuple, stateless_module: nn.Module | Callable | list):
    """Fold [T, N, ...] into [T·N, ...], run stateless module(s) once, and unfold to [T, N, ...].

    ``x_seq`` may be a tuple of tensors sharing [T, N] (passed as several arguments); a tuple output is
    unfolded item by item.
    """
    if isinstance(x_seq, tuple):
        lead = x_seq[0].shape[:2]
        if any(item.shape[:2] != lead for item in x_seq[1:]):
            raise ValueError("the tensors of x_seq must share their [T, N] leading dimensions, got shapes "
                             f"{[tuple(item.shape) for item in x_seq]}")
        T, N = lead
        x = tuple(item.flatten(0, 1) for item in x_seq)
    else:
        T, N = x_seq.shape[0], x_seq.shape[1]
        x = x_seq.flatten(0, 1)
    y = _apply_modules(x, stateless_module)
    if isinstance(y, tuple):
        return tuple(item.reshape(T, N, *item.shape[1:]) for item in y)
    return y.reshape(T, N, *y.shape[1:])


def t_last_seq_to_ann_forward(x_seq: torch.Tensor, stateless_module: nn.Module | Callable | list):
    """Stateless module(s) on a time-last ``[N, ..., T]`` tensor, each step separately (``torch.vmap``)."""
    return torch.vmap(lambda x: _apply_modules(x, stateless_module), in_dims=-1, out_dims=-1)(x_seq)


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
    "poisson_spikes",
    "poisson_linear",
    "has_fast_poisson_kernels",
]


# ------------------------------------------------------------------------- SpikingJelly's plain helpers
def delay(x_seq: torch.Tensor, delay_steps: int) -> torch.Tensor:
    """``x_seq`` shifted ``delay_steps`` steps later in time, zeros in front: y[t] = x[t − d] (0 for t < d)."""
    if isinstance(delay_steps, bool) or not isinstance(delay_steps, int) or delay_steps < 0:
        raise ValueError(f"delay_steps must be an int >= 0, got {delay_steps!r}")
    if delay_steps == 0:
        return x_seq
    if delay_steps >= x_seq.shape[0]:
        return torch.zeros_like(x_seq)
    return torch.cat((torch.zeros_like(x_seq[:delay_steps]), x_seq[:-delay_steps]))


def delay_step(x: torch.Tensor, queue: tuple, delay_steps: int):
    """One step of :func:`delay` with the queue of pending steps as explicit state: returns
    ``(y, queue_next)``, y = the input of ``delay_steps`` calls ago (zeros until then)."""
    if isinstance(delay_steps, bool) or not isinstance(delay_steps, int) or delay_steps < 0:
        raise ValueError("delay_steps must be a non-negative integer")
    queue = (*queue, x)
    if len(queue) > delay_steps:
        return queue[0], queue[1:]
    return torch.zeros_like(x), queue


def neunorm_step(in_spikes: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, momentum: float,
                 input_scale: float):
    """One NeuNorm step (Wu et al. 2019): z = momentum·z + input_scale·Σ_c S_c; output S − weight·z.
    Returns ``(output, z)``."""
    state = momentum * state + input_scale * in_spikes.sum(dim=1, keepdim=True)
    return in_spikes - weight * state, state


def synapse_filter_step(x: torch.Tensor, out_i: torch.Tensor, reciprocal_tau) -> torch.Tensor:
    """SpikingJelly 2.0's synapse-filter step, as it computes it: I − (1 − x)·I/τ + x."""
    return out_i - (1.0 - x) * out_i * reciprocal_tau + x


def first_spike_index(spikes: torch.Tensor) -> torch.Tensor:
    """A bool mask, time last (``[..., T]``), true only at each neuron's first spike."""
    return (spikes != 0) & (spikes.cumsum(dim=-1) == 1)


def redundant_one_hot(labels: torch.Tensor, num_classes: int, n: int) -> torch.Tensor:
    """One-hot labels with each class repeated ``n`` times: ``[N]`` → ``[N, num_classes·n]`` (default dtype),
    for an output layer of ``n`` neurons per class."""
    return nn.functional.one_hot(labels, num_classes).repeat_interleave(n, dim=-1).to(torch.get_default_dtype())


def kaiming_normal_conv_linear_weight(net: nn.Module) -> None:
    """Kaiming-normal init (a = √5) of the weights of every Conv1d/2d/3d and Linear in ``net``."""
    import math

    for m in net.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=math.sqrt(5))


def temporal_efficient_training_cross_entropy(x_seq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TET loss (Deng et al. 2022): the cross-entropy of every step's output with the target, averaged over T:
    (1/T)·Σ_t CE(x_seq[t], target). ``x_seq`` is ``[T, N, C, ...]``, ``target`` ``[N, ...]`` (class indices) or
    probabilities ``[N, C, ...]``."""
    T = x_seq.shape[0]
    x = x_seq.transpose(0, 1).transpose(1, 2)  # [N, C, T, ...]
    if target.is_floating_point() and target.dim() == x_seq.dim() - 1:
        target = target.unsqueeze(2).expand(*target.shape[:2], T, *target.shape[2:])
    else:
        target = target.unsqueeze(1).expand(target.shape[0], T, *target.shape[1:])
    return nn.functional.cross_entropy(x, target)


def kernel_dot_product(x: torch.Tensor, y: torch.Tensor, kernel: str = "linear", *args) -> torch.Tensor:
    """The kernel matrix K[i, j] = k(x_i, y_j) of two ``[N, M]`` batches: 'linear' x·y, 'polynomial' (x·y)^d,
    'sigmoid' σ(α x·y), 'gaussian' exp(−‖x − y‖²/(2σ²)) (the extra parameter in ``args``)."""
    xy = x.mm(y.t())
    if kernel == "linear":
        return xy
    if kernel == "polynomial":
        return xy.pow(args[0])
    if kernel == "sigmoid":
        return torch.sigmoid(args[0] * xy)
    if kernel == "gaussian":
        sigma = args[0]
        if sigma <= 0:
            raise ValueError(f"sigma must be positive for the Gaussian kernel, got {sigma}")
        d = x.square().sum(1).unsqueeze(1) + y.square().sum(1).unsqueeze(0) - 2 * xy
        return torch.exp(-d / (2 * sigma * sigma))
    raise NotImplementedError(f"kernel must be 'linear', 'polynomial', 'sigmoid' or 'gaussian', got {kernel!r}")


def spike_similar_loss(spikes: torch.Tensor, labels: torch.Tensor, kernel_type: str = "linear",
                       loss_type: str = "mse", *args) -> torch.Tensor:
    """Make the similarity of two samples' spikes follow whether they share a label: the kernel matrix of the
    flattened spikes (cosine-normalised for 'linear') against min(labels·labelsᵀ, 1), by 'mse', 'l1' or 'bce'."""
    spikes = spikes.flatten(start_dim=1)
    sim_p = kernel_dot_product(spikes, spikes, kernel_type, *args)
    if kernel_type == "linear":
        norm = spikes.norm(p=2, dim=1, keepdim=True)
        sim_p = sim_p / (norm.mm(norm.t()) + 1e-8)
    labels = labels.float()
    sim = labels.mm(labels.t()).clamp_max(1)
    if loss_type == "mse":
        return nn.functional.mse_loss(sim_p, sim)
    if loss_type == "l1":
        return nn.functional.l1_loss(sim_p, sim)
    if loss_type == "bce":
        return nn.functional.binary_cross_entropy(sim_p, sim)
    raise NotImplementedError(f"loss_type must be 'mse', 'l1' or 'bce', got {loss_type!r}")


# SpikingJelly keeps the STDP rules in functional; spikeforge's live in spikeforge.learning (imported on use).
_LEARNING_NAMES = ("stdp_linear_step", "stdp_conv1d_step", "stdp_conv2d_step", "mstdp_linear_step",
                   "mstdpet_linear_step", "mstdpet_reward_step")


def __getattr__(name: str):
    if name in _LEARNING_NAMES:
        from .learning import rules

        return getattr(rules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ += [
    "if_step", "lif_step", "plif_step", "lif_charge", "voltage_reset", "collect_reset_modules",
    "reset_collected_modules", "invalidate_reset_cache", "t_last_multi_step_forward", "chunk_multi_step_forward",
    "t_last_seq_to_ann_forward", "delay", "delay_step", "neunorm_step", "synapse_filter_step", "first_spike_index",
    "redundant_one_hot", "kaiming_normal_conv_linear_weight", "temporal_efficient_training_cross_entropy",
    "kernel_dot_product", "spike_similar_loss",
]
