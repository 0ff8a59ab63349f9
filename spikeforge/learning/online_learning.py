"""Online training loops that update the weights at every time step (SpikingJelly's ``learning.online_learning``).

* :func:`ottt_online_training` — OTTT (Xiao et al. 2022): per step t, L_t = ℓ(y_t, target_t) is back-propagated
  through that step only (:func:`~spikeforge.functional.detach_net` cuts the state after it); with ``online=True``
  the optimiser steps after every t, otherwise the gradients of all steps are summed into one step.
* :func:`fptt_online_training` — FPTT (Kag & Saligrama 2021): per step t the loss gets a dynamic proximal term
  (α/2)·‖W − W̄ − ∇_{t−1}/(2α)‖² (mean over entries, as ``mse_loss``), the optimiser steps, and the running
  average W̄ ← (W̄ + W)/2 − ∇_t/(2α) is updated from the gradient ∇_t of the plain step loss at the new weights
  (evaluated on the same input with the state restored afterwards). :func:`fptt_online_training_init_w_ra`
  gives the initial W̄ (a copy of the weights).

Both take SpikingJelly's arguments; ``ottt_online_training`` takes batch-first sequences [N, T, ...] as it does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as torch_F

from .. import functional
from ..base import MemoryModule


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def fptt_online_training_init_w_ra(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The running average W̄ to start FPTT with: a detached copy of every parameter of ``optimizer``."""
    return [p.detach().clone() for p in _parameters(optimizer)]


def fptt_online_training(model: nn.Module, optimizer: torch.optim.Optimizer, x_seq: torch.Tensor,
                         target_seq: torch.Tensor, f_loss_t: Callable, alpha: float, w_ra: list) -> None:
    """One FPTT pass over time-first ``x_seq`` [T, N, ...] / ``target_seq`` [T, ...]; ``w_ra`` is updated in place."""
    params = _parameters(optimizer)
    if len(w_ra) != len(params):
        raise ValueError(f"w_ra has {len(w_ra)} tensors but the optimiser {len(params)} parameters; start it with "
                         "fptt_online_training_init_w_ra(optimizer)")
    prev_grad: list = [0.0] * len(params)
    stateful = [m for m in model.modules() if isinstance(m, MemoryModule)]
    T = x_seq.shape[0]  # noqa: N806
    for t in range(T):
        x_t, target_t = x_seq[t], target_seq[t]
        optimizer.zero_grad()
        loss = f_loss_t(model(x_t), target_t)
        loss = loss + alpha / 2.0 * sum(torch_F.mse_loss(p, w_ra[i] + prev_grad[i] / (2.0 * alpha))
                                        for i, p in enumerate(params))
        loss.backward()
        optimizer.step()
        functional.detach_net(model)
        saved = [copy.deepcopy(m._memories) for m in stateful]
        optimizer.zero_grad()
        if t < T - 1:  # the gradient of the plain step loss at the new weights (state restored below)
            f_loss_t(model(x_t), target_t).backward()
            with torch.no_grad():
                for i, p in enumerate(params):
                    prev_grad[i] = p.grad
                    w_ra[i] = (w_ra[i] + p) / 2.0 - p.grad / (2.0 * alpha)
        optimizer.zero_grad()
        for m, memories in zip(stateful, saved, strict=True):
            m._memories = memories


def ottt_online_training(model: nn.Module, optimizer: torch.optim.Optimizer, x_seq: torch.Tensor,
                         target_seq: torch.Tensor, f_loss_t: Callable, online: bool) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """One OTTT pass over batch-first ``x_seq`` [N, T, ...] / ``target_seq`` [N, T, ...].

    Returns (Σ_t L_t detached, the outputs [N, T, ...]). A model that returns ``[spike, trace]`` (OTTT neurons in
    training) is scored on the spikes.
    """
    xs, targets = x_seq.transpose(0, 1), target_seq.transpose(0, 1)
    total = torch.zeros(())
    outputs = []
    if not online:
        optimizer.zero_grad()
    for x_t, target_t in zip(xs, targets, strict=True):
        if online:
            optimizer.zero_grad()
        y_t = model(x_t)
        if isinstance(y_t, list | tuple):
            y_t = y_t[0]
        loss = f_loss_t(y_t, target_t.contiguous())
        loss.backward()
        if online:
            optimizer.step()
        functional.detach_net(model)
        total = total.to(loss.device) + loss.detach()
        outputs.append(y_t.detach())
    if not online:
        optimizer.step()
    return total, torch.stack(outputs, dim=1)


__all__ = ["fptt_online_training_init_w_ra", "fptt_online_training", "ottt_online_training"]
