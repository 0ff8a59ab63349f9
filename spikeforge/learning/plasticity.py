"""Learners that apply local plasticity to a synapse from recorded spikes (SpikingJelly 2.0's ``plasticity``).

A learner watches a synapse (``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d``, including ``spikeforge.layer``'s) and
the neuron after it: every forward pass records the synapse's input (pre-synaptic spikes) and the neuron's output
(post-synaptic spikes), detached. :meth:`STDPLearner.step` turns the records into a weight change with the
rules of :mod:`spikeforge.learning.rules`, walking the records (and, in 'm' mode, their time steps) in order,
and either returns ΔW (``on_grad=False``) or **subtracts** it from ``synapse.weight.grad`` (``on_grad=True``),
so that ``optimizer.step()`` moves the weight by +lr·ΔW — STDP and a gradient loss can share one optimiser.
Traces persist across calls until :meth:`reset`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..base import MemoryModule
from . import rules


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class SpikeRecorder:
    """Records a module's first input (``where='input'``) or its output, detached, on every forward call."""

    def __init__(self, module: nn.Module, where: str):
        self.records: list[torch.Tensor] = []
        self._enabled = True
        if where == "input":
            self.hooks = [module.register_forward_pre_hook(self._on_input)]
        else:
            self.hooks = [module.register_forward_hook(self._on_output)]

    def _on_input(self, module, args):
        if self._enabled:
            self.records.append(args[0].detach())

    def _on_output(self, module, args, output):
        if self._enabled:
            self.records.append(output.detach())

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def is_enable(self) -> bool:
        return self._enabled

    def clear_recorded_data(self) -> None:
        self.records.clear()

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    close = remove_hooks


def _subtract_from_grad(weight: torch.Tensor, delta_w: torch.Tensor) -> None:
    weight.grad = -delta_w if weight.grad is None else weight.grad - delta_w


class _Learner(MemoryModule):
    """Shared plumbing: the two recorders, enable/disable/close, reset of traces and records."""

    def _watch(self, synapse: nn.Module, sn: nn.Module) -> None:
        self.synapse = synapse
        self.in_spike_monitor = SpikeRecorder(synapse, "input")
        self.out_spike_monitor = SpikeRecorder(sn, "output")

    def reset(self) -> None:
        super().reset()
        self.in_spike_monitor.clear_recorded_data()
        self.out_spike_monitor.clear_recorded_data()

    def enable(self) -> None:
        self._check_open()
        self.in_spike_monitor.enable()
        self.out_spike_monitor.enable()

    def disable(self) -> None:
        self.in_spike_monitor.disable()
        self.out_spike_monitor.disable()

    def close(self) -> None:
        """Remove the hooks (the learner stops recording for good) and reset."""
        self.in_spike_monitor.remove_hooks()
        self.out_spike_monitor.remove_hooks()
        self.reset()

    def _check_open(self) -> None:
        if not self.in_spike_monitor.hooks or not self.out_spike_monitor.hooks:
            raise RuntimeError(f"this {type(self).__name__} was closed; create a new learner to learn again")

    def _pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self._check_open()
        pre, post = self.in_spike_monitor.records, self.out_spike_monitor.records
        if len(pre) != len(post):
            raise RuntimeError(f"{type(self).__name__}: the synapse was called {len(pre)} times but the neuron "
                               f"{len(post)} times since the last step(); they must alternate one to one")
        return list(zip(pre, post, strict=True))

    def _apply(self, fn):  # keep traces on the module's device when it moves
        for name, value in self._memories.items():
            if isinstance(value, torch.Tensor):
                self._memories[name] = fn(value)
        return super()._apply(fn)

    def _finish(self, delta_w: torch.Tensor, on_grad: bool, scale: float):
        if scale != 1.0:
            delta_w = delta_w * scale
        self.in_spike_monitor.clear_recorded_data()
        self.out_spike_monitor.clear_recorded_data()
        if on_grad:
            _subtract_from_grad(self.synapse.weight, delta_w)
            return None
        return delta_w


