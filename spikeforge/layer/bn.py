"""Batch normalisation for spiking networks (SpikingJelly's ``layer.bn``) and STBP's tdBN.

* ``ThresholdDependentBatchNorm{1,2,3}d`` (tdBN, Zheng et al. 2021) and STBP's :class:`tdBatchNorm`.
* ``TemporalEffectiveBatchNorm{1,2,3}d`` (TEBN, Duan et al. 2022): shared statistics over (T, N, ...), then a
  learnable scale per time step: y[t] = λ[t] · BN(x)[t].
* ``BatchNormThroughTime{1,2,3}d`` (BNTT, Kim & Panda 2021): a separate BatchNorm (no bias) for every time step.
* :class:`NeuNorm` (Wu et al. 2019): an auxiliary neuron subtracts normalised layer activity.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as torch_F

from .. import functional as F
from ..base import MemoryModule


class _ThresholdDependentBatchNorm(nn.modules.batchnorm._BatchNorm):
    """tdBN (Zheng et al. 2021), SpikingJelly form: weight initialised to α·V_th; multi-step input only.

    Statistics are taken over time and batch (and space) jointly: [T, N, C, ...] is folded to [T·N, C, ...].
    """

    _expected_step_dims: tuple[int, ...] = ()

    def __init__(self, alpha: float, v_th: float, *args, step_mode: str = "m", **kwargs):
        super().__init__(*args, **kwargs)
        if step_mode != "m":
            raise ValueError("threshold-dependent BatchNorm works on whole sequences: step_mode must be 'm'")
        self.step_mode = step_mode
        self.alpha = float(alpha)
        self.v_th = F.check_threshold(v_th)
        if self.affine:
            nn.init.constant_(self.weight, self.alpha * self.v_th)

    def _check_input_dim(self, x):  # called by BatchNorm on the folded [T·N, C, ...] tensor
        if x.dim() not in self._expected_step_dims:
            raise ValueError(f"{type(self).__name__} got a folded input of shape {tuple(x.shape)}")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() - 1 not in self._expected_step_dims:
            raise ValueError(f"{type(self).__name__} expects x_seq [T, N, C, ...] with "
                             f"{[d + 1 for d in self._expected_step_dims]} dims, got shape {tuple(x_seq.shape)}")
        return F.seq_to_ann_forward(x_seq, super().forward)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, v_th={self.v_th}"


class ThresholdDependentBatchNorm1d(_ThresholdDependentBatchNorm):
    _expected_step_dims = (2, 3)

    def __init__(self, alpha: float, v_th: float, *args, **kwargs):  # args: num_features, eps, momentum, ...
        super().__init__(alpha, v_th, *args, **kwargs)


class ThresholdDependentBatchNorm2d(_ThresholdDependentBatchNorm):
    _expected_step_dims = (4,)

    def __init__(self, alpha: float, v_th: float, *args, **kwargs):  # args: num_features, eps, momentum, ...
        super().__init__(alpha, v_th, *args, **kwargs)


class tdBatchNorm(nn.BatchNorm2d):  # noqa: N801 - the STBP name
    """STBP's tdBN: y = γ·α·V_th·(x − μ)/√(σ² + ε) + β, μ and σ² over (T, N, H, W) jointly.

    The state_dict is a plain BatchNorm2d's (weight, bias, running_mean, running_var, num_batches_tracked),
    so STBP checkpoints load. Input is time-first [T, N, C, H, W] (or [T, N, C]); ``time_dim=-1`` accepts STBP's
    time-last layout [N, C, H, W, T]. The running variance uses the unbiased n/(n−1) correction, n = T·N·H·W.
    """

    def __init__(self, num_features: int, alpha: float = 1.0, v_th: float = 0.4, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True, track_running_stats: bool = True,
                 time_dim: int = 0):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.alpha = float(alpha)
        self.v_th = F.check_threshold(v_th)
        self.time_dim = int(time_dim)

    def _check_input_dim(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f"tdBatchNorm expects [T, N, C, H, W] or [T, N, C] input, got {x.dim() + 1} dims")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.movedim(self.time_dim, 0) if self.time_dim != 0 else x
        if x_seq.dim() not in (3, 5):
            raise ValueError(f"tdBatchNorm expects x of shape [T, N, C, H, W] or [T, N, C], got {tuple(x.shape)}")
        y = F.seq_to_ann_forward(x_seq, self._normalise)
        return y.movedim(0, self.time_dim) if self.time_dim != 0 else y

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training or not self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        scale = self.weight * (self.alpha * self.v_th) if self.affine else None
        return torch_F.batch_norm(x, self.running_mean, self.running_var, scale, self.bias, use_batch_stats,
                                  momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, v_th={self.v_th}"


class ThresholdDependentBatchNorm3d(_ThresholdDependentBatchNorm):
    _expected_step_dims = (5,)

    def __init__(self, alpha: float, v_th: float, *args, **kwargs):  # args: num_features, eps, momentum, ...
        super().__init__(alpha, v_th, *args, **kwargs)


class _TemporalEffectiveBatchNorm(nn.modules.batchnorm._BatchNorm):
    """TEBN: BatchNorm over (T·N, ...) jointly, then y[t] = scale[t] · BN(x)[t]; ``scale`` starts at 1.

    Multi-step only (``step_mode`` is 'm'). Constructor: ``(T, num_features, eps, momentum, affine,
    track_running_stats)`` as SpikingJelly's.
    """

    _expected_folded_dims: tuple[int, ...] = ()

    def __init__(self, T: int, *args, **kwargs):  # noqa: N803 - SpikingJelly's argument name
        super().__init__(*args, **kwargs)
        self.step_mode = "m"
        self.scale = nn.Parameter(torch.ones(T))

    def _check_input_dim(self, x):
        if x.dim() not in self._expected_folded_dims:
            raise ValueError(f"{type(self).__name__} expects x_seq with {[d + 1 for d in self._expected_folded_dims]}"
                             f" dims ([T, N, C, ...]); the folded input has shape {tuple(x.shape)}")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.shape[0] != self.scale.shape[0]:
            raise ValueError(f"{type(self).__name__} was built for T={self.scale.shape[0]}, got x_seq with "
                             f"T={x_seq.shape[0]}")
        y_seq = F.seq_to_ann_forward(x_seq, super().forward)
        return y_seq * self.scale.view(-1, *([1] * (y_seq.dim() - 1)))


class TemporalEffectiveBatchNorm1d(_TemporalEffectiveBatchNorm):
    _expected_folded_dims = (2, 3)


class TemporalEffectiveBatchNorm2d(_TemporalEffectiveBatchNorm):
    _expected_folded_dims = (4,)


class TemporalEffectiveBatchNorm3d(_TemporalEffectiveBatchNorm):
    _expected_folded_dims = (5,)


class _BatchNormThroughTime(MemoryModule):
    """BNTT: ``bn_list[t]`` normalises time step t (its own statistics and weight, no bias).

    The step counter ``t`` is state: it advances by one per step (in 'm' mode by T per call) and
    :func:`~spikeforge.functional.reset_net` sets it back, so a sequence longer than ``T`` raises an error.
    """

    bn_type: type[nn.modules.batchnorm._BatchNorm] = nn.BatchNorm2d

    def __init__(self, T: int, num_features: int, eps: float = 1e-5, momentum: float = 0.1,  # noqa: N803
                 affine: bool = True, track_running_stats: bool = True, step_mode: str = "s"):
        super().__init__(step_mode)
        self.bn_list = nn.ModuleList(self.bn_type(num_features, eps, momentum, affine, track_running_stats)
                                     for _ in range(T))
        for bn in self.bn_list:
            bn.bias = None
        self.T = T
        self.register_memory("t", -1)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.t + 1
        if t >= self.T:
            raise ValueError(f"{type(self).__name__} has one BatchNorm per time step for T={self.T}; step {t + 1} "
                             "needs a reset (functional.reset_net) first")
        self.t = t
        return self.bn_list[t](x)


class BatchNormThroughTime1d(_BatchNormThroughTime):
    bn_type = nn.BatchNorm1d


class BatchNormThroughTime2d(_BatchNormThroughTime):
    bn_type = nn.BatchNorm2d


class BatchNormThroughTime3d(_BatchNormThroughTime):
    bn_type = nn.BatchNorm3d


class NeuNorm(MemoryModule):
    """NeuNorm (Wu et al. 2019): an auxiliary neuron per position integrates the layer's channel-summed spikes.

    With input spikes S[t] of shape [N, C, H, W]:
    ``x[t] = k0 · x[t−1] + k1 · Σ_c S[t, :, c]`` (k1 = (1 − k0)/C², x[−1] = 0) and
    ``y[t] = S[t] − w ⊙ x[t]``, w a learnable [C, H, W] (or [1, H, W] with ``shared_across_channels``).
    """

    def __init__(self, in_channels: int, height: int, width: int, k: float = 0.9,
                 shared_across_channels: bool = False, step_mode: str = "s"):
        super().__init__(step_mode)
        self.register_memory("x", 0.0)
        self.k0 = k
        self.k1 = (1.0 - k) / in_channels**2
        self.w = nn.Parameter(torch.empty(1 if shared_across_channels else in_channels, height, width))
        nn.init.kaiming_uniform_(self.w, a=math.sqrt(5))

    def single_step_forward(self, in_spikes: torch.Tensor) -> torch.Tensor:
        prev = self.x
        if not isinstance(prev, torch.Tensor):
            prev = torch.full_like(in_spikes[:, :1], float(prev))
        y, self.x = F.neunorm_step(in_spikes, prev, self.w, self.k0, self.k1)
        return y

    def extra_repr(self) -> str:
        return f"shape={tuple(self.w.shape)}, k={self.k0}, step_mode={self.step_mode}"


__all__ = [
    "ThresholdDependentBatchNorm1d", "ThresholdDependentBatchNorm2d", "ThresholdDependentBatchNorm3d",
    "tdBatchNorm", "TemporalEffectiveBatchNorm1d", "TemporalEffectiveBatchNorm2d", "TemporalEffectiveBatchNorm3d",
    "BatchNormThroughTime1d", "BatchNormThroughTime2d", "BatchNormThroughTime3d", "NeuNorm",
]
