"""TBPTT, SLTT and OTTT against their definitions, written out by hand on small nets (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from spikeforge import functional, layer, neuron, surrogate
from spikeforge.errors import UsageError
from spikeforge.memory import bit_spikes
from spikeforge.training import Trainer
from spikeforge.training.online import TimeTraining, ottt_layers

ALPHA = 4.0  # spikeforge's default Sigmoid surrogate


def sigma_prime(z):
    s = torch.sigmoid(ALPHA * z)
    return ALPHA * s * (1 - s)


def sum_squares(target):
    return lambda out, labels: ((out - target) ** 2).sum()


def run_chunks(model, x, t0, t1):
    return model(x[t0:t1])


def two_layer(tau=2.0, decay_input=False, v_reset=None):
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Linear(3, 4, bias=False, step_mode="m"),
        neuron.LIFNode(tau=tau, decay_input=decay_input, v_reset=v_reset, step_mode="m",
                       surrogate_function=surrogate.Sigmoid(ALPHA)),
        layer.Linear(4, 2, bias=False, step_mode="m"),
        neuron.LIFNode(tau=tau, decay_input=decay_input, v_reset=v_reset, step_mode="m",
                       surrogate_function=surrogate.Sigmoid(ALPHA)),
    ).double()
    with torch.no_grad():
        net[0].weight.mul_(3.0).add_(0.4)
        net[2].weight.mul_(3.0).add_(0.5)
    return net


def data(T=6, B=2):
    gen = torch.Generator().manual_seed(3)
    return torch.rand(T, B, 3, generator=gen, dtype=torch.float64) * 1.5, torch.zeros(B, dtype=torch.long)


def grads_of(net, mode, x, target, k=None):
    functional.reset_net(net)
    net.zero_grad()
    trainer = TimeTraining(mode, x.shape[0], run_chunks, k=k)
    out, loss = trainer.forward_backward(net, x, torch.zeros(x.shape[1], dtype=torch.long), sum_squares(target))
    grads = [p.grad.clone() for p in net.parameters()]
    trainer.detach_model()
    functional.reset_net(net)
    net.zero_grad()
    return out, loss, grads


@pytest.mark.parametrize("k", [6, 9])
def test_tbptt_with_a_window_of_T_or_more_is_bptt(k):
    x, _ = data()
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    net = two_layer(v_reset=0.0)
    out_t, loss_t, grads_t = grads_of(net, "tbptt", x, target, k=k)
    functional.reset_net(net)
    out = net(x).mean(0)
    loss = ((out - target) ** 2).sum()
    loss.backward()
    assert torch.equal(out_t, out.detach()) and torch.equal(loss_t, loss.detach())
    for g, p in zip(grads_t, net.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-12, atol=1e-12)
        assert p.grad.abs().sum() > 0


def lif_by_hand(I_seq, lam, v0_detached_each_step=False, window=None, v_reset=None):
    """LIF with decay_input=False written out: h = λv + I, s = Θ(h − 1) with the sigmoid surrogate, reset.

    ``window``: cut the membrane's graph every ``window`` steps (TBPTT); returns spikes and h per step."""
    v = torch.zeros_like(I_seq[0])
    spikes, hs = [], []
    for t, current in enumerate(I_seq):
        if v0_detached_each_step or (window is not None and t % window == 0):
            v = v.detach()
        h = lam * v + current
        surrogate_value = torch.sigmoid(ALPHA * (h - 1.0))
        s = (h >= 1.0).to(h.dtype) + surrogate_value - surrogate_value.detach()
        v = h - s if v_reset is None else h * (1 - s) + v_reset * s
        spikes.append(s)
        hs.append(h)
    return torch.stack(spikes), torch.stack(hs)


