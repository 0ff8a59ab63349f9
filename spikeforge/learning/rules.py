"""Trace-based plasticity rules as pure functions (SpikingJelly 2.0's ``functional.learning``).

Notation for one time step: pre-synaptic spikes s_pre (the synapse's input), post-synaptic spikes s_post (the
neuron's output), traces x_pre and x_post, weight W (out × in). STDP (Morrison et al. 2008, nearest-neighbour-free
additive form with weight-dependence functions f_pre, f_post applied element-wise to W):

    x_pre[t]  = x_pre[t−1]  − x_pre[t−1] / τ_pre   + s_pre[t]
    x_post[t] = x_post[t−1] − x_post[t−1] / τ_post + s_post[t]
    ΔW[t] = f_post(W) ⊙ Σ_n s_post[t] x_pre[t]ᵀ − f_pre(W) ⊙ Σ_n x_post[t] s_pre[t]ᵀ

(the traces are updated first, so coincident spikes count on both sides). A pre spike after a post spike
depresses (−x_post), a post spike after a pre spike potentiates (+x_pre). For a convolution the outer products run
over every (output position, kernel offset) pair, i.e. over the unfolded input patches. The reward-modulated rules
(Florian 2007) use exponential decay x ← x·e^{−1/τ} + s: MSTDP keeps the per-sample eligibility
ζ = f_post(W) ⊙ s_post x_preᵀ − f_pre(W) ⊙ x_post s_preᵀ and ΔW = Σ_n r_n ζ_n; MSTDPET also low-pass filters
the eligibility, e ← e·e^{−1/τ_e} + ζ/τ_e, and ΔW = r · e.

The ``*_step`` functions take SpikingJelly 2.0's arguments (traces as a ``(pre, post)`` pair, keyword-only time
constants) and return ``(ΔW, (x_pre, x_post))``; the ``*_single_step`` / ``stdp_multi_step`` ones keep
SpikingJelly 0.0.0.0.14's form ``(layer, in_spike, out_spike, trace_pre, trace_post, tau_pre, tau_post, f_pre,
f_post) → (trace_pre, trace_post, ΔW)`` with ``None`` traces meaning zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as torch_F


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def check_time_constants(*, exponential: bool = False, **taus: float) -> None:
    """τ must be finite and ≥ 1 step for the linear trace decay (x − x/τ), > 0 for the exponential one."""
    for name, tau in taus.items():
        if not math.isfinite(tau) or tau <= 0 or (not exponential and tau < 1):
            raise ValueError(f"{name} must be finite and {'> 0' if exponential else '>= 1'} time steps, got {tau}")


def _check(in_spike, out_spike, trace, weight, ndim: int) -> None:
    if in_spike.dim() != ndim or out_spike.dim() != ndim:
        raise ValueError(f"pre and post spikes must both have {ndim} dimensions, got {tuple(in_spike.shape)} and "
                         f"{tuple(out_spike.shape)}")
    ch = 0 if ndim == 1 else 1
    if in_spike.shape[ch] != weight.shape[1] or out_spike.shape[ch] != weight.shape[0]:
        raise ValueError(f"spike shapes {tuple(in_spike.shape)} (pre) and {tuple(out_spike.shape)} (post) do not "
                         f"match the weight {tuple(weight.shape)}")
    if ndim > 1 and in_spike.shape[0] != out_spike.shape[0]:
        raise ValueError(f"pre and post spikes have different batch sizes: {in_spike.shape[0]} and "
                         f"{out_spike.shape[0]}")
    for name, spike, state in (("pre", in_spike, trace[0]), ("post", out_spike, trace[1])):
        if state.shape != spike.shape:
            raise ValueError(f"the {name} trace has shape {tuple(state.shape)} but the spikes {tuple(spike.shape)}; "
                             "reset the learner before changing the batch size")


def _linear_decay(trace: torch.Tensor, spike: torch.Tensor, tau: float) -> torch.Tensor:
    return trace - trace / tau + spike


def _exp_decay(trace: torch.Tensor, spike: torch.Tensor, tau: float) -> torch.Tensor:
    return trace * math.exp(-1.0 / tau) + spike


def stdp_linear_step(in_spike: torch.Tensor, out_spike: torch.Tensor, trace: tuple[torch.Tensor, torch.Tensor],
                     weight: torch.Tensor, *, tau_pre: float, tau_post: float,
                     f_pre: Callable = _identity, f_post: Callable = _identity):
    """One STDP step for a Linear synapse: spikes [N, in] and [N, out], W [out, in]. Returns (ΔW, traces)."""
    check_time_constants(tau_pre=tau_pre, tau_post=tau_post)
    _check(in_spike, out_spike, trace, weight, 2)
    trace_pre = _linear_decay(trace[0], in_spike, tau_pre)
    trace_post = _linear_decay(trace[1], out_spike, tau_post)
    potentiation = out_spike.transpose(0, 1) @ trace_pre   # Σ_n s_post x_preᵀ  [out, in]
    depression = trace_post.transpose(0, 1) @ in_spike     # Σ_n x_post s_preᵀ  [out, in]
    return f_post(weight) * potentiation - f_pre(weight) * depression, (trace_pre, trace_post)


def _conv_step(in_spike, out_spike, trace, weight, stride, tau_pre, tau_post, f_pre, f_post, ndim):
    check_time_constants(tau_pre=tau_pre, tau_post=tau_post)
    _check(in_spike, out_spike, trace, weight, ndim)
    stride = tuple(stride)
    if any(s <= 0 for s in stride):
        raise ValueError(f"stride must be positive, got {stride}")
    kernel = tuple(weight.shape[2:])
    expected = tuple((size - k) // s + 1 for size, k, s in zip(in_spike.shape[2:], kernel, stride, strict=True))
    if tuple(out_spike.shape[2:]) != expected:
        raise ValueError(f"post spikes have spatial shape {tuple(out_spike.shape[2:])}, but a kernel {kernel} with "
                         f"stride {stride} on the (padded) input {tuple(in_spike.shape[2:])} gives {expected}")
    trace_pre = _linear_decay(trace[0], in_spike, tau_pre)
    trace_post = _linear_decay(trace[1], out_spike, tau_post)
    if ndim == 3:  # Conv1d: unfold as a 1 × L image
        kernel2, stride2 = (1, kernel[0]), (1, stride[0])
        pre_s, pre_x = in_spike.unsqueeze(2), trace_pre.unsqueeze(2)
    else:
        kernel2, stride2 = kernel, stride
        pre_s, pre_x = in_spike, trace_pre
    n, c_out = out_spike.shape[:2]
    patches_s = torch_F.unfold(pre_s, kernel2, stride=stride2)  # [N, C_in·k, L]
    patches_x = torch_F.unfold(pre_x, kernel2, stride=stride2)
    post_s = out_spike.reshape(n, c_out, -1)                    # [N, C_out, L]
    post_x = trace_post.reshape(n, c_out, -1)
    potentiation = torch.einsum("nol,nkl->ok", post_s, patches_x).reshape(weight.shape)
    depression = torch.einsum("nol,nkl->ok", post_x, patches_s).reshape(weight.shape)
    return f_post(weight) * potentiation - f_pre(weight) * depression, (trace_pre, trace_post)


def stdp_conv2d_step(in_spike: torch.Tensor, out_spike: torch.Tensor, trace: tuple[torch.Tensor, torch.Tensor],
                     weight: torch.Tensor, *, stride: tuple[int, int], tau_pre: float, tau_post: float,
                     f_pre: Callable = _identity, f_post: Callable = _identity):
    """One STDP step for a Conv2d synapse (groups 1, dilation 1) on an already padded input [N, C_in, H, W]."""
    return _conv_step(in_spike, out_spike, trace, weight, stride, tau_pre, tau_post, f_pre, f_post, 4)


def stdp_conv1d_step(in_spike: torch.Tensor, out_spike: torch.Tensor, trace: tuple[torch.Tensor, torch.Tensor],
                     weight: torch.Tensor, *, stride: tuple[int], tau_pre: float, tau_post: float,
                     f_pre: Callable = _identity, f_post: Callable = _identity):
    """One STDP step for a Conv1d synapse (groups 1, dilation 1) on an already padded input [N, C_in, L]."""
    return _conv_step(in_spike, out_spike, trace, weight, stride, tau_pre, tau_post, f_pre, f_post, 3)


def mstdp_linear_step(in_spike: torch.Tensor, out_spike: torch.Tensor, trace: tuple[torch.Tensor, torch.Tensor],
                      weight: torch.Tensor, *, tau_pre: float, tau_post: float,
                      f_pre: Callable = _identity, f_post: Callable = _identity):
    """MSTDP eligibility per sample, [N, out, in], with exponentially decaying traces. Returns (ζ, traces)."""
    check_time_constants(tau_pre=tau_pre, tau_post=tau_post, exponential=True)
    _check(in_spike, out_spike, trace, weight, 2)
    trace_pre = _exp_decay(trace[0], in_spike, tau_pre)
    trace_post = _exp_decay(trace[1], out_spike, tau_post)
    eligibility = (f_post(weight) * (out_spike.unsqueeze(2) * trace_pre.unsqueeze(1))
                   - f_pre(weight) * (trace_post.unsqueeze(2) * in_spike.unsqueeze(1)))
    return eligibility, (trace_pre, trace_post)


def mstdpet_linear_step(in_spike: torch.Tensor, out_spike: torch.Tensor, trace: tuple[torch.Tensor, torch.Tensor],
                        weight: torch.Tensor, *, tau_pre: float, tau_post: float,
                        f_pre: Callable = _identity, f_post: Callable = _identity):
    """MSTDPET eligibility for one unbatched sample (spikes [in] and [out]), [out, in]. Returns (ζ, traces)."""
    check_time_constants(tau_pre=tau_pre, tau_post=tau_post, exponential=True)
    _check(in_spike, out_spike, trace, weight, 1)
    trace_pre = _exp_decay(trace[0], in_spike, tau_pre)
    trace_post = _exp_decay(trace[1], out_spike, tau_post)
    eligibility = f_post(weight) * torch.outer(out_spike, trace_pre) - f_pre(weight) * torch.outer(trace_post, in_spike)
    return eligibility, (trace_pre, trace_post)


def mstdpet_reward_step(reward, eligibility: torch.Tensor, trace_e: torch.Tensor, *, tau_trace: float):
    """e ← e·exp(−1/τ_e) + ζ/τ_e and ΔW = r·e. Returns (ΔW, e)."""
    check_time_constants(tau_trace=tau_trace, exponential=True)
    trace_e = trace_e * math.exp(-1.0 / tau_trace) + eligibility / tau_trace
    return reward * trace_e, trace_e


# ----- SpikingJelly 0.0.0.0.14 spellings: (layer, in_spike, out_spike, trace_pre, trace_post, ...) -----------------

def _as_trace(trace, like: torch.Tensor) -> torch.Tensor:
    if isinstance(trace, torch.Tensor):
        return trace
    return torch.full_like(like, 0.0 if trace is None else float(trace))


def padded_input(conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input as the convolution sees it after its padding (zeros, reflect, replicate or circular)."""
    pad = conv._reversed_padding_repeated_twice
    if not any(pad):
        return x
    return torch_F.pad(x, pad, mode="constant" if conv.padding_mode == "zeros" else conv.padding_mode)


