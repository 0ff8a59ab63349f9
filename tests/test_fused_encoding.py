"""spikeforge.fused_encoding: Poisson statistics, equality with the dense product, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.fused_encoding import poisson_linear, poisson_spikes


def test_uint8_firing_probability_is_p_over_255():
    levels = torch.arange(256, dtype=torch.uint8).repeat(64, 1)  # [64, 256]
    spikes = poisson_spikes(levels, 500, seed=3)
    assert spikes.shape == (500, 64, 256) and spikes.dtype == torch.uint8
    rate = spikes.double().mean(dim=(0, 1))
    p = torch.arange(256, dtype=torch.float64) / 255
    n = 500 * 64
    # 5 standard deviations of a binomial proportion, per level
    bound = 5 * torch.sqrt(p * (1 - p) / n) + 1e-12
    assert bool(((rate - p).abs() <= bound).all())
    assert rate[0] == 0.0 and rate[255] == 1.0  # 0 never fires, 255 always does


def test_float_probabilities_and_range_check():
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    rate = poisson_spikes(x.repeat(200, 1), 200, seed=1).double().mean(dim=(0, 1))
    expected = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    assert bool(((rate - expected).abs() <= 5 * math.sqrt(0.25 / 40000) + 1e-12).all())
    with pytest.raises(ValueError, match="x must lie in"):
        poisson_spikes(torch.tensor([[1.5]]), 4)
    with pytest.raises(ValueError, match="T must be"):
        poisson_spikes(x, 0)
    with pytest.raises(TypeError, match="x must be uint8"):
        poisson_spikes(torch.ones(2, 3, dtype=torch.int32), 4)


def test_steps_are_independent():
    # a pixel at p = 128/255 in step t and t+1: the correlation of independent draws is ~0
    x = torch.full((100, 50), 128, dtype=torch.uint8)
    s = poisson_spikes(x, 64, seed=2).double()
    a, b = s[:-1].flatten(), s[1:].flatten()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert abs(float(corr)) < 0.02


def test_seed_reproduces_and_generator_controls_stream():
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(poisson_spikes(x, 10, seed=7), poisson_spikes(x, 10, seed=7))
    assert not torch.equal(poisson_spikes(x, 10, seed=7), poisson_spikes(x, 10, seed=8))
    torch.manual_seed(0)
    first = poisson_spikes(x, 10)
    torch.manual_seed(0)
    assert torch.equal(first, poisson_spikes(x, 10))
    assert poisson_spikes(x, 10, seed=1).shape == (10, 4, 1, 28, 28)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_equals_dense_product_of_the_same_spikes(dtype):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (5, 30), dtype=torch.uint8)
    x[x < 120] = 0  # sparse, like an image
    x[0] = 0  # an all-black sample
    weight = torch.randn(7, 30, dtype=dtype, requires_grad=True)
    out = poisson_linear(x, weight, 12, seed=11)
    dense = poisson_spikes(x, 12, seed=11).to(dtype) @ weight.t()
    assert out.shape == (12, 5, 7) and out.dtype == dtype
    torch.testing.assert_close(out, dense)
    assert torch.count_nonzero(out[:, 0]) == 0
    grad = torch.randn_like(out)
    (g_fused,) = torch.autograd.grad(out, weight, grad)
    (g_dense,) = torch.autograd.grad(dense, weight, grad)
    torch.testing.assert_close(g_fused, g_dense)


def test_linear_gradcheck_float64():
    x = torch.tensor([[0, 255, 100, 0], [30, 0, 200, 255]], dtype=torch.uint8)
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b: poisson_linear(x, w, 6, b, seed=5), (weight, bias))


def test_linear_hand_computed_saturated_inputs():
    # p = 255 always fires, p = 0 never: the output is the column sum of the 255 pixels at every step
    x = torch.tensor([[255, 0, 255]], dtype=torch.uint8)
    weight = torch.tensor([[1.0, 10.0, 100.0], [2.0, 20.0, 200.0]])
    out = poisson_linear(x, weight, 3, seed=0)
    assert out.tolist() == [[[101.0, 202.0]]] * 3


def test_linear_bad_arguments():
    x = torch.zeros(2, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="features"):
        poisson_linear(x, torch.zeros(3, 5), 2)
    with pytest.raises(ValueError, match="weight must be a 2-d"):
        poisson_linear(x, torch.zeros(4), 2)
    with pytest.raises(ValueError, match="must not require grad"):
        poisson_linear(torch.rand(2, 4, requires_grad=True), torch.zeros(3, 4), 2)


def test_many_outputs_use_the_dense_path_with_the_same_spikes():
    x = torch.randint(0, 256, (3, 20), dtype=torch.uint8)
    weight = torch.randn(100, 20)  # more outputs than the sparse kernel serves
    out = poisson_linear(x, weight, 4, seed=9)
    torch.testing.assert_close(out, poisson_spikes(x, 4, seed=9).float() @ weight.t())



def test_two_graphs_alive_do_not_share_scratch_memory():
    # the scratch pool must not hand the first call's spikes to the second while backward still needs them
    x = torch.randint(0, 256, (8, 50), dtype=torch.uint8)
    weight = torch.randn(5, 50, requires_grad=True)
    first = poisson_linear(x, weight, 10, seed=1)
    second = poisson_linear(x, weight, 10, seed=2)
    grad = torch.randn_like(first)
    for out, seed in ((first, 1), (second, 2)):
        (g_fused,) = torch.autograd.grad(out, weight, grad)
        (g_dense,) = torch.autograd.grad(poisson_spikes(x, 10, seed=seed).float() @ weight.t(), weight, grad)
        torch.testing.assert_close(g_fused, g_dense)
