"""The SpikingJelly 2.0 neurons of spikeforge.neuron.extra / .psn: hand-computed traces from the equations in
their docstrings (run in CI), gradients against explicit loops, which road each takes (fused kernel or reference
path), step-mode and state handling. tests/compat/test_neurons_sj.py compares them with SpikingJelly 2.0."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge import functional, neuron, surrogate


def trace(node, xs, *states):
    """Feed scalar inputs one step at a time; return the outputs and each named state after every step."""
    outs, seqs = [], {s: [] for s in states}
    for x in xs:
        outs.append(node(torch.tensor([x], dtype=torch.float64)).item())
        for s in states:
            seqs[s].append(float(torch.as_tensor(getattr(node, s)).detach()))
    return outs, seqs


def hard(h, s, v_reset):
    return v_reset if s else h


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    real = functional.neuron_multi_step

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(functional, "neuron_multi_step", counting)
    return calls


# ---------------------------------------------------------------------------------------- fused neurons
@pytest.mark.parametrize("decode,expected", [
    (None, [0.5, 1.5, 0.5]), ("max-mem", 1.5), ("mean-mem", 2.5 / 3), ("last_mem", 0.5), ("max-abs-mem", 1.5)])
def test_non_spiking_if_integrates_and_decodes(decode, expected, kernel_calls):
    x = torch.tensor([[0.5], [1.0], [-1.0]], requires_grad=True)
    out = neuron.NonSpikingIFNode(decode)(x)
    got = [float(v.detach()) for v in out] if decode is None else float(out.detach())
    assert got == pytest.approx(expected)
    assert len(kernel_calls) == 1 and kernel_calls[0].kind.value == "if"  # the fused IF road
    (torch.stack(out).sum() if decode is None else out.sum()).backward()
    if decode is None:  # d(V_1 + V_2 + V_3)/dX_t = 3 - t
        assert x.grad[:, 0].tolist() == [3.0, 2.0, 1.0]


def test_non_spiking_lif_trace_and_gradient(kernel_calls):
    x = torch.tensor([[1.0], [1.0], [-2.0]], dtype=torch.float64, requires_grad=True)
    node = neuron.NonSpikingLIFNode(4.0, "max-abs-mem")
    out = node(x)
    v, vs = 0.0, []
    for xt in (1.0, 1.0, -2.0):
        v = v + (xt - v) / 4.0
        vs.append(v)
    assert vs == pytest.approx([0.25, 0.4375, -0.171875])
    assert float(out.detach()) == pytest.approx(0.4375)  # |0.4375| > |-0.171875|
    out.backward()  # V_2 = x1·(3/4)/4 + x2/4
    assert x.grad[:, 0].tolist() == pytest.approx([3 / 16, 1 / 4, 0.0])
    assert kernel_calls[0].kind.value == "lif"
    with pytest.raises(ValueError, match="step_mode must be 'm'"):
        node.step_mode = "s"
    functional.set_step_mode(torch.nn.Sequential(node), "m")


def test_non_spiking_subclass_with_its_own_charge_runs_the_python_loop(kernel_calls):
    class Doubling(neuron.NonSpikingLIFNode):
        def neuronal_charge(self, x):
            self.v = self.v + 2 * x

    out = Doubling(decode="last_mem")(torch.ones(3, 1))
    assert float(out) == 6.0 and kernel_calls == []


def test_half_threshold_if_starts_at_half_the_threshold(kernel_calls):
    node = neuron.HalfThresholdIFNode(1.0)
    # V0 = 0.5; H: 0.8, 1.1 (fire, V=.1), .4
    outs, seqs = trace(node, [0.3, 0.3, 0.3], "v")
    assert outs == [0, 1, 0] and seqs["v"] == pytest.approx([0.8, 0.1, 0.4])
    node.reset()
    assert node.v == 0.5 and node.v_reset is None
    assert node.spec.kind.value == "if" and len(kernel_calls) == 3


def test_ottt_trace_and_one_step_graph():
    node = neuron.OTTTLIFNode(tau=2.0)
    x = torch.tensor([1.5, 1.5, 0.0], requires_grad=True)
    outs = [node(x[t:t + 1]) for t in range(3)]
    # decay_input=False, soft reset: H = V - V/2 + X: 1.5 (fire, .5), 1.75 (fire, .75), .375
    assert [float(s.detach()) for s, _ in outs] == [1.0, 1.0, 0.0]
    # trace a_t = a_{t-1}/2 + S_t: 1, 1.5, 0.75
    assert [float(a) for _, a in outs] == [1.0, 1.5, 0.75]
    assert not outs[0][1].requires_grad
    # the membrane carried into step 2 is detached: its spike's gradient reaches x_2 only
    grad, = torch.autograd.grad(outs[1][0].sum(), x)
    assert grad[0] == 0 and grad[1] != 0
    node.eval()
    assert isinstance(node(x[:1]), torch.Tensor)
    with pytest.raises(ValueError, match="step_mode must be 's'"):
        neuron.SLTTLIFNode(step_mode="m")


# ---------------------------------------------------------------------------------- reference-path neurons
def test_qif_hand_trace():
    node = neuron.QIFNode(2.0, 0.8, 1.0, 1.0, 0.0, -0.1)
    v, expected = -0.1, []
    for x in (1.0, 1.0, 1.0, 0.2):
        h = v + (x + 1.0 * (v - 0.0) * (v - 0.8)) / 2.0
        s = float(h >= 1.0)
        v = hard(h, s, -0.1)
        expected.append((s, v))
    outs, seqs = trace(node, [1.0, 1.0, 1.0, 0.2], "v")
    assert outs == [s for s, _ in expected] and 1.0 in outs
    assert seqs["v"] == pytest.approx([v for _, v in expected])
    assert node.spec is None


def test_eif_hand_trace():
    node = neuron.EIFNode(2.0, 0.5, 0.8, 1.0, 0.0, -0.1)
    v, expected = -0.1, []
    for x in (1.2, 1.2, 1.2):
        h = v + (x + 0.0 - v + 0.5 * math.exp((v - 0.8) / 0.5)) / 2.0
        s = float(h >= 1.0)
        v = hard(h, s, -0.1)
        expected.append((s, v))
    outs, seqs = trace(node, [1.2, 1.2, 1.2], "v")
    assert outs == [s for s, _ in expected] and 1.0 in outs
    assert seqs["v"] == pytest.approx([v for _, v in expected])


def test_izhikevich_hand_trace_with_adaptation():
    node = neuron.IzhikevichNode(2.0, 0.8, 1.0, 1.0, 0.0, -0.1, 0.0, 3.0, 0.5, 0.2)
    v, w, expected = 0.0, 0.0, []
    for x in (1.5, 1.5, 1.5, 1.5):
        h = v + (x + (v + 0.1) * (v - 0.8) - w) / 2.0
        s = float(h >= 1.0)
        w = w + (0.5 * (h + 0.1) - w) / 3.0 + 0.2 * s
        v = hard(h, s, 0.0)
        expected.append((s, v, w))
    outs, seqs = trace(node, [1.5] * 4, "v", "w")
    assert outs == [e[0] for e in expected] and 1.0 in outs
    assert seqs["v"] == pytest.approx([e[1] for e in expected])
    assert seqs["w"] == pytest.approx([e[2] for e in expected])
    node.reset()
    assert node.w == 0.0 and node.v == 0.0


def test_cuba_lif_hand_trace():
    node = neuron.CUBALIFNode(0.5, 0.75, 0.5, 0.0)
    assert isinstance(node.surrogate_function, surrogate.Rect)
    # I: .2, .3, .35;  H: .2, .45, .6875 (fire -> 0)
    outs, seqs = trace(node, [0.2, 0.2, 0.2], "v", "c")
    assert outs == [0, 0, 1]
    assert seqs["c"] == pytest.approx([0.2, 0.3, 0.35])
    assert seqs["v"] == pytest.approx([0.2, 0.45, 0.0])


@pytest.mark.parametrize("scale_reset", [False, True])
def test_klif_hand_trace(scale_reset):
    node = neuron.KLIFNode(scale_reset, 2.0, True, 1.0, None)
    with torch.no_grad():
        node.k.fill_(2.0)
    v, expected = 0.0, []
    for x in (1.2, 0.6, -3.0):
        f = max(2.0 * (v + (x - v) / 2.0), 0.0)
        s = float(f >= 1.0)
        v = (f - s * 1.0) / 2.0 if scale_reset else f - s * 1.0
        expected.append((s, v))
    outs, seqs = trace(node, [1.2, 0.6, -3.0], "v")
    assert outs == [s for s, _ in expected] and 1.0 in outs
    assert seqs["v"] == pytest.approx([v for _, v in expected])


def test_liaf_outputs_the_analog_activation_in_both_modes():
    x = torch.tensor([[1.5], [1.5], [0.0]])
    single = neuron.LIAFNode(torch.nn.ReLU(), True, 2.0)
    outs = [float(single(xt)) for xt in x]
    # H: .75 (no spike), 1.125 (spike -> 0), 0: ReLU(H - 1) = 0, .125, 0
    assert outs == pytest.approx([0.0, 0.125, 0.0])
    multi = neuron.LIAFNode(torch.nn.ReLU(), False, 2.0, step_mode="m")
    assert multi(x)[:, 0].tolist() == pytest.approx([0.75, 1.125, 0.0])
    assert isinstance(multi, neuron.LIFNode) and multi.spec is None


def test_complementary_lif_hand_trace():
    node = neuron.ComplementaryLIFNode(2.0, 1.0)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    v, m, expected = 0.0, 0.0, []
    for x in (1.2, 1.2, 0.3):
        h = v - v / 2.0 + x
        s = float(h >= 1.0)
        m = m * sig(h / 2.0) + s
        v = h - s * (1.0 + sig(m))
        expected.append((s, v, m))
    outs, seqs = trace(node, [1.2, 1.2, 0.3], "v", "m")
    assert outs == [e[0] for e in expected] and 1.0 in outs
    assert seqs["v"] == pytest.approx([e[1] for e in expected])
    assert seqs["m"] == pytest.approx([e[2] for e in expected])
    multi = neuron.ComplementaryLIFNode(2.0, 1.0, step_mode="m", store_state_seqs=True)
    multi(torch.tensor([[1.2], [1.2], [0.3]]))
    assert multi.state_seqs[1][:, 0].tolist() == pytest.approx([e[2] for e in expected])


def test_raf_hand_trace():
    node = neuron.RAFNode(-0.2, 1.0, 1.0, 1.0, 0.0)
    a, c, sn = math.exp(-0.2), math.cos(1.0), math.sin(1.0)
    u, v, expected = 0.0, 0.0, []
    for x in (1.5, 1.5, 1.5, 1.5):
        u, h = a * (u * c - v * sn) + x, a * (u * sn + v * c)
        s = float(h >= 1.0)
        v = hard(h, s, 0.0)
        expected.append((s, v, u))
    outs, seqs = trace(node, [1.5] * 4, "v", "u")
    assert outs == [e[0] for e in expected] and 1.0 in outs
    assert seqs["v"] == pytest.approx([e[1] for e in expected])
    assert seqs["u"] == pytest.approx([e[2] for e in expected])


def test_ternary_if_fires_both_signs():
    soft = neuron.TernaryIFNode(1.0, None)
    outs, seqs = trace(soft, [0.6, 0.6, -2.0, 0.2], "v")
    # H: .6, 1.2 (+1, V=.2), -1.8 (-1, V=-.8), -.6
    assert outs == [0, 1, -1, 0] and seqs["v"] == pytest.approx([0.6, 0.2, -0.8, -0.6])
    hard_node = neuron.TernaryLIFNode(2.0, True, 0.5, 0.0)
    outs, seqs = trace(hard_node, [1.2, -3.0], "v")
    # H: .6 (+1, V=0), -1.5 (-1, V=0)
    assert outs == [1, -1] and seqs["v"] == [0.0, 0.0]


def test_gated_lif_hand_trace():
    node = neuron.GatedLIFNode(3)
    with torch.no_grad():
        for p in (node.alpha, node.beta, node.gamma):
            p.zero_()  # all three gates = 1/2
    logit = lambda p: -math.log(1 / p - 1)  # noqa: E731
    assert float(node.tau.detach()) == pytest.approx(logit(0.25)) and node.conduct.shape == (3,)
    tau, vth, decay, vsub, cond, half = 0.25, 0.5, 0.5 / 6, 0.5, 0.5, 0.5
    k = 1 - half * (1 - tau)
    v, s, expected = 0.0, 0.0, []
    for x in (1.0, 1.0, 1.0):
        current = x * (1 - half * (1 - cond))
        v = k * v - (1 - half) * decay + current - k * v * half * s - (1 - half) * vsub * s
        s = float(v >= vth)
        expected.append((s, v))
    out = node(torch.ones(3, 1, 1, 1, 1))
    assert out.flatten().tolist() == [s for s, _ in expected] and 1.0 in out
    assert float(node.v.detach()) == pytest.approx(expected[-1][1])
    with pytest.raises(ValueError):
        node.step_mode = "s"


# -------------------------------------------------------------------------------------- parallel neurons
def test_psn_is_one_gemm():
    node = neuron.PSN(3)
    with torch.no_grad():
        node.weight.copy_(torch.tensor([[1.0, 0, 0], [0.5, 1, 0], [0.25, 0.5, 1]]))
        node.bias.fill_(-1.0)
    x = torch.tensor([[0.8], [0.8], [0.8]], requires_grad=True)
    # H: -.2, .2, .4
    assert node(x)[:, 0].tolist() == [0.0, 1.0, 1.0]
    assert node.spec is None and node.step_mode == "m"
    with pytest.raises(ValueError, match="3 steps|steps"):
        node(torch.rand(4, 1))


def test_masked_psn_band_and_single_step():
    node = neuron.MaskedPSN(2, 3, lambda_init=1.0)
    with torch.no_grad():
        node.weight.fill_(1.0)
        node.bias.fill_(-1.0)
    assert node.masked_weight().tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    x = torch.tensor([[0.6], [0.6], [0.3]])
    node.step_mode = "m"
    multi = node(x)
    # H = band-sum - 1: -.4, .2, -.1
    assert multi[:, 0].tolist() == [0.0, 1.0, 0.0]
    node.step_mode = "s"
    assert torch.stack([node(xt) for xt in x]).equal(multi)
    with pytest.raises(OverflowError):
        node(x[0])
    node.reset()
    node.lambda_ = 0.5
    assert node.masked_weight().tolist() == [[1, 0.5, 0.5], [1, 1, 0.5], [0.5, 1, 1]]
    with pytest.raises(ValueError, match="lambda_ >= 1"):
        node(x[0])


def test_sliding_psn_exp_kernel_and_modes_agree():
    node = neuron.SlidingPSN(3)
    assert node.weight.tolist() == [0.25, 0.5, 1.0]
    assert node.gen_gemm_weight(4).tolist() == [[1, 0, 0, 0], [0.5, 1, 0, 0], [0.25, 0.5, 1, 0], [0, 0.25, 0.5, 1]]
    x = torch.tensor([[0.6], [0.6], [0.6], [0.0]])
    node.step_mode = "m"
    multi = node(x)
    # H: -.4, -.1, .05, -.475
    assert multi[:, 0].tolist() == [0.0, 0.0, 1.0, 0.0]
    node.step_mode = "s"
    assert torch.stack([node(xt) for xt in x]).equal(multi)
    node.reset()
    assert node.queue == ()


# -------------------------------------------------------------------------------------- research neurons
def test_dsr_if_forward_and_rate_backward():
    node = neuron.DSRIFNode(T=4, v_threshold=1.0, alpha=0.5)
    x = torch.tensor([[0.3, 2.0, -0.5]] * 4, requires_grad=True)
    out = node(x)
    # column 0: V .3, .6 (>= .5: emit 1, V -.4), -.1, .2 -> [0, 1, 0, 0]; column 1 fires every step
    assert out[:, 0].tolist() == [0.0, 1.0, 0.0, 0.0] and out[:, 1].tolist() == [1.0] * 4
    assert out[:, 2].tolist() == [0.0] * 4
    (out * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    # rates .3 (inside [0, 1]), 2 (above), -.5 (below): dL/dX_t = (sum_t dL/dS_t)/T inside only
    assert x.grad[:, 0].tolist() == pytest.approx([1.0] * 4)
    assert x.grad[:, 1].tolist() == [0.0] * 4 and x.grad[:, 2].tolist() == [0.0] * 4
    assert float(node.v_threshold.grad) == pytest.approx(2.0 * 4)  # the column above V_th
    with pytest.raises(ValueError, match="step_mode must be 'm'"):
        node.step_mode = "s"


def test_dsr_lif_forward_trace():
    node = neuron.DSRLIFNode(T=3, v_threshold=0.2, tau=2.0, delta_t=0.5, alpha=0.5, v_threshold_training=False)
    beta = math.exp(-0.5 / 2.0)
    v, expected = 0.0, []
    for x in (1.0, 1.0, 1.0):
        v = beta * v + (1 - beta) * x
        s = 0.2 if v >= 0.1 else 0.0
        v -= s
        expected.append(s / 0.5)
    assert node(torch.ones(3, 1))[:, 0].tolist() == pytest.approx(expected)
    assert node.weight_rate_spikes(torch.ones(3, 2), 2.0, 0.5).tolist() == pytest.approx([1.0, 1.0])


def test_ilc_if_feeds_its_spikes_back_through_the_population_conv():
    node = neuron.ILCIFNode(1, 2, 1.0, 0.0)
    with torch.no_grad():
        node.conn.weight.copy_(torch.tensor([[[0.0, 0.5]], [[0.25, 0.0]]]))
        node.conn.bias.zero_()
    x = torch.tensor([[[1.2, 0.3]], [[0.0, 0.3]], [[0.0, 0.3]]], requires_grad=True)
    out = node(x)
    # step 0: V (1.2, .3) -> spikes (1, 0), V (0, .3); recurrent = (0.5·0, 0.25·1) = (0, .25)
    # step 1: V (0, .85) no spike; recurrent 0; step 2: V (0, 1.15) -> spike on unit 1
    assert out[:, 0].tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    assert x[1, 0, 1].item() == pytest.approx(0.3)  # the input is not modified
    out.sum().backward()
    assert node.conn.weight.grad is not None


def test_activation_aware_if_offset_and_channel_thresholds():
    node = neuron.ActivationAwareIFNode(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0]), -1, None,
                                        step_mode="m", store_v_seq=True)
    out = node(torch.tensor([[0.6, 1.5], [0.6, 1.5]]))
    # channel 0: H .6 + .5 >= 1 fires (V -.4), H .2 +.5 < 1; channel 1: H 1.5, 3 (fires, V 1)
    assert out.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    torch.testing.assert_close(node.v_seq, torch.tensor([[-0.4, 1.5], [0.2, 1.0]]))
    with pytest.raises(ValueError, match="channels"):
        node(torch.rand(2, 3))


def test_stbif_counts_quantised_steps_within_bounds():
    node = neuron.STBIFNode(0.5, 4, sym=False)  # A in [0, 3]
    outs = [float(node(torch.tensor([v]))) for v in (0.3, 0.3, 2.0, 2.0, -0.4)]
    # q: .5+.6=1.1 (fire, .1), .7, 4.7 (fire, 3.7), 7.7 (fire, A=3 → 6.7), 5.9 (A = max: no fire)
    assert outs == [0.5, 0.0, 0.5, 0.5, 0.0]
    assert float(node.accumulated) == pytest.approx(1.5)
    signed = neuron.STBIFNode(1.0, 4, sym=True)  # A in [-2, 1]
    assert [float(signed(torch.tensor([v]))) for v in (-0.7, -1.0, -1.0)] == [-1.0, -1.0, 0.0]


def test_noisy_neurons_add_the_loaded_noise_to_current_and_spike():
    node = neuron.NoisyCUBALIFNode(1, 0.5, 0.5, True, 3, 0.5, 0.0, 0.5, 0.0)  # sigma = 0.5
    with pytest.raises(RuntimeError, match="reset_noise"):
        node(torch.zeros(3, 1, 1))
    cn = torch.tensor([[[0.2, 1.0], [0.2, 0.0], [0.0, -1.0]]])  # [B, T, (input noise, spike noise)]
    node.load_colored_noise(cn)
    out = node(torch.full((3, 1, 1), 0.4))
    # X+0.1: .5, .5, .4; I: .5, .75, .775; V: .5 (fire -> 0), .75 (fire), .775 (fire); + 0.5·(1, 0, -1)
    assert out[:, 0, 0].tolist() == pytest.approx([1.5, 1.0, 0.5])
    node.cancel_load()
    node.reset_noise(2)
    assert node.eps_v_seq.shape == (2, 3, 1) and node.noise_step == -1
    node(torch.zeros(3, 1, 1))
    assert node.noise_step == 0 and node.get_colored_noise().shape == (3, 2)
    node.is_training = False
    # no noise in eval: I .4, .6, .7; V .4, .8 (fire -> 0), .7 (fire)
    assert node(torch.full((3, 1, 1), 0.4))[:, 0, 0].tolist() == [0.0, 1.0, 1.0]


def test_noisy_readout_and_colored_noise_statistics():
    readout = neuron.NoisyNonSpikingIFNode(2, True, 3, 0.5 * math.sqrt(2), 0.0, "last-me")  # sigma = 0.5
    readout.load_colored_noise(torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 2.0]]]))
    assert readout(torch.ones(3, 1, 2)).tolist()[0] == pytest.approx([4.5, 4.0])
    noise = neuron.powerlaw_psd_gaussian(1.0, [200, 256], random_state=0)
    assert noise.shape == (200, 256)
    assert abs(noise.std() - 1.0) < 0.1 and abs(noise.mean()) < 0.1
    white = neuron.powerlaw_psd_gaussian(0.0, [200, 256], random_state=0)
    lag1 = lambda a: float((a[:, 1:] * a[:, :-1]).mean())  # noqa: E731
    assert lag1(noise) > 0.3 and abs(lag1(white)) < 0.05  # pink noise is correlated in time, white is not


def test_ilif_emits_multi_level_counts():
    node = neuron.ILIFNode(2.0, 1.0, step_mode="m")  # H = V/2 + X, S = round(clamp(H, 0, 4)), V = H - S
    x = torch.tensor([[2.6], [0.2], [7.0]], requires_grad=True)
    out = node(x)
    # H 2.6 -> S 3, V -.4; H 0 -> S 0, V 0; H 7 -> S 4 (capped), V 3
    assert out[:, 0].tolist() == [3.0, 0.0, 4.0] and float(node.v.detach()) == pytest.approx(3.0)
    out[0].sum().backward()  # inside the window [0, 4] the spike passes dH/dX = 1
    assert x.grad[0, 0].item() == 1.0
    with pytest.raises(ValueError, match="MultiLevelSpikeCount"):
        neuron.ILIFNode(surrogate_function=surrogate.ATan())


def test_few_spike_node_encodes_with_k_spikes():
    table = neuron.FewSpikeTable([1.0, 0.5, 0.25], [1.0, 0.5, 0.25], [1.0, 0.5, 0.25])  # binary expansion
    node = neuron.FewSpikeNode(table)
    # g = 1.3: z = (1, 0, 1) -> y = 1.25;  g = 0.6: (0, 1, 0) -> 0.5
    assert node(torch.tensor([1.3, 0.6])).tolist() == [1.25, 0.5]
    node.step_mode = "m"
    out = node(torch.tensor([[0.5], [0.5], [0.3]]))  # the gate is the sum, 1.3
    assert out[:, 0].tolist() == [1.0, 0.0, 0.25]
    outlier = neuron.OutlierAwareThresholdNode(table, neuron.FewSpikeTable([2.0, 1.0, 0.5], [2.0, 1.0, 0.5],
                                                                           [2.0, 1.0, 0.5]), 1.5)
    assert outlier(torch.tensor([-1.3, 3.2])).tolist() == [-1.25, 3.0]  # the sign is restored; 3.2 uses the outliers
    regions = neuron.HGNode([table, neuron.FewSpikeTable([1.5, 1, 1], [0, 0, 0], [3, 0, 0])], [1.0])
    assert regions(torch.tensor([0.6, 1.6])).tolist() == [0.5, 3.0]
    with pytest.raises(ValueError, match="strictly increasing"):
        neuron.HGNode([table, table, table], [1.0, 0.5])


def test_flexsn_runs_a_pure_step_function():
    def core(x, v, threshold):  # IF with a learnable threshold as a static input; smooth spike
        h = v + x
        s = (h >= threshold).to(h.dtype)
        return s, h - s * threshold

    threshold = torch.nn.Parameter(torch.tensor(1.0))
    node = neuron.FlexSN(core, 1, (threshold,), "m", store_state_seqs=True)
    assert [n for n, _ in node.named_parameters()] == ["_static_input_0"]
    out = node(torch.tensor([[0.6], [0.6], [0.6]]))
    # H .6, 1.2 (fire, V .2), .8
    assert out[:, 0].tolist() == [0.0, 1.0, 0.0]
    assert node.state_seqs[0][:, 0].tolist() == pytest.approx([0.6, 0.2, 0.8])
    node.reset()
    assert node.states == (None,)
    with pytest.raises(TypeError, match="static_inputs"):
        neuron.FlexSN(lambda x, v: (x + threshold, v), 1)


def test_mpbn_lif_normalises_the_membrane_and_folds_into_the_threshold():
    def run(node, xs):
        outs, vs = [], []
        for x in xs:
            outs.append(float(node(torch.tensor([[x]])).detach()))
            vs.append(float(node.v.detach()))
        return outs, vs

    node = neuron.MPBNLIFNode(2.0, False, 1.0, 0.0, out_features=1).eval()
    with torch.no_grad():
        node.vbn.running_mean.fill_(0.5)
        node.vbn.running_var.fill_(0.25 - node.vbn.eps)  # sigma = 0.5
        node.vbn.weight.fill_(2.0)
        node.vbn.bias.fill_(0.1)
    # H = V/2 + X; BN(H) = 2(H - .5)/.5 + .1:  X=.6: H .6 -> .5 (no spike, V .5); X=.6: H .85 -> 1.5 (fire, V 0)
    outs, vs = run(node, [0.6, 0.6])
    assert outs == [0.0, 1.0] and vs == pytest.approx([0.5, 0.0])
    x = torch.linspace(0.0, 1.5, 16).view(16, 1)
    node.reset()
    before = node(x)
    node.re_parameterize_v_threshold()
    node.reset()
    after = node(x)  # one step from rest: BN(H) >= 1  <=>  H >= (1 - .1)·.5/2 + .5
    assert isinstance(node.vbn, torch.nn.Identity) and torch.equal(before, after) and 0 < after.sum() < 16
    plain = neuron.MPBNLIFNode(2.0, False, 1.0, 0.0, mpbn=False, out_features=1)
    assert run(plain, [0.6, 0.6, 0.6])[0] == [0.0, 0.0, 1.0]  # H .6, .9, 1.05
    with pytest.raises(ValueError, match="exactly one"):
        neuron.MPBNLIFNode()
