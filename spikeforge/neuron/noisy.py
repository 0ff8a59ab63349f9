r"""Noisy spiking neurons for exploration in deep RL (SpikingJelly 2.0's ``Noisy*`` neurons; reference path).

A noisy population adds temporally correlated ("colored") Gaussian noise twice per step during training: to the
input current, :math:`X_t + \sigma_v\,\epsilon^v_t`, and to the emitted spike, :math:`S_t + \sigma_s\,\epsilon^s_t`
(the reset uses the clean spike; the next layer — and the intra-layer connection of the ILC variant — sees the
noisy one). :math:`\sigma = \sigma_{init}/\sqrt{n}` for n neurons. The noise is drawn per RL rollout with
:meth:`NoisyBaseNode.reset_noise` (``num_rl_step`` rollout steps × ``T`` time steps per neuron) from
:func:`powerlaw_psd_gaussian` with exponent β (0: white, 1: pink, 2: brown); each training call consumes one
rollout step. A replay can feed back the noise of a stored step with ``load_colored_noise`` (batch-first
``[B, T, 2n]``, as ``get_colored_noise`` returns ``[T, 2n]``) and return to the drawn stream with
``cancel_load``. Each forward starts from V = V_reset (current 0) and runs exactly ``T`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn as nn

from .. import functional as F
from .. import surrogate
from ..spec import check_reset, check_threshold
from ._dynamics import log_python_path
from .extra import _ChargeFireReset, _MultiStepOnly

__all__ = ["powerlaw_psd_gaussian", "NoisyBaseNode", "NoisyCUBALIFNode", "NoisyILCBaseNode", "NoisyILCCUBALIFNode",
           "NoisyNonSpikingBaseNode", "NoisyNonSpikingIFNode"]


def powerlaw_psd_gaussian(exponent: float, size, fmin: float = 0.0, random_state=None) -> np.ndarray:
    r"""Gaussian noise with power spectral density :math:`\propto f^{-\beta}` along the last axis of ``size``
    (Timmer & König 1995): random complex Fourier coefficients with amplitude :math:`f^{-\beta/2}` (frequencies
    below ``fmin`` — at least 1/n — held at the cutoff's amplitude; real DC and, for even n, Nyquist terms), an
    inverse real FFT, and a division by the theoretical standard deviation, so each series has unit variance.
    ``random_state``: None, an int seed, a ``numpy.random.Generator`` or a ``RandomState``."""
    if isinstance(size, int | np.integer):
        shape = [int(size)]
    elif isinstance(size, Iterable):
        shape = [int(s) for s in size]
    else:
        raise ValueError("size must be an int or an iterable of ints")
    n = shape[-1]
    if not 0.0 <= fmin <= 0.5:
        raise ValueError("fmin must lie in [0, 0.5]")
    freqs = np.fft.rfftfreq(n)
    cutoff = max(fmin, 1.0 / n)
    below = int(np.sum(freqs < cutoff))
    amplitude = freqs.copy()
    if below and below < len(amplitude):
        amplitude[:below] = amplitude[below]
    amplitude = amplitude ** (-exponent / 2.0)
    tail = amplitude[1:].copy()
    tail[-1] *= (1 + n % 2) / 2.0
    sigma = 2.0 * np.sqrt(np.sum(tail ** 2)) / n

    if random_state is None or isinstance(random_state, int | np.integer):
        draw = np.random.default_rng(random_state).normal
    elif isinstance(random_state, np.random.Generator | np.random.RandomState):
        draw = random_state.normal
    else:
        raise ValueError("random_state must be None, an int, a numpy Generator or a RandomState")
    coeff_shape = [*shape[:-1], len(freqs)]
    amplitude = amplitude.reshape((1,) * (len(shape) - 1) + (-1,))
    real = draw(scale=amplitude, size=coeff_shape)
    imag = draw(scale=amplitude, size=coeff_shape)
    if n % 2 == 0:  # the Nyquist coefficient of an even-length series is real
        imag[..., -1] = 0.0
        real[..., -1] *= np.sqrt(2.0)
    imag[..., 0] = 0.0  # so is the mean's
    real[..., 0] *= np.sqrt(2.0)
    return np.fft.irfft(real + 1j * imag, n=n, axis=-1) / sigma


def _rollout_noise(beta: float, num_node: int, num_rl_step: int, T: int) -> torch.Tensor:
    """``[num_rl_step, T, num_node]`` colored noise, correlated along (rollout step, time) per neuron."""
    series = powerlaw_psd_gaussian(beta, [num_node, num_rl_step * T])
    return torch.tensor(series, dtype=torch.float32).reshape(num_node, num_rl_step, T).permute(1, 2, 0)


class _NoiseStream:
    def reset_noise(self, num_rl_step: int) -> None:
        """Draw the noise of the next ``num_rl_step`` rollout steps."""
        raise NotImplementedError

    def _check_stream(self) -> None:
        if not hasattr(self, "noise_step"):
            raise RuntimeError(f"{type(self).__name__} in training needs its noise: call reset_noise(num_rl_step) "
                               "first (or load_colored_noise)")


class NoisyBaseNode(_NoiseStream, _MultiStepOnly, _ChargeFireReset, nn.Module):
    """Noisy spiking population (see the module); subclass and define ``neuronal_charge(x)``."""

    spec = None

    def __init__(self, num_node, is_training: bool = True, T: int = 5, sigma_init: float = 0.5, beta: float = 0.0,
                 v_threshold: float = 0.5, v_reset: float | None = 0.0, surrogate_function=None):
        super().__init__()
        self.num_node, self.is_training, self.T, self.beta = int(num_node), bool(is_training), int(T), float(beta)
        self.sigma_v = self.sigma_s = sigma_init / math.sqrt(self.num_node)
        self.cn_v = self.cn_s = None
        self.v_threshold = check_threshold(v_threshold)
        self.v_reset = check_reset(v_reset)
        self.surrogate_function = surrogate.Rect() if surrogate_function is None else surrogate_function

    def _after_spike(self, t: int, spike: torch.Tensor):
        return None

    def _noise(self, drawn: str, loaded, t: int, device) -> torch.Tensor:
        return (getattr(self, drawn)[self.noise_step][t] if loaded is None else loaded[:, t]).to(device)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        log_python_path(type(self))
        self.init_tensor(x_seq[0])
        if self.is_training and (self.cn_v is None or self.cn_s is None):
            self._check_stream()
            self.noise_step += 1
        outputs, recurrent = [], None
        for t in range(self.T):
            x = x_seq[t] if recurrent is None else x_seq[t] + recurrent
            if self.is_training:
                x = x + self.sigma_v * self._noise("eps_v_seq", self.cn_v, t, x_seq.device)
            self.neuronal_charge(x)
            spike = self.neuronal_fire()
            self.neuronal_reset(spike)
            if self.is_training:
                spike = spike + self.sigma_s * self._noise("eps_s_seq", self.cn_s, t, x_seq.device)
            outputs.append(spike)
            recurrent = self._after_spike(t, spike)
        return torch.stack(outputs)

    def reset_noise(self, num_rl_step: int) -> None:
        self.eps_v_seq = _rollout_noise(self.beta, self.num_node, num_rl_step, self.T)
        self.eps_s_seq = _rollout_noise(self.beta, self.num_node, num_rl_step, self.T)
        self.noise_step = -1

    def get_colored_noise(self) -> torch.Tensor:
        """The current rollout step's noise ``[T, 2·num_node]`` (input noise, then spike noise)."""
        return torch.cat([self.eps_v_seq[self.noise_step], self.eps_s_seq[self.noise_step]], dim=1)

    def load_colored_noise(self, cn: torch.Tensor) -> None:
        self.cn_v, self.cn_s = cn[:, :, :self.num_node], cn[:, :, self.num_node:]

    def cancel_load(self) -> None:
        self.cn_v = self.cn_s = None


class NoisyCUBALIFNode(NoisyBaseNode):
    r"""Noisy CUBA LIF population: :math:`I \leftarrow \delta_c I + X`, :math:`V \leftarrow \delta_v V + I`."""

    def __init__(self, num_node, c_decay: float = 0.5, v_decay: float = 0.75, is_training: bool = True, T: int = 5,
                 sigma_init: float = 0.5, beta: float = 0.0, v_threshold: float = 0.5, v_reset: float | None = 0.0,
                 surrogate_function=None):
        super().__init__(num_node, is_training, T, sigma_init, beta, v_threshold, v_reset, surrogate_function)
        self.c_decay, self.v_decay = float(c_decay), float(v_decay)

    def init_tensor(self, data: torch.Tensor) -> None:
        super().init_tensor(data)
        self.c = torch.zeros_like(data)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.c = self.c * self.c_decay + x
        self.v = self.v * self.v_decay + self.c


class NoisyILCBaseNode(NoisyBaseNode):
    """Noisy population with the intra-layer connection of :class:`~spikeforge.neuron.ILCBaseNode` (the noisy
    spikes of step t feed step t+1 through ``conn``); define ``neuronal_charge``."""

    def __init__(self, act_dim, dec_pop_dim, is_training: bool = True, T: int = 5, sigma_init: float = 0.5,
                 beta: float = 0.0, v_threshold: float = 1.0, v_reset: float | None = 0.0, surrogate_function=None):
        super().__init__(int(act_dim) * int(dec_pop_dim), is_training, T, sigma_init, beta, v_threshold, v_reset,
                         surrogate_function)
        self.act_dim, self.dec_pop_dim = int(act_dim), int(dec_pop_dim)
        self.conn = nn.Conv1d(self.act_dim, self.num_node, self.dec_pop_dim, groups=self.act_dim)

    def _after_spike(self, t: int, spike: torch.Tensor):
        if t + 1 == self.T:
            return None
        return self.conn(spike.view(-1, self.act_dim, self.dec_pop_dim)).view(-1, self.num_node)


class NoisyILCCUBALIFNode(NoisyILCBaseNode):
    r"""Noisy ILC CUBA LIF population: :math:`I \leftarrow \delta_c I + X`, :math:`V \leftarrow \delta_v V + I`."""

    def __init__(self, act_dim, dec_pop_dim, c_decay: float = 0.5, v_decay: float = 0.75, is_training: bool = True,
                 T: int = 5, sigma_init: float = 0.5, beta: float = 0.0, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, surrogate_function=None):
        super().__init__(act_dim, dec_pop_dim, is_training, T, sigma_init, beta, v_threshold, v_reset,
                         surrogate_function)
        self.c_decay, self.v_decay = float(c_decay), float(v_decay)

    def init_tensor(self, data: torch.Tensor) -> None:
        super().init_tensor(data)
        self.c = torch.zeros_like(data)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.c = self.c * self.c_decay + x
        self.v = self.v * self.v_decay + self.c


class NoisyNonSpikingBaseNode(_NoiseStream, _MultiStepOnly, nn.Module):
    r"""Noisy non-spiking readout: :math:`X_t + \sigma \odot \epsilon_t` with a learnable per-neuron σ (init
    σ_init/√n), charged by ``neuronal_charge`` from V = 0 for ``T`` steps. ``decode``: ``'max-mem'``,
    ``'max-abs-mem'``, ``'mean-mem'``, ``'last-me'`` (SpikingJelly's spelling here), else the list of membranes."""

    spec = None

    def __init__(self, num_node, is_training: bool = True, T: int = 5, sigma_init: float = 0.5, beta: float = 0.0,
                 decode: str | None = None):
        super().__init__()
        self.num_node, self.is_training, self.T, self.beta = int(num_node), bool(is_training), int(T), float(beta)
        self.decode = decode
        self.sigma = nn.Parameter(torch.full((self.num_node,), sigma_init / math.sqrt(self.num_node)))
        self.cn = None

    def neuronal_charge(self, x: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define neuronal_charge(self, x)")

    def init_tensor(self, data: torch.Tensor) -> None:
        self.v = torch.zeros_like(data)

    def forward(self, x_seq: torch.Tensor):
        F.check_sequence(x_seq)
        log_python_path(type(self))
        self.init_tensor(x_seq[0])
        if self.is_training and self.cn is None:
            self._check_stream()
            self.noise_step += 1
        v_seq = []
        for t in range(self.T):
            x = x_seq[t]
            if self.is_training:
                noise = self.eps_seq[self.noise_step][t] if self.cn is None else self.cn[:, t]
                x = x + self.sigma * noise.to(x_seq.device)
            self.neuronal_charge(x)
            v_seq.append(self.v)
        if self.decode not in ("max-mem", "max-abs-mem", "mean-mem", "last-me"):
            return v_seq
        stacked = torch.stack(v_seq)
        if self.decode == "max-mem":
            return stacked.max(0).values
        if self.decode == "max-abs-mem":
            top, bottom = stacked.max(0).values, stacked.min(0).values
            return torch.where(top.abs() > bottom.abs(), top, bottom)
        if self.decode == "mean-mem":
            return stacked.mean(0)
        return v_seq[-1]

    def reset_noise(self, num_rl_step: int) -> None:
        self.eps_seq = _rollout_noise(self.beta, self.num_node, num_rl_step, self.T)
        self.noise_step = -1

    def get_colored_noise(self) -> torch.Tensor:
        return self.eps_seq[self.noise_step]

    def load_colored_noise(self, cn: torch.Tensor) -> None:
        self.cn = cn

    def cancel_load(self) -> None:
        self.cn = None


class NoisyNonSpikingIFNode(NoisyNonSpikingBaseNode):
    r"""Noisy non-spiking IF readout: :math:`V \leftarrow V + X + \sigma\odot\epsilon`."""

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = self.v + x