def check_conv_synapse(conv: nn.Module) -> None:
    if any(d != 1 for d in conv.dilation):
        raise NotImplementedError(f"STDP on a convolution with dilation {conv.dilation} is not implemented "
                                  "(dilation must be 1)")
    if conv.groups != 1:
        raise NotImplementedError(f"STDP on a grouped convolution (groups={conv.groups}) is not implemented")


def stdp_linear_single_step(fc: nn.Linear, in_spike, out_spike, trace_pre, trace_post, tau_pre: float,
                            tau_post: float, f_pre: Callable = _identity, f_post: Callable = _identity):
    dw, (tp, tq) = stdp_linear_step(in_spike, out_spike, (_as_trace(trace_pre, in_spike),
                                                          _as_trace(trace_post, out_spike)),
                                    fc.weight.detach(), tau_pre=tau_pre, tau_post=tau_post, f_pre=f_pre,
                                    f_post=f_post)
    return tp, tq, dw


def _conv_single_step(rule, conv, in_spike, out_spike, trace_pre, trace_post, tau_pre, tau_post, f_pre, f_post):
    check_conv_synapse(conv)
    x = padded_input(conv, in_spike)
    dw, (tp, tq) = rule(x, out_spike, (_as_trace(trace_pre, x), _as_trace(trace_post, out_spike)),
                        conv.weight.detach(), stride=conv.stride, tau_pre=tau_pre, tau_post=tau_post, f_pre=f_pre,
                        f_post=f_post)
    return tp, tq, dw