def test_tbptt_window_matches_the_hand_written_recurrence():
    x, _ = data(T=7)
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    net = two_layer()
    _, _, grads = grads_of(net, "tbptt", x, target, k=3)
    W1 = net[0].weight.detach().clone().requires_grad_(True)
    W2 = net[2].weight.detach().clone().requires_grad_(True)
    lam = 0.5
    # chunk losses: the mean output of each chunk, weighted by its share of T, graph cut at chunk starts
    s1, _ = lif_by_hand(x @ W1.T, lam, window=3)
    s2, _ = lif_by_hand(s1 @ W2.T, lam, window=3)
    loss = sum(((s2[t0:t0 + 3].mean(0) - target) ** 2).sum() * (len(s2[t0:t0 + 3]) / 7) for t0 in (0, 3, 6))
    loss.backward()
    torch.testing.assert_close(grads[0], W1.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[1], W2.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["ottt", "sltt"])
def test_online_updates_equal_the_formulas(mode):
    """OTTT (Xiao et al. 2022): ΔW = Σ_t δ_t ⊗ â_t, â_t = λ â_{t−1} + s_t; SLTT: the same with s_t; δ_t the
    gradient of the instantaneous loss L_t = ℓ(o_t, y)/T through step t only (no temporal path)."""
    T = 6
    x, _ = data(T=T)
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    net = two_layer()
    bit_spikes(net)  # harmless: under OTTT the trace, not the spikes, is saved (the layer leaves the bit path)
    if mode == "ottt":
        trainer = TimeTraining("ottt", T, run_chunks)
        trainer.attach(net)
        assert ottt_layers(net) == [net[2]]  # the first layer's input is analog: no trace
        trainer.detach_model()
    _, _, grads = grads_of(net, mode, x, target)
    W1, W2 = net[0].weight.detach(), net[2].weight.detach()
    lam = 1.0 - 1.0 / 2.0
    with torch.no_grad():  # the forward, by hand
        v1 = torch.zeros(x.shape[1], 4, dtype=torch.float64)
        v2 = torch.zeros(x.shape[1], 2, dtype=torch.float64)
        trace = torch.zeros_like(v1)
        gW1, gW2 = torch.zeros_like(W1), torch.zeros_like(W2)
        for t in range(T):
            h1 = lam * v1 + x[t] @ W1.T
            s1 = (h1 >= 1.0).double()
            v1 = h1 - s1
            h2 = lam * v2 + s1 @ W2.T
            s2 = (h2 >= 1.0).double()
            v2 = h2 - s2
            trace = lam * trace + s1
            delta2 = (2.0 / T) * (s2 - target) * sigma_prime(h2 - 1.0)
            delta1 = (delta2 @ W2) * sigma_prime(h1 - 1.0)
            gW2 += delta2.T @ (trace if mode == "ottt" else s1)
            gW1 += delta1.T @ x[t]
    assert gW2.abs().sum() > 0 and gW1.abs().sum() > 0
    torch.testing.assert_close(grads[0], gW1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[1], gW2, rtol=1e-10, atol=1e-12)


def test_modes_checked():
    with pytest.raises(UsageError, match="window"):
        TimeTraining("tbptt", 4, run_chunks)
    with pytest.raises(UsageError, match="train mode"):
        TimeTraining("rtrl", 4, run_chunks)
    assert not TimeTraining("bptt", 4, run_chunks).active


@pytest.mark.parametrize("mode", ["tbptt", "ottt"])
def test_trainer_option(mode):
    torch.manual_seed(0)
    net = nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(16, 8, step_mode="m"), neuron.LIFNode(step_mode="m"),
                        layer.Linear(8, 3, step_mode="m"), neuron.LIFNode(step_mode="m"))
    T = 4

    def chunk(model, images, t0, t1):
        return model(images.unsqueeze(0).expand(t1 - t0, *images.shape) * 4.0)

    images = torch.rand(24, 4, 4)
    labels = torch.randint(0, 3, (24,))
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.5), batch_size=8, progress=False,
                      log=lambda *_: None, forward=lambda model, imgs: chunk(model, imgs, 0, T).mean(0),
                      time_training=TimeTraining(mode, T, chunk, k=2 if mode == "tbptt" else None))
    before = [p.detach().clone() for p in net.parameters()]
    history = trainer.fit((images, labels), (images, labels), epochs=1)
    assert history[0]["train_loss"] > 0 and 0.0 <= history[0]["test_acc"] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
