"""spikeforge.encoding against SpikingJelly 2.0's encoding.

CI: spike trains written out by hand (latency times, binary digits of the weighted-phase code, Gaussian
population activity), LatencyEncoder in 'm' mode returning the input's shape, stateful encoders cycling and
resetting. Peer venv: every encoder of SpikingJelly 2.0 fed the same inputs (and the same seeds), outputs and
gradients compared.
"""

from __future__ import annotations

import logging

import pytest
import torch

from spikeforge import encoding, functional

logging.getLogger("spikeforge").setLevel(logging.WARNING)


def test_latency_encoder_multi_step_returns_the_input_shape():
    x = torch.tensor([[1.0, 0.5, 0.0, 0.75]])
    enc = encoding.LatencyEncoder(5, step_mode="m")
    x_seq = x.expand(7, 1, 4)
    out = enc(x_seq)
    assert out.shape == x_seq.shape
    # t_f = round((T-1)(1-x)) = [0, 2, 4, 1]; steps 0..4 then 0, 1 again
    train = torch.zeros(5, 1, 4)
    train[0, 0, 0] = train[2, 0, 1] = train[4, 0, 2] = train[1, 0, 3] = 1
    assert torch.equal(out, torch.cat([train, train[:2]]))
    assert enc.t == 2 and torch.equal(enc(x_seq[:3]), train[2:5])  # continues where it stopped
    enc.reset()
    single = encoding.LatencyEncoder(5)
    assert torch.equal(torch.stack([single(x) for _ in range(7)]), out)
    assert torch.equal(encoding.LatencyEncoder(5).encode_sequence(x), train)
    log = encoding.LatencyEncoder(5, "log")
    t_f = (4 - torch.log((torch.e ** 4 - 1) * x + 1)).round()
    assert torch.equal(log.encode_sequence(x).argmax(0).float(), t_f)


def test_weighted_phase_encoder_binary_digits():
    x = torch.tensor([0.75, 0.125, 0.0, 0.875, 0.5625])
    enc = encoding.WeightedPhaseEncoder(4)
    out = torch.stack([enc(x) for _ in range(4)])
    expected = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0], [1, 0, 0, 1]]).T.float()
    assert torch.equal(out, expected)
    weights = torch.tensor([0.5, 0.25, 0.125, 0.0625])
    torch.testing.assert_close((out * weights[:, None]).sum(0), x)
    assert torch.equal(enc(x), expected[0])  # period K
    with pytest.raises(ValueError, match="0, 1 - 2"):
        encoding.WeightedPhaseEncoder(2)(torch.tensor([0.9]))


def test_periodic_encoder():
    spike = (torch.rand(3, 2, 4) > 0.5).float()
    enc = encoding.PeriodicEncoder(spike)
    assert enc.T == 3
    assert torch.equal(torch.stack([enc(spike) for _ in range(5)]), spike[[0, 1, 2, 0, 1]])
    enc.reset()
    assert torch.equal(enc(), spike[0])  # no input: the constructor's train
    m = encoding.PeriodicEncoder(spike, step_mode="m")
    # SpikingJelly 2.0's stateful 'm' mode encodes the first step x_seq[0] ([2, 4]: a train of 2 steps)
    assert torch.equal(m(spike), spike[0][[0, 1, 0]])


def test_population_encoders_by_hand():
    torch.manual_seed(0)
    det = encoding.PopSpikeEncoderDeterministic(2, 3, 4, (-1.0, 1.0), 0.5)
    obs = torch.tensor([[0.0, 1.0]], requires_grad=True)
    mean = torch.tensor([-1.0, 0.0, 1.0])
    act = torch.exp(-0.5 * ((obs.detach().reshape(1, 2, 1) - mean) / 0.5) ** 2).flatten(1)  # [1, 6]
    out = det(obs)
    assert out.shape == (4, 1, 6) and det.encoder_neuron_num == 6
    # IF neuron, V_th = 0.999, soft reset: spike count over T steps = floor(T·a / 0.999) (a <= 1)
    torch.testing.assert_close(out.sum(0), torch.floor(4 * act / 0.999))
    out.sum().backward()
    assert obs.grad is not None and det.mean.grad.abs().sum() > 0
    rnd = encoding.PopSpikeEncoderRandom(2, 3, 2000, (-1.0, 1.0), 0.5)
    torch.testing.assert_close(rnd(obs).mean(0), act, atol=0.04, rtol=0)
    pop = encoding.PopEncoder(2, 3, 3, (-1.0, 1.0), 0.5)
    torch.testing.assert_close(pop(obs), act.expand(3, 1, 6))


def test_stateful_encoders_reset_with_reset_net():
    enc = encoding.LatencyEncoder(4)
    enc(torch.tensor([0.2]))
    functional.reset_net(enc)
    assert enc.spike is None and enc.t == 0


# ----------------------------------------------------------------------------------- against SpikingJelly
def _sj():
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import encoding as sj_encoding

    return sj_encoding


@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("enc_function", ["linear", "log"])
def test_sj_latency_encoder(step_mode, enc_function):
    sj_encoding = _sj()
    torch.manual_seed(0)
    x = torch.rand(3, 5)
    ours, theirs = (lib.LatencyEncoder(6, enc_function, step_mode) for lib in (encoding, sj_encoding))
    if step_mode == "m":
        x_seq = x.expand(9, 3, 5)
        for _ in range(2):
            assert torch.equal(ours(x_seq), theirs(x_seq))
    else:
        for _ in range(8):
            assert torch.equal(ours(x), theirs(x))
    assert ours.t == theirs.t


def test_sj_poisson_weighted_phase_periodic():
    sj_encoding = _sj()
    x = torch.rand(4, 6)
    for step_mode, inp in (("s", x), ("m", x.expand(5, 4, 6))):
        torch.manual_seed(1)
        a = encoding.PoissonEncoder(step_mode)(inp)
        torch.manual_seed(1)
        b = sj_encoding.PoissonEncoder(step_mode)(inp)
        assert torch.equal(a, b)
    ours, theirs = encoding.WeightedPhaseEncoder(5), sj_encoding.WeightedPhaseEncoder(5)
    xx = x * (1 - 2 ** -5)
    for _ in range(7):
        assert torch.equal(ours(xx), theirs(xx))
    spike = (torch.rand(4, 3) > 0.5).float()
    ours, theirs = encoding.PeriodicEncoder(spike), sj_encoding.PeriodicEncoder(spike)
    for _ in range(6):
        assert torch.equal(ours(spike), theirs(spike))
    ours, theirs = encoding.PeriodicEncoder(spike, "m"), sj_encoding.PeriodicEncoder(spike, "m")
    assert torch.equal(ours(spike), theirs(spike))


@pytest.mark.parametrize("name", ["PopSpikeEncoderDeterministic", "PopSpikeEncoderRandom", "PopEncoder"])
def test_sj_population_encoders(name):
    sj_encoding = _sj()
    ours = getattr(encoding, name)(3, 4, 5, (-1.0, 1.0), 0.4)
    theirs = getattr(sj_encoding, name)(3, 4, 5, (-1.0, 1.0), 0.4)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    obs = torch.randn(2, 3)
    outs = []
    for enc in (ours, theirs):
        o = obs.clone().requires_grad_(True)
        torch.manual_seed(5)
        y = enc(o)
        (y * torch.linspace(0.1, 1.0, 12)).sum().backward()
        outs.append((y.detach(), o.grad, enc.mean.grad, enc.std.grad))
    assert torch.equal(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1:], outs[1][1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
