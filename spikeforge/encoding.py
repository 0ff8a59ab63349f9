"""Encoders turning analog inputs into spikes (SpikingJelly ``activation_based.encoding`` names and behaviour).

* :class:`PoissonEncoder`: S = 1[U ≤ x], U ~ Uniform[0, 1) fresh at every call (rate coding, x ∈ [0, 1]).
* :class:`LatencyEncoder`: one spike per input, earlier for larger x (t_f = round((T − 1)(1 − x)) for 'linear',
  t_f = round(T − 1 − ln(αx + 1)) with α = e^{T−1} − 1 for 'log').
* :class:`WeightedPhaseEncoder`: x ∈ [0, 1 − 2^−K] as its K binary digits, S_i = i-th bit (weight 2^−(i+1)).
* :class:`PeriodicEncoder`: a given spike train [T, ...] replayed, one step per call.
* :class:`PopSpikeEncoderDeterministic` / :class:`PopSpikeEncoderRandom` / :class:`PopEncoder`: population
  coding of an observation by Gaussian receptive fields (learnable means and widths), fed to an IF neuron,
  drawn as Bernoulli spikes, or left analog.
* :class:`RepeatEncoder` (alias ``DirectEncoder``, spikeforge's): the analog input repeated for T steps.

Stateless encoders follow ``step_mode``: in 's' mode they encode one step; in 'm' mode they take ``[T, N, ...]``.
Stateful encoders (:class:`StatefulEncoder`) encode the first input after a reset into a train of ``T`` steps
and return step ``t`` of it at the t-th step (cyclically); in 'm' mode a call on ``[T', N, ...]`` returns the
next ``T'`` steps, i.e. the input's shape, as SpikingJelly does. :meth:`LatencyEncoder.encode_sequence` returns
the whole train ``[T, N, ...]`` of one input and :meth:`PoissonEncoder.encode_sequence` draws all T steps of a
``[N, ...]`` input at once.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from . import functional as F
from .base import MemoryModule


def _check_input(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


class StatelessEncoder(nn.Module):
    def __init__(self, step_mode: str = "s"):
        super().__init__()
        self.step_mode = F.check_step_mode(step_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(_check_input(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PoissonEncoder(StatelessEncoder):
    """Rate coding: each element spikes with probability x (clipped to [0, 1]) at every call."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.rand_like(x) <= x).to(x.dtype)

    def encode_sequence(self, x: torch.Tensor, T: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """All T steps at once: ``[N, ...]`` → ``[T, N, ...]`` (one random draw, no Python loop)."""
        x = _check_input(x)
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        noise = torch.rand((int(T), *x.shape), device=x.device, generator=generator)
        return (noise <= x).to(x.dtype)


class RepeatEncoder(StatelessEncoder):
    """Direct coding: repeat the analog input for T steps (``[N, ...]`` → ``[T, N, ...]``)."""

    def __init__(self, T: int):
        super().__init__(step_mode="m")
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T = int(T)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0).expand(self.T, *x.shape)


DirectEncoder = RepeatEncoder


class StatefulEncoder(MemoryModule):
    """An encoder with state: at the first step after :meth:`reset` it encodes its input into a spike train
    ``[T, ...]`` (:meth:`single_step_encode`) and emits step ``t mod T`` of that train at step t."""

    def __init__(self, T: int, step_mode: str = "s"):
        super().__init__(step_mode)
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be an int >= 1, got {T!r}")
        self.T = T
        self.register_memory("spike", None)
        self.register_memory("t", 0)

    def single_step_encode(self, x: torch.Tensor) -> torch.Tensor:
        """The train ``[T, *x.shape]`` of input x."""
        raise NotImplementedError

    def single_step_forward(self, x: torch.Tensor | None = None) -> torch.Tensor:
        if self.spike is None:
            self.spike = self.single_step_encode(x)
        out = self.spike[self.t]
        self.t = (self.t + 1) % self.spike.shape[0]
        return out

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 1 or x_seq.shape[0] == 0:
            raise ValueError("x_seq must be a tensor of shape [T', ...] with T' >= 1 in multi-step mode")
        if self.spike is None:
            self.spike = self.single_step_encode(x_seq[0])
        period = self.spike.shape[0]
        steps = (self.t + torch.arange(x_seq.shape[0], device=self.spike.device)) % period
        self.t = (self.t + x_seq.shape[0]) % period
        return self.spike[steps]

    def extra_repr(self) -> str:
        return f"T={self.T}, step_mode={self.step_mode}"


class PeriodicEncoder(StatefulEncoder):
    """Replay a spike train ``spike`` ([T, ...]) one step per call, cyclically.

    As in SpikingJelly 2.0 the train used is the input of the first call after a reset (``T`` comes from the
    constructor's ``spike``); calling without an input (``enc()``) replays the constructor's ``spike``.
    """

    def __init__(self, spike: torch.Tensor, step_mode: str = "s"):
        if not isinstance(spike, torch.Tensor) or spike.dim() < 1:
            raise ValueError("spike must be a tensor [T, ...] (the train to replay)")
        super().__init__(int(spike.shape[0]), step_mode)
        self.register_buffer("spike_train", spike, persistent=False)

    def single_step_encode(self, spike: torch.Tensor | None) -> torch.Tensor:
        return self.spike_train if spike is None else spike