def stdp_conv2d_single_step(conv: nn.Conv2d, in_spike, out_spike, trace_pre, trace_post, tau_pre: float,
                            tau_post: float, f_pre: Callable = _identity, f_post: Callable = _identity):
    """As :func:`stdp_linear_single_step` for a Conv2d; the pre trace has the padded input's shape."""
    return _conv_single_step(stdp_conv2d_step, conv, in_spike, out_spike, trace_pre, trace_post, tau_pre, tau_post,
                             f_pre, f_post)


def stdp_conv1d_single_step(conv: nn.Conv1d, in_spike, out_spike, trace_pre, trace_post, tau_pre: float,
                            tau_post: float, f_pre: Callable = _identity, f_post: Callable = _identity):
    return _conv_single_step(stdp_conv1d_step, conv, in_spike, out_spike, trace_pre, trace_post, tau_pre, tau_post,
                             f_pre, f_post)


def stdp_multi_step(layer: nn.Linear | nn.Conv1d | nn.Conv2d, in_spike, out_spike, trace_pre, trace_post,
                    tau_pre: float, tau_post: float, f_pre: Callable = _identity, f_post: Callable = _identity):
    """The single-step rule over [T, ...] spike sequences; ΔW is summed over T."""
    if isinstance(layer, nn.Linear):
        single = stdp_linear_single_step
    elif isinstance(layer, nn.Conv1d):
        single = stdp_conv1d_single_step
    elif isinstance(layer, nn.Conv2d):
        single = stdp_conv2d_single_step
    else:
        raise NotImplementedError(f"STDP is implemented for Linear, Conv1d and Conv2d, not {type(layer).__name__}")
    delta_w = torch.zeros_like(layer.weight.detach())
    for t in range(in_spike.shape[0]):
        trace_pre, trace_post, dw = single(layer, in_spike[t], out_spike[t], trace_pre, trace_post, tau_pre, tau_post,
                                           f_pre, f_post)
        delta_w += dw
    return trace_pre, trace_post, delta_w


