r"""Few-spike neurons (FS-neurons, Stöckl & Maass 2021) and their SpikingJelly 2.0 variants (reference path).

An FS-neuron approximates an activation function f with K spikes. Given the tables θ (thresholds), h (reset
amounts) and d (output weights), all of length K, and the gate value g (the input, or in multi-step mode the sum
of the K input steps):

.. math::
    V_1 = g,\qquad z_k = \Theta(V_k - \theta_k),\qquad V_{k+1} = V_k - h_k z_k,\qquad y = \sum_k d_k z_k

(Θ with the surrogate gradient of ``surrogate_function``, Sigmoid by default). Single-step mode returns y;
multi-step mode (input ``[K, ...]``) returns the K weighted spikes :math:`d_k z_k` ``[K, ...]``.

* :class:`OutlierAwareThresholdNode` — two tables: |g| ≤ ``split_threshold`` uses ``table``, larger magnitudes
  ``outlier_table``; it encodes |g| (optionally clamped to ±``clamp_value`` first) and restores the sign.
* :class:`HGNode` — piecewise tables: the region of g among the increasing ``gate_thresholds`` picks one of
  ``len(tables)`` tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from .. import surrogate
from ..base import StepModule

__all__ = ["FewSpikeTable", "FewSpikeNode", "OutlierAwareThresholdNode", "HGNode"]


def _vector(name: str, value) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor or sequence, got shape {tuple(t.shape)}")
    if torch.is_complex(t):
        raise TypeError(f"{name} must be real-valued")
    if not torch.is_floating_point(t):
        t = t.to(torch.get_default_dtype())
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must contain only finite values")
    return t.detach().clone()


class FewSpikeTable:
    """The K-step tables ``theta`` (thresholds), ``h`` (membrane decrements) and ``d`` (output weights)."""

    def __init__(self, theta, h, d):
        self.theta, self.h, self.d = _vector("theta", theta), _vector("h", h), _vector("d", d)
        if not self.theta.shape == self.h.shape == self.d.shape:
            raise ValueError(f"theta, h and d must have the same length, got {self.theta.numel()}, "
                             f"{self.h.numel()}, {self.d.numel()}")

    @property
    def K(self) -> int:
        return self.theta.numel()


def _check_table(name: str, table, K: int | None = None) -> FewSpikeTable:
    if not isinstance(table, FewSpikeTable):
        raise TypeError(f"{name} must be a FewSpikeTable, got {type(table).__name__}")
    if K is not None and table.K != K:
        raise ValueError(f"{name}.K must be {K}, got {table.K}")
    return table


class FewSpikeNode(StepModule, nn.Module):
    """The FS-neuron of one table (see the module)."""

    spec = None

    def __init__(self, table: FewSpikeTable, surrogate_function=None, step_mode: str = "s"):
        super().__init__()
        _check_table("table", table)
        self.register_buffer("theta", table.theta.clone())
        self.register_buffer("h", table.h.clone())
        self.register_buffer("d", table.d.clone())
        self.surrogate_function = surrogate.Sigmoid() if surrogate_function is None else surrogate_function
        self.step_mode = step_mode

    @property
    def K(self) -> int:
        return self.theta.numel()

    @staticmethod
    def _check_input(x, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor")
        if not torch.is_floating_point(x):
            raise TypeError(f"{name} must be a floating-point tensor")

    def _encode(self, gate: torch.Tensor, theta, h, d, sequence: bool) -> torch.Tensor:
        v, steps = gate, []
        for theta_k, h_k, d_k in zip(theta, h, d, strict=True):
            z = self.surrogate_function(v - theta_k)
            steps.append(d_k * z)
            v = v - h_k * z
        return torch.stack(steps) if sequence else sum(steps[1:], steps[0])

    def _forward_from_gate(self, gate: torch.Tensor, sequence: bool) -> torch.Tensor:
        return self._encode(gate, self.theta, self.h, self.d, sequence)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        return self._forward_from_gate(x, False)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        self._check_input(x_seq, "x_seq")
        if x_seq.shape[0] != self.K:
            raise ValueError(f"x_seq must have K={self.K} steps, got {x_seq.shape[0]}")
        return self._forward_from_gate(x_seq.sum(0), True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.single_step_forward(x) if self.step_mode == "s" else self.multi_step_forward(x)

    def extra_repr(self) -> str:
        return f"K={self.K}, step_mode={self.step_mode}"


class OutlierAwareThresholdNode(FewSpikeNode):
    """FS-neuron with a second table for outliers (|g| > ``split_threshold``); signed (see the module)."""

    def __init__(self, table: FewSpikeTable, outlier_table: FewSpikeTable, split_threshold: float,
                 clamp_value: float | None = None, surrogate_function=None, step_mode: str = "s"):
        _check_table("table", table)
        _check_table("outlier_table", outlier_table, table.K)
        split_threshold = float(split_threshold)
        if not math.isfinite(split_threshold) or split_threshold < 0:
            raise ValueError(f"split_threshold must be finite and >= 0, got {split_threshold}")
        if clamp_value is not None:
            clamp_value = float(clamp_value)
            if not math.isfinite(clamp_value) or clamp_value <= 0 or clamp_value < split_threshold:
                raise ValueError("clamp_value must be finite, > 0 and >= split_threshold")
        super().__init__(table, surrogate_function, step_mode)
        for name in ("theta", "h", "d"):
            ref = getattr(table, name)
            self.register_buffer(f"outlier_{name}", getattr(outlier_table, name).to(ref).clone())
        self.split_threshold, self.clamp_value = split_threshold, clamp_value

    def _forward_from_gate(self, gate: torch.Tensor, sequence: bool) -> torch.Tensor:
        if self.clamp_value is not None:
            gate = gate.clamp(-self.clamp_value, self.clamp_value)
        sign, magnitude = torch.sign(gate).detach(), gate.abs()
        inlier = magnitude <= self.split_threshold

        def pick(a, b):
            return [torch.where(inlier, a_k, b_k) for a_k, b_k in zip(a, b, strict=True)]

        out = self._encode(magnitude, pick(self.theta, self.outlier_theta), pick(self.h, self.outlier_h),
                           pick(self.d, self.outlier_d), sequence)
        return out * (sign.unsqueeze(0) if sequence else sign)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", split_threshold={self.split_threshold}, clamp_value={self.clamp_value}"


class HGNode(FewSpikeNode):
    """FS-neuron with one table per region of the gate value (see the module)."""

    def __init__(self, tables: Sequence[FewSpikeTable], gate_thresholds, surrogate_function=None,
                 step_mode: str = "s"):
        if len(tables) == 0:
            raise ValueError("tables must hold at least one FewSpikeTable")
        K = _check_table("tables[0]", tables[0]).K
        for i, table in enumerate(tables[1:], start=1):
            _check_table(f"tables[{i}]", table, K)
        thresholds = torch.as_tensor(gate_thresholds)
        if thresholds.dim() != 1:
            raise ValueError("gate_thresholds must be a 1-D tensor or sequence")
        if torch.is_complex(thresholds):
            raise TypeError("gate_thresholds must be real-valued")
        thresholds = thresholds.to(tables[0].theta)
        if thresholds.numel() != len(tables) - 1:
            raise ValueError(f"gate_thresholds must have len(tables) - 1 = {len(tables) - 1} values, "
                             f"got {thresholds.numel()}")
        if not bool(torch.isfinite(thresholds).all()):
            raise ValueError("gate_thresholds must be finite")
        if thresholds.numel() > 1 and not bool((thresholds[1:] > thresholds[:-1]).all()):
            raise ValueError("gate_thresholds must be strictly increasing")
        nn.Module.__init__(self)
        self.surrogate_function = surrogate.Sigmoid() if surrogate_function is None else surrogate_function
        self.step_mode = step_mode
        for name in ("theta", "h", "d"):
            ref = getattr(tables[0], name)
            self.register_buffer(f"region_{name}", torch.stack([getattr(t, name).to(ref) for t in tables]))
        self.register_buffer("gate_thresholds", thresholds)

    @property
    def K(self) -> int:
        return self.region_theta.shape[1]

    def _forward_from_gate(self, gate: torch.Tensor, sequence: bool) -> torch.Tensor:
        region = torch.bucketize(gate.detach(), self.gate_thresholds)

        def column(table):
            return [table[:, k][region] for k in range(self.K)]

        return self._encode(gate, column(self.region_theta), column(self.region_h), column(self.region_d), sequence)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", regions={self.region_theta.shape[0]}"
