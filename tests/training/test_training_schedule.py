"""LR schedules: values at chosen iterations, computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.training import StepDecay, TorchSchedule, WarmupCosine


def _optimizer(*lrs):
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def _lrs(schedule, iterations):
    seen = {}
    for i in range(max(iterations) + 1):
        if i in iterations:
            seen[i] = [g["lr"] for g in schedule.optimizer.param_groups]
        schedule.step()
    return seen


def _first_group(schedule, iterations):
    return {i: lrs[0] for i, lrs in _lrs(schedule, iterations).items()}


def test_warmup_then_half_cosine_to_min_lr():
    # base 1.0, 4 warm-up iterations (0.25, 0.5, 0.75, 1.0), cosine over iterations 4..13, min 0.1 from 14 on
    schedule = WarmupCosine(_optimizer(1.0, 0.5), total_steps=14, warmup_steps=4, min_lr=0.1)
    lrs = _lrs(schedule, {0, 1, 3, 4, 9, 11, 13, 14, 20})
    assert lrs[0] == pytest.approx([0.25, 0.125])
    assert lrs[1] == pytest.approx([0.5, 0.25])
    assert lrs[3] == pytest.approx([1.0, 0.5])
    assert lrs[4] == pytest.approx([1.0, 0.5])  # cosine at its top
    assert lrs[9] == pytest.approx([0.55, 0.3])  # half way: min + (base - min) / 2
    # iteration 11: progress 7/10, cos(0.7 pi) = -0.587785
    assert lrs[11][0] == pytest.approx(0.1 + 0.9 * (1 - 0.5877852522924731) / 2)
    assert lrs[13][0] == pytest.approx(0.1 + 0.9 * (1 + math.cos(0.9 * math.pi)) / 2)
    assert lrs[14] == pytest.approx([0.1, 0.1]) and lrs[20] == pytest.approx([0.1, 0.1])


def test_cosine_without_warmup_starts_at_base():
    schedule = WarmupCosine(_optimizer(0.2), total_steps=4)
    assert _first_group(schedule, {0, 1, 2, 3, 4}) == pytest.approx(
        {0: 0.2, 1: 0.2 * (1 + math.sqrt(0.5)) / 2, 2: 0.1, 3: 0.2 * (1 - math.sqrt(0.5)) / 2, 4: 0.0})


def test_step_decay_every_n_and_at_milestones():
    every = StepDecay(_optimizer(1.0), step_size=3, gamma=0.5, warmup_steps=2)
    assert _first_group(every, {0, 1, 2, 4, 5, 8, 11}) == pytest.approx(
        {0: 0.5, 1: 1.0, 2: 1.0, 4: 1.0, 5: 0.5, 8: 0.25, 11: 0.125})
    milestones = StepDecay(_optimizer(2.0), milestones=[2, 5], gamma=0.1)
    assert _first_group(milestones, {0, 1, 2, 4, 5, 9}) == pytest.approx(
        {0: 2.0, 1: 2.0, 2: 0.2, 4: 0.2, 5: 0.02, 9: 0.02})
    with pytest.raises(ValueError, match="exactly one"):
        StepDecay(_optimizer(1.0))


def test_state_dict_resumes_the_same_lrs():
    a = WarmupCosine(_optimizer(1.0), total_steps=10, warmup_steps=2)
    for _ in range(5):
        a.step()
    b = WarmupCosine(_optimizer(1.0), total_steps=10, warmup_steps=2)
    b.load_state_dict(a.state_dict())
    assert [g["lr"] for g in b.optimizer.param_groups] == [g["lr"] for g in a.optimizer.param_groups]
    assert b.lr_at(7) == a.lr_at(7)


def test_torch_scheduler_per_epoch_or_per_iteration():
    opt = _optimizer(1.0)
    per_epoch = TorchSchedule(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), "epoch")
    opt.step()  # (torch warns when a scheduler steps before its optimizer)
    per_epoch.step()
    per_epoch.step()
    assert opt.param_groups[0]["lr"] == 1.0  # iterations do not move an epoch schedule
    per_epoch.epoch_end()
    assert opt.param_groups[0]["lr"] == 0.5
    opt = _optimizer(1.0)
    per_iteration = TorchSchedule(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), "iteration")
    opt.step()
    per_iteration.step()
    per_iteration.epoch_end()
    assert opt.param_groups[0]["lr"] == 0.5