class LatencyEncoder(StatefulEncoder):
    """Time-to-first-spike coding over T steps; one spike per element, earlier for larger x ∈ [0, 1].

    Successive steps return steps 0, 1, …, T−1, 0, … of the train encoded at the first step after a reset,
    in 's' and 'm' mode alike (SpikingJelly's behaviour: 'm' on ``[T', N, ...]`` returns ``[T', N, ...]``);
    :meth:`encode_sequence` returns the whole train ``[T, N, ...]`` of one input.
    """

    def __init__(self, T: int, enc_function: str = "linear", step_mode: str = "s"):
        if isinstance(T, int) and not isinstance(T, bool) and T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        super().__init__(T, step_mode)
        if enc_function not in ("linear", "log"):
            raise ValueError(f"enc_function must be 'linear' or 'log', got {enc_function!r}")
        self.enc_function = enc_function
        if enc_function == "log":
            self.alpha = math.exp(self.T - 1.0) - 1.0

    def spike_times(self, x: torch.Tensor) -> torch.Tensor:
        """The step of each element's spike (long)."""
        x = _check_input(x).clamp(0.0, 1.0)
        if self.enc_function == "log":
            t_f = self.T - 1.0 - torch.log(self.alpha * x + 1.0)
        else:
            t_f = (self.T - 1.0) * (1.0 - x)
        return t_f.round().long().clamp_(0, self.T - 1)

    def encode_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The train ``[T, *x.shape]`` of input x (stateless)."""
        t_f = self.spike_times(x)
        steps = torch.arange(self.T, device=x.device).view(self.T, *([1] * x.dim()))
        return (steps == t_f.unsqueeze(0)).to(x.dtype)

    single_step_encode = encode_sequence


class WeightedPhaseEncoder(StatefulEncoder):
    """Weighted phase coding (Kim et al. 2018) with K phases: x ∈ [0, 1 − 2^−K] is written in binary,
    x = Σ_i S_i·2^−(i+1), and phase i emits the bit S_i
    (greedy: S_i = 1[r_i ≥ 2^−(i+1)], r_{i+1} = r_i − S_i·2^−(i+1), r_0 = x)."""

    def __init__(self, K: int, step_mode: str = "s"):
        super().__init__(K, step_mode)

    def single_step_encode(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_input(x)
        if bool((x < 0).any()) or bool((x > 1 - 2 ** (-self.T)).any()):
            raise ValueError(f"WeightedPhaseEncoder(K={self.T}) encodes x in [0, 1 - 2^-{self.T}]")
        rest = x.clone()
        spike = torch.empty((self.T, *x.shape), dtype=x.dtype, device=x.device)
        w = 0.5
        for i in range(self.T):
            spike[i] = (rest >= w).to(x.dtype)
            rest = rest - w * spike[i]
            w *= 0.5
        return spike


def _population_parameters(obs_dim: int, pop_dim: int, mean_range, std: float):
    mean = torch.linspace(float(mean_range[0]), float(mean_range[1]), pop_dim).expand(1, obs_dim, pop_dim).clone()
    return nn.Parameter(mean), nn.Parameter(torch.full_like(mean, float(std)))


class _Population(nn.Module):
    """Gaussian receptive fields: neuron j of observation i has activity exp(−½((o_i − μ_ij)/σ_ij)²)."""

    def __init__(self, obs_dim: int, pop_dim: int, spike_ts: int, mean_range, std):
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.pop_dim = int(pop_dim)
        self.encoder_neuron_num = self.obs_dim * self.pop_dim
        self.spike_ts = int(spike_ts)
        self.mean, self.std = _population_parameters(self.obs_dim, self.pop_dim, mean_range, std)

    def population_activity(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, obs_dim]`` → ``[B, obs_dim·pop_dim]``."""
        obs = obs.reshape(-1, self.obs_dim, 1)
        return torch.exp(-0.5 * ((obs - self.mean) / self.std).square()).flatten(1)


class PopSpikeEncoderDeterministic(_Population):
    """Population coding → an IF neuron (V_th = 0.999, soft reset, detach_reset, straight-through gradient)
    driven by the activity for ``spike_ts`` steps: ``[B, obs_dim]`` → ``[spike_ts, B, obs_dim·pop_dim]``."""

    def __init__(self, obs_dim: int, pop_dim: int, spike_ts: int, mean_range, std):
        super().__init__(obs_dim, pop_dim, spike_ts, mean_range, std)
        from . import neuron, surrogate  # neuron imports functional; keep this module's import light

        self.neurons = neuron.IFNode(v_threshold=0.999, v_reset=None,
                                     surrogate_function=surrogate.DeterministicPass(), detach_reset=True)
        F.set_step_mode(self, "m")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        activity = self.population_activity(obs)
        return self.neurons(activity.unsqueeze(0).repeat(self.spike_ts, 1, 1))


class PopSpikeEncoderRandom(_Population):
    """Population coding → Bernoulli spikes of the activity at each of ``spike_ts`` steps (gradient straight
    through): ``[B, obs_dim]`` → ``[spike_ts, B, obs_dim·pop_dim]``."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        from .surrogate import poisson_pass

        activity = self.population_activity(obs)
        return poisson_pass.apply(activity.unsqueeze(0).expand(self.spike_ts, *activity.shape))


class PopEncoder(_Population):
    """Population coding, analog: the activity repeated for ``spike_ts`` steps."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.population_activity(obs).unsqueeze(0).repeat(self.spike_ts, 1, 1)


__all__ = ["StatelessEncoder", "StatefulEncoder", "PoissonEncoder", "RepeatEncoder", "DirectEncoder",
           "LatencyEncoder", "PeriodicEncoder", "WeightedPhaseEncoder", "PopSpikeEncoderDeterministic",
           "PopSpikeEncoderRandom", "PopEncoder"]