def mstdp_linear_single_step(fc: nn.Linear, in_spike, out_spike, trace_pre, trace_post, tau_pre: float,
                             tau_post: float, f_pre: Callable = _identity, f_post: Callable = _identity):
    elig, (tp, tq) = mstdp_linear_step(in_spike, out_spike, (_as_trace(trace_pre, in_spike),
                                                             _as_trace(trace_post, out_spike)),
                                       fc.weight.detach(), tau_pre=tau_pre, tau_post=tau_post, f_pre=f_pre,
                                       f_post=f_post)
    return tp, tq, elig


def mstdpet_linear_single_step(fc: nn.Linear, in_spike, out_spike, trace_pre, trace_post, tau_pre: float,
                               tau_post: float, f_pre: Callable = _identity, f_post: Callable = _identity):
    elig, (tp, tq) = mstdpet_linear_step(in_spike, out_spike, (_as_trace(trace_pre, in_spike),
                                                               _as_trace(trace_post, out_spike)),
                                         fc.weight.detach(), tau_pre=tau_pre, tau_post=tau_post, f_pre=f_pre,
                                         f_post=f_post)
    return tp, tq, elig


__all__ = [
    "stdp_linear_step", "stdp_conv1d_step", "stdp_conv2d_step", "mstdp_linear_step", "mstdpet_linear_step",
    "mstdpet_reward_step", "stdp_linear_single_step", "stdp_conv1d_single_step", "stdp_conv2d_single_step",
    "stdp_multi_step", "mstdp_linear_single_step", "mstdpet_linear_single_step",
]
