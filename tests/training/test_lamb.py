"""spikeforge.optim.Lamb against LAMB's update equations written out by hand (float64), and against timm's Lamb
when timm is installed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spikeforge.optim import Lamb, param_groups_weight_decay


def _by_hand(weights, grads_per_step, lr, wd, betas=(0.9, 0.999), eps=1e-6, max_norm=None, trust_clip=False):
    """Plain-Python LAMB on lists of floats: one list per parameter, each with its own weight decay."""
    b1, b2 = betas
    w = [list(p) for p in weights]
    m = [[0.0] * len(p) for p in w]
    v = [[0.0] * len(p) for p in w]
    for t, grads in enumerate(grads_per_step, start=1):
        total = math.sqrt(sum(g * g for gs in grads for g in gs))
        div = max(total / max_norm, 1.0) if max_norm is not None else 1.0
        for i, gs in enumerate(grads):
            u = []
            for j, g in enumerate(gs):
                g = g / div
                m[i][j] = b1 * m[i][j] + (1 - b1) * g
                v[i][j] = b2 * v[i][j] + (1 - b2) * g * g
                u.append((m[i][j] / (1 - b1**t)) / (math.sqrt(v[i][j]) / math.sqrt(1 - b2**t) + eps)
                         + wd[i] * w[i][j])
            if wd[i] != 0:
                wn, un = math.sqrt(sum(x * x for x in w[i])), math.sqrt(sum(x * x for x in u))
                r = wn / un if wn > 0 and un > 0 else 1.0
                if trust_clip:
                    r = min(r, 1.0)
                u = [r * x for x in u]
            w[i] = [x - lr * y for x, y in zip(w[i], u)]
    return w


def _run(weights, grads_per_step, lr, wd, **kwargs):
    params = [nn.Parameter(torch.tensor(p, dtype=torch.float64)) for p in weights]
    groups = [{"params": [p], "weight_decay": d} for p, d in zip(params, wd)]
    opt = Lamb(groups, lr=lr, **kwargs)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return [p.detach().tolist() for p in params]


WEIGHTS = [[0.5, -1.0, 2.0, 0.25], [0.1, -0.2]]  # a "matrix" (decayed) and a "bias" (not decayed)
GRADS = [[[0.3, -0.1, 0.2, 0.05], [0.4, 0.0]], [[-0.2, 0.4, 0.1, -0.3], [0.1, -0.5]],
         [[0.05, 0.05, -0.6, 0.2], [-0.3, 0.2]]]


@pytest.mark.parametrize("trust_clip", [False, True])
def test_lamb_follows_the_update_equations(trust_clip):
    got = _run(WEIGHTS, GRADS, lr=0.1, wd=[0.05, 0.0], max_grad_norm=None, trust_clip=trust_clip)
    want = _by_hand(WEIGHTS, GRADS, lr=0.1, wd=[0.05, 0.0], trust_clip=trust_clip)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-12, abs=1e-14)


def test_lamb_clips_the_global_gradient_norm_first():
    big = [[[3.0 * x for x in gs] for gs in step] for step in GRADS]  # total norms > 1
    got = _run(WEIGHTS, big, lr=0.1, wd=[0.05, 0.0], max_grad_norm=1.0, trust_clip=True)
    want = _by_hand(WEIGHTS, big, lr=0.1, wd=[0.05, 0.0], max_norm=1.0, trust_clip=True)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-12, abs=1e-14)
    # clipping does change the result here (Adam alone would be scale-invariant up to eps; the trust ratio is not
    # affected either, so compare the undecayed parameter's first step against Adam's sign-like step)
    p = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    p.grad = torch.tensor([10.0], dtype=torch.float64)
    Lamb([{"params": [p], "weight_decay": 0.0}], lr=0.1).step()
    assert p.item() == pytest.approx(1.0 - 0.1 * 1.0 / (1.0 + 1e-6), rel=1e-12)  # m/(1-b1) = sqrt(v/(1-b2))
    assert p.grad.item() == 10.0  # the gradient itself is left as it was


def test_trust_ratio_is_capped_at_one_with_trust_clip():
    # a weight much larger than its update: r = |w| / |u| >> 1 without the clip, 1 with it
    w0 = [[100.0, 0.0]]
    g = [[[1.0, 0.0]]]
    free = _run(w0, g, lr=0.01, wd=[1e-8], max_grad_norm=None)
    clipped = _run(w0, g, lr=0.01, wd=[1e-8], max_grad_norm=None, trust_clip=True)
    assert 100.0 - free[0][0] == pytest.approx(0.01 * 100.0, rel=1e-6)  # step = lr * |w|
    assert 100.0 - clipped[0][0] == pytest.approx(0.01 * (1.0 + 1e-6), rel=1e-5)  # step = lr * |u|


def test_weight_decay_groups_skip_one_dimensional_parameters():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[3].weight.requires_grad_(False)
    groups = param_groups_weight_decay(model, 0.05, extra={"lr_scale": 1.0})
    decayed, plain = groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0 and plain["lr_scale"] == 1.0
    assert [tuple(p.shape) for p in decayed["params"]] == [(4, 3, 3, 3)]
    assert sorted(tuple(p.shape) for p in plain["params"]) == [(2,), (4,), (4,), (4,)]


def test_lamb_state_round_trips_through_a_plain_checkpoint(tmp_path):
    params = [nn.Parameter(torch.tensor(p)) for p in WEIGHTS]
    opt = Lamb(params, lr=0.1)
    for p, g in zip(params, GRADS[0]):
        p.grad = torch.tensor(g)
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    fresh = Lamb(params, lr=0.1)
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert fresh.param_groups[0]["step"] == 1
    assert torch.equal(fresh.state[params[0]]["exp_avg"], opt.state[params[0]]["exp_avg"])


def test_lamb_matches_timm():
    timm_optim = pytest.importorskip("timm.optim", reason="timm is an optional extra")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3))
    twin = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3))
    twin.load_state_dict(model.state_dict())
    ours = Lamb(param_groups_weight_decay(model, 0.05), lr=1e-2, trust_clip=True)
    theirs = timm_optim.Lamb(param_groups_weight_decay(twin, 0.05), lr=1e-2, trust_clip=True)
    for _ in range(5):
        x = torch.randn(8, 5) * 4
        for net, opt in ((model, ours), (twin, theirs)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