class STDPLearner(_Learner):
    """Trace-based STDP for a Linear, Conv1d or Conv2d synapse (SpikingJelly 2.0 signature).

    ``STDPLearner(step_mode, synapse, sn, tau_pre, tau_post, f_pre=identity, f_post=identity)``: ``sn`` is the
    neuron whose output spikes are the synapse's post-synaptic spikes. ``step_mode`` is how the synapse is called:
    's' — one step [N, ...] per forward; 'm' — a sequence [T, N, ...] per forward. The rule (see
    :mod:`spikeforge.learning.rules`), per time step t:

        x_pre ← x_pre − x_pre/τ_pre + s_pre,  x_post ← x_post − x_post/τ_post + s_post,
        ΔW += f_post(W) ⊙ Σ_n s_post x_preᵀ − f_pre(W) ⊙ Σ_n x_post s_preᵀ.

    ``step(on_grad=True, scale=1.0)`` consumes the records since the last call: with ``on_grad`` it subtracts
    scale·ΔW from ``synapse.weight.grad`` (so a minimising optimiser adds lr·scale·ΔW) and returns None, else it
    returns scale·ΔW. ``reset()`` zeroes the traces and drops the records; ``disable()``/``enable()`` pause
    recording; ``close()`` removes the hooks. Convolutions: groups 1, dilation 1; padding as the synapse's
    ``padding_mode`` (the pre trace lives on the padded input).
    """

    def __init__(self, step_mode: str, synapse: nn.Conv1d | nn.Conv2d | nn.Linear, sn: nn.Module,
                 tau_pre: float, tau_post: float, f_pre: Callable = _identity, f_post: Callable = _identity) -> None:
        rules.check_time_constants(tau_pre=tau_pre, tau_post=tau_post)
        if not isinstance(synapse, nn.Linear | nn.Conv1d | nn.Conv2d):
            raise NotImplementedError(f"STDPLearner: STDP is implemented for Linear, Conv1d and Conv2d synapses, "
                                      f"not {type(synapse).__name__}")
        if isinstance(synapse, nn.Conv1d | nn.Conv2d):
            rules.check_conv_synapse(synapse)
        super().__init__(step_mode)
        self.tau_pre = tau_pre
        self.tau_post = tau_post
        self.f_pre = f_pre
        self.f_post = f_post
        self._watch(synapse, sn)
        self.register_memory("trace_pre", None)
        self.register_memory("trace_post", None)

    def _one_step(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        syn = self.synapse
        kwargs = dict(tau_pre=self.tau_pre, tau_post=self.tau_post, f_pre=self.f_pre, f_post=self.f_post)
        if isinstance(syn, nn.Linear):
            rule = rules.stdp_linear_step
        else:
            pre = rules.padded_input(syn, pre)
            rule = rules.stdp_conv1d_step if isinstance(syn, nn.Conv1d) else rules.stdp_conv2d_step
            kwargs["stride"] = syn.stride
        trace = (rules._as_trace(self.trace_pre, pre), rules._as_trace(self.trace_post, post))
        dw, (self.trace_pre, self.trace_post) = rule(pre, post, trace, syn.weight.detach(), **kwargs)
        return dw

    @torch.no_grad()
    def step(self, on_grad: bool = True, scale: float = 1.0) -> torch.Tensor | None:
        pairs = self._pairs()
        if not pairs:
            return None
        delta_w = torch.zeros_like(self.synapse.weight)
        for pre, post in pairs:
            if self.step_mode == "m":
                if pre.shape[0] != post.shape[0]:
                    raise ValueError(f"STDPLearner('m'): the input has T={pre.shape[0]} but the neuron's output "
                                     f"T={post.shape[0]}")
                for pre_t, post_t in zip(pre, post, strict=True):
                    delta_w += self._one_step(pre_t, post_t)
            else:
                delta_w += self._one_step(pre, post)
        return self._finish(delta_w, on_grad, scale)

    def extra_repr(self) -> str:
        return f"tau_pre={self.tau_pre}, tau_post={self.tau_post}, step_mode={self.step_mode}"


class MSTDPLearner(_Learner):
    """Reward-modulated STDP (Florian 2007) for a Linear synapse, single-step, batched.

    Each ``step(reward)`` consumes exactly one recorded (pre, post) pair: traces decay exponentially
    (x ← x·e^{−1/τ} + s), the new per-sample eligibility ζ_n = f_post(W) ⊙ s_post x_preᵀ − f_pre(W) ⊙ x_post
    s_preᵀ is stored, and ΔW = Σ_n r_n ζ_n^{previous} uses the eligibility of the *previous* step (the reward
    judges the last action). ``reward`` is a scalar or [N].
    """

    def __init__(self, step_mode: str, synapse: nn.Linear, sn: nn.Module, tau_pre: float, tau_post: float,
                 f_pre: Callable = _identity, f_post: Callable = _identity) -> None:
        rules.check_time_constants(tau_pre=tau_pre, tau_post=tau_post, exponential=True)
        if step_mode != "s":
            raise ValueError(f"{type(self).__name__} supports step_mode='s' only, got {step_mode!r}")
        if not isinstance(synapse, nn.Linear):
            raise NotImplementedError(f"{type(self).__name__} is implemented for Linear synapses, not "
                                      f"{type(synapse).__name__}")
        super().__init__(step_mode)
        self.tau_pre = tau_pre
        self.tau_post = tau_post
        self.f_pre = f_pre
        self.f_post = f_post
        self._watch(synapse, sn)
        self.register_memory("trace_pre", None)
        self.register_memory("trace_post", None)
        self.register_memory("eligibility", None)

    def _one_pair(self):
        pairs = self._pairs()
        if not pairs:
            return None
        if len(pairs) != 1:
            raise RuntimeError(f"{type(self).__name__}.step(reward) needs exactly one forward step per reward, "
                               f"got {len(pairs)}")
        return pairs[0]

    def _reward(self, reward) -> torch.Tensor:
        w = self.synapse.weight
        return torch.as_tensor(reward, device=w.device, dtype=w.dtype).detach()

    @torch.no_grad()
    def step(self, reward, on_grad: bool = True, scale: float = 1.0) -> torch.Tensor | None:
        pair = self._one_pair()
        if pair is None:
            return None
        pre, post = pair
        trace = (rules._as_trace(self.trace_pre, pre), rules._as_trace(self.trace_post, post))
        eligibility, traces = rules.mstdp_linear_step(pre, post, trace, self.synapse.weight.detach(),
                                                      tau_pre=self.tau_pre, tau_post=self.tau_post,
                                                      f_pre=self.f_pre, f_post=self.f_post)
        reward = self._reward(reward)
        if reward.dim() != 0 and tuple(reward.shape) != (pre.shape[0],):
            raise ValueError(f"MSTDPLearner: reward must be a scalar or of shape [N] = [{pre.shape[0]}], got "
                             f"{tuple(reward.shape)}")
        previous = torch.zeros_like(eligibility) if self.eligibility is None else self.eligibility
        if previous.shape != eligibility.shape:
            raise ValueError("MSTDPLearner: the batch size changed; reset the learner first")
        delta_w = (reward.reshape(-1, 1, 1) * previous).sum(0)
        self.trace_pre, self.trace_post = traces
        self.eligibility = eligibility
        return self._finish(delta_w, on_grad, scale)


class MSTDPETLearner(MSTDPLearner):
    """MSTDP with an eligibility trace (Florian 2007) for a Linear synapse, single-step, one unbatched sample.

    Spikes are [in] and [out]. The eligibility of the previous step feeds the trace
    e ← e·e^{−1/τ_trace} + ζ^{previous}/τ_trace, and ΔW = r·e for a scalar reward r.
    """

    def __init__(self, step_mode: str, synapse: nn.Linear, sn: nn.Module, tau_pre: float, tau_post: float,
                 tau_trace: float, f_pre: Callable = _identity, f_post: Callable = _identity) -> None:
        rules.check_time_constants(tau_trace=tau_trace, exponential=True)
        super().__init__(step_mode, synapse, sn, tau_pre, tau_post, f_pre, f_post)
        self.tau_trace = tau_trace
        self.register_memory("trace_e", None)

    @torch.no_grad()
    def step(self, reward, on_grad: bool = True, scale: float = 1.0) -> torch.Tensor | None:
        pair = self._one_pair()
        if pair is None:
            return None
        pre, post = pair
        trace = (rules._as_trace(self.trace_pre, pre), rules._as_trace(self.trace_post, post))
        eligibility, traces = rules.mstdpet_linear_step(pre, post, trace, self.synapse.weight.detach(),
                                                        tau_pre=self.tau_pre, tau_post=self.tau_post,
                                                        f_pre=self.f_pre, f_post=self.f_post)
        reward = self._reward(reward)
        if reward.dim() != 0:
            raise ValueError(f"MSTDPETLearner: reward must be a scalar, got shape {tuple(reward.shape)}")
        previous = torch.zeros_like(eligibility) if self.eligibility is None else self.eligibility
        trace_e = torch.zeros_like(eligibility) if self.trace_e is None else self.trace_e
        delta_w, self.trace_e = rules.mstdpet_reward_step(reward, previous, trace_e, tau_trace=self.tau_trace)
        self.trace_pre, self.trace_post = traces
        self.eligibility = eligibility
        return self._finish(delta_w, on_grad, scale)


__all__ = ["SpikeRecorder", "STDPLearner", "MSTDPLearner", "MSTDPETLearner"]
