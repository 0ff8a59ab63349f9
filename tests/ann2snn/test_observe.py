"""Calibration: ActivationObserver statistics and momentum, parse_mode, and the thresholds the Converter sets."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from spikeforge.ann2snn import ActivationObserver, Converter, IFActivation
from spikeforge.ann2snn.observe import parse_mode

from .helpers import convert

# A small tensor with distinct values: [N=2, C=3, 4] = 24 values.
X = torch.tensor(np.random.default_rng(0).permutation(24).astype(np.float32) / 4 - 2).view(2, 3, 4)


# ------------------------------------------------------------------------------------- parse_mode
@pytest.mark.parametrize("mode, expected", [
    ("max", ("max", 1.0)), (" MAX ", ("max", 1.0)), ("99.9%", ("percentile", 0.999)), ("100%", ("percentile", 1.0)),
    (0.5, ("max", 0.5)), (1, ("max", 1.0)),
])
def test_parse_mode(mode, expected):
    kind, value = parse_mode(mode)
    assert kind == expected[0] and value == pytest.approx(expected[1], rel=1e-15)


@pytest.mark.parametrize("mode", ["median", "0%", "150%", "x%", 0.0, 1.5, True, None])
def test_parse_mode_refuses(mode):
    with pytest.raises(ValueError, match="mode"):
        parse_mode(mode)


# ------------------------------------------------------------------------------ ActivationObserver
def test_observer_is_an_identity_that_records_the_max():
    obs = ActivationObserver("max")
    assert obs.stat is None and obs.batches == 0
    out = obs(X)
    assert out is X
    assert obs.stat.shape == (1,) and obs.stat.item() == np.max(X.numpy())
    assert obs.batches == 1 and obs.ndim == 3


def test_observer_fraction_of_the_max():
    obs = ActivationObserver(0.25)
    obs(X)
    assert obs.stat.item() == pytest.approx(0.25 * float(np.max(X.numpy())), rel=1e-7)


@pytest.mark.parametrize("q", [12.5, 50.0, 90.0, 99.0, 100.0])
def test_observer_percentile_matches_numpy_inverted_cdf(q):
    obs = ActivationObserver(f"{q}%")
    obs(X)
    expected = np.percentile(X.numpy().ravel(), q, method="inverted_cdf")
    assert obs.stat.item() == expected


def test_observer_channel_wise_statistics():
    per_channel = X.numpy().transpose(1, 0, 2).reshape(3, -1)  # channel dim 1 first, then everything else
    obs = ActivationObserver("max", channel_wise=True)
    obs(X)
    np.testing.assert_array_equal(obs.stat.numpy(), per_channel.max(axis=1))
    obs = ActivationObserver("75%", channel_wise=True)
    obs(X)
    np.testing.assert_array_equal(obs.stat.numpy(), np.percentile(per_channel, 75, axis=1, method="inverted_cdf"))
    with pytest.raises(ValueError, match="channel"):
        ActivationObserver(channel_wise=True)(torch.ones(5))


def test_observer_momentum_is_an_ema_after_the_first_batch():
    batches = [X, 2 * X + 1, X - 3]
    maxima = [float(np.max(b.numpy())) for b in batches]
    obs = ActivationObserver("max", momentum=0.25)
    for b in batches:
        obs(b)
    expected = maxima[0]
    for m in maxima[1:]:
        expected = 0.75 * expected + 0.25 * m
    assert obs.batches == 3
    assert obs.stat.item() == pytest.approx(expected, rel=1e-6)


def test_observer_without_momentum_uses_the_whole_data():
    batches = [X, 2 * X + 1, X - 3]
    obs = ActivationObserver("max", momentum=None)
    for b in batches:
        obs(b)
    assert obs.stat.item() == max(float(np.max(b.numpy())) for b in batches)
    obs = ActivationObserver("50%", momentum=None)  # percentiles: the mean of the per-batch values
    for b in batches:
        obs(b)
    expected = np.mean([np.percentile(b.numpy().ravel(), 50, method="inverted_cdf") for b in batches])
    assert obs.stat.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 1.5, -0.1, "0.1"])
def test_observer_refuses_a_bad_momentum(momentum):
    with pytest.raises(ValueError, match="momentum"):
        ActivationObserver(momentum=momentum)


def test_observer_records_without_gradients():
    x = X.clone().requires_grad_(True)
    obs = ActivationObserver()
    out = obs(x)
    assert out is x and not obs.stat.requires_grad


# ------------------------------------------------------------------------ through the Converter
def test_modes_set_the_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU()).eval()
    x = torch.randn(200, 4)
    act = model(x).detach().flatten()
    for mode, expected in [("max", act.max()), (0.5, act.max() * 0.5),
                           ("99%", act.kthvalue(math.ceil(0.99 * act.numel())).values)]:
        snn = Converter([x], mode=mode, progress=False)(model)
        block = next(m for m in snn.modules() if isinstance(m, IFActivation))
        torch.testing.assert_close(block.scale, expected)


def test_momentum_averages_batch_statistics():
    model = nn.Sequential(nn.ReLU())
    batches = [torch.full((2, 3), 1.0), torch.full((2, 3), 3.0)]
    snn = Converter(batches, mode="max", momentum=0.1, progress=False)(model)
    scale = next(m for m in snn.modules() if isinstance(m, IFActivation)).scale
    torch.testing.assert_close(scale, torch.tensor(0.9 * 1.0 + 0.1 * 3.0))


def test_channel_wise_thresholds_follow_each_channel():
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1))
        model[0].bias.zero_()
    x = torch.rand(8, 1, 4, 4)
    snn = convert(model, x, channel_wise=True)
    block = next(m for m in snn.modules() if isinstance(m, IFActivation))
    torch.testing.assert_close(block.scale.flatten(), x.max() * torch.tensor([1.0, 2.0, 4.0]))
