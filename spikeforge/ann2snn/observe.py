"""Calibration observers: the activation statistic that sets each IF layer's threshold (or a quantiser's range).

An :class:`ActivationObserver` is an identity module that records, for every batch it sees, one statistic of its
input: the max times a fraction (``mode='max'`` or a float), or a percentile (``mode='99.9%'``). Per-batch
values are averaged like SpikingJelly's ``VoltageHook``, ``s = (1 − m)·s + m·s_batch`` after the first batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["ActivationObserver", "parse_mode"]

_MODE_ERROR = "mode must be 'max', a percentile such as '99.9%' or a float in (0, 1], got {!r}"


def parse_mode(mode) -> tuple[str, float]:
    """``'max'`` -> ('max', 1.0); ``'99.9%'`` -> ('percentile', 0.999); a float f in (0, 1] -> ('max', f).

    Raises ValueError naming ``mode`` for anything else (bools, '0%', '150%', 1.5, 'median' ...).
    """
    if isinstance(mode, bool):
        raise ValueError(_MODE_ERROR.format(mode))
    if isinstance(mode, str):
        text = mode.strip()
        if text.lower() == "max":
            return ("max", 1.0)
        if text.endswith("%"):
            try:
                q = float(text[:-1]) / 100.0
            except ValueError:
                q = float("nan")
            if 0.0 < q <= 1.0:
                return ("percentile", q)
        raise ValueError(_MODE_ERROR.format(mode))
    if isinstance(mode, (int, float)) and 0.0 < float(mode) <= 1.0:
        return ("max", float(mode))
    raise ValueError(_MODE_ERROR.format(mode))


def _check_momentum(momentum) -> None:
    if momentum is not None and not (isinstance(momentum, (int, float)) and 0.0 < momentum <= 1.0):
        raise ValueError(f"momentum must be None or in (0, 1], got {momentum!r}")


class ActivationObserver(nn.Module):
    """Identity that records an activation statistic per batch, averaged with ``momentum`` (EMA).

    Args:
        mode: ``'max'``; a float f in (0, 1]: f times the max; or a percentile string such as ``'99.9%'``: the
            ``ceil(q·n)``-th smallest of the n values (numpy's ``method='inverted_cdf'``), see :func:`parse_mode`.
        momentum: after the first batch, ``stat = (1 − momentum)·stat + momentum·batch_stat``; ``None`` keeps
            the maximum over all batches for max modes and the running mean of the per-batch percentiles.
        channel_wise: one statistic per channel (dim 1) instead of one over the whole tensor.

    After calibration, ``stat`` holds the statistic (float32, shape ``[1]``, or ``[C]`` when channel-wise),
    ``batches`` the number of batches seen and ``ndim`` the number of dimensions of the last input. ``stat`` is
    None before the first batch. The statistic is computed without gradients; the input passes unchanged.
    """

    def __init__(self, mode="max", momentum: float | None = 0.1, channel_wise: bool = False):
        super().__init__()
        self.kind, self.value = parse_mode(mode)
        _check_momentum(momentum)
        self.momentum, self.channel_wise = momentum, channel_wise
        self.stat: torch.Tensor | None = None
        self.batches = 0
        self.ndim = None

    def _batch_stat(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        flat = x.transpose(0, 1).reshape(x.shape[1], -1) if self.channel_wise else x.reshape(1, -1)
        if self.kind == "max":
            return flat.amax(dim=1) * self.value
        k = min(flat.shape[1], max(1, math.ceil(self.value * flat.shape[1])))
        return flat.kthvalue(k, dim=1).values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_wise and x.dim() < 2:
            raise ValueError("channel-wise normalisation needs activations with a channel dim 1")
        stat = self._batch_stat(x)
        self.ndim = x.dim()
        if self.stat is None:
            self.stat = stat
        elif self.momentum is None:
            # Whole-dataset statistic: the global max, or the mean of per-batch percentiles.
            self.stat = torch.maximum(self.stat, stat) if self.kind == "max" else \
                self.stat + (stat - self.stat) / (self.batches + 1)
        else:
            self.stat = (1 - self.momentum) * self.stat + self.momentum * stat
        self.batches += 1
        return x

    def extra_repr(self) -> str:
        mode = f"{self.value:g} of max" if self.kind == "max" and self.value != 1.0 else \
            "max" if self.kind == "max" else f"{100 * self.value:g}%"
        return f"mode={mode}, momentum={self.momentum}, channel_wise={self.channel_wise}"
