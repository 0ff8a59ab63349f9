"""spikeforge.learning: STDP / MSTDP / MSTDPET learners and rules.

CI checks (no SpikingJelly): a hand-computed trace case, the convolution rule against an explicit loop over
positions, single- vs multi-step, and STDP combined with gradient descent in one optimiser step. With SpikingJelly
2.0 importable, both libraries' learners watch the *same* modules in one process and their ΔW must agree.
"""

import itertools

import pytest
import torch
import torch.nn as nn

from spikeforge import layer, learning, neuron


class Replay(nn.Module):
    """A stand-in neuron that outputs the given post-synaptic spikes, one entry per call."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)
        self.calls = 0

    def forward(self, x):
        y = self.outputs[self.calls]
        self.calls += 1
        return y


def ones(w):
    return torch.ones_like(w)


def test_stdp_linear_by_hand():
    # τ = 2: x ← x/2 + s.  pre spikes (2 inputs), post spikes (1 output), one sample
    pre = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
    post = torch.tensor([[[0.0]], [[1.0]], [[1.0]]])
    # t0: x_pre=[1,0]     x_post=0   ΔW += 0·x_pre − 0·s_pre          = [0, 0]
    # t1: x_pre=[.5,1]    x_post=1   ΔW += 1·[.5,1] − 1·[0,1]        = [.5, 0]
    # t2: x_pre=[1.25,1.5] x_post=1.5 ΔW += 1·[1.25,1.5] − 1.5·[1,1] = [−.25, 0]
    expected = torch.tensor([[0.25, 0.0]])
    fc = nn.Linear(2, 1, bias=False)
    sn = Replay(post)
    learner = learning.STDPLearner("s", fc, sn, tau_pre=2.0, tau_post=2.0, f_pre=ones, f_post=ones)
    with torch.no_grad():
        for x in pre:
            sn(fc(x))
    dw = learner.step(on_grad=False)
    torch.testing.assert_close(dw, expected)
    torch.testing.assert_close(learner.trace_pre, torch.tensor([[1.25, 1.5]]))
    torch.testing.assert_close(learner.trace_post, torch.tensor([[1.5]]))
    # the default f is the identity: ΔW is multiplied by W element-wise
    fc2 = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        fc2.weight.copy_(torch.tensor([[2.0, -3.0]]))
    sn2 = Replay(post)
    learner2 = learning.STDPLearner("s", fc2, sn2, 2.0, 2.0)
    with torch.no_grad():
        for x in pre:
            sn2(fc2(x))
    # potentiation Σ_t s_post·x_pre = [1.75, 2.5], depression Σ_t x_post·s_pre = [1.5, 2.5], each times W
    torch.testing.assert_close(learner2.step(on_grad=False), torch.tensor([[2.0 * (1.75 - 1.5), -3.0 * 0.0]]))


def test_stdp_step_by_step_equals_once_and_multi_step():
    torch.manual_seed(0)
    T, N = 6, 3
    pre = (torch.rand(T, N, 5) > 0.5).double()
    post = (torch.rand(T, N, 4) > 0.5).double()
    fc = layer.Linear(5, 4).double()

    def collect(mode, steps_between):
        sn = Replay(post if mode == "s" else [post])
        learner = learning.STDPLearner(mode, fc, sn, 3.0, 2.0)
        total = torch.zeros_like(fc.weight)
        with torch.no_grad():
            if mode == "m":
                fc.step_mode = "m"
                sn(fc(pre))
                fc.step_mode = "s"
                total += learner.step(on_grad=False)
            else:
                for t in range(T):
                    sn(fc(pre[t]))
                    if steps_between:
                        total += learner.step(on_grad=False)
                if not steps_between:
                    total += learner.step(on_grad=False)
        learner.close()
        return total

    once = collect("s", False)
    torch.testing.assert_close(collect("s", True), once)
    torch.testing.assert_close(collect("m", False), once)


def _conv_rule_by_loops(pre_seq, post_seq, weight, stride, tau_pre, tau_post):
    """ΔW of STDP on a conv by explicit loops over samples, output positions and kernel offsets."""
    c_out, c_in, kh, kw = weight.shape
    dw = torch.zeros_like(weight)
    x_pre = torch.zeros_like(pre_seq[0])
    x_post = torch.zeros_like(post_seq[0])
    for s_pre, s_post in zip(pre_seq, post_seq, strict=True):
        x_pre = x_pre - x_pre / tau_pre + s_pre
        x_post = x_post - x_post / tau_post + s_post
        n_batch, _, ho, wo = s_post.shape
        for n, o, i, a, b, u, v in itertools.product(range(n_batch), range(c_out), range(c_in), range(kh), range(kw),
                                                      range(ho), range(wo)):
            r, c = u * stride + a, v * stride + b
            dw[o, i, a, b] += weight[o, i, a, b] * (s_post[n, o, u, v] * x_pre[n, i, r, c]
                                                    - x_post[n, o, u, v] * s_pre[n, i, r, c])
    return dw


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_stdp_conv2d_against_explicit_loops(stride, padding):
    torch.manual_seed(1)
    T, N = 3, 2
    conv = layer.Conv2d(2, 2, 2, stride=stride, padding=padding, bias=False).double()
    pre = (torch.rand(T, N, 2, 4, 4) > 0.4).double()
    out_hw = (4 + 2 * padding - 2) // stride + 1
    post = (torch.rand(T, N, 2, out_hw, out_hw) > 0.4).double()
    sn = Replay(post)
    learner = learning.STDPLearner("s", conv, sn, 2.0, 4.0)
    with torch.no_grad():
        for x in pre:
            sn(conv(x))
    dw = learner.step(on_grad=False)
    padded = torch.nn.functional.pad(pre, (padding,) * 4)
    expected = _conv_rule_by_loops(padded, post, conv.weight.detach(), stride, 2.0, 4.0)
    torch.testing.assert_close(dw, expected)
    assert learner.trace_pre.shape == padded.shape[1:]  # the pre trace lives on the padded input


def test_stdp_conv1d_matches_conv2d_on_a_row():
    torch.manual_seed(2)
    c1 = nn.Conv1d(2, 3, 3, stride=2, bias=False).double()
    c2 = nn.Conv2d(2, 3, (1, 3), stride=(1, 2), bias=False).double()
    with torch.no_grad():
        c2.weight.copy_(c1.weight.unsqueeze(2))
    pre = (torch.rand(2, 2, 2, 9) > 0.5).double()
    post = (torch.rand(2, 2, 3, 4) > 0.5).double()
    d1 = learning.stdp_multi_step(c1, pre, post, None, None, 2.0, 2.0)[2]
    d2 = learning.stdp_multi_step(c2, pre.unsqueeze(3), post.unsqueeze(3), None, None, 2.0, 2.0)[2]
    torch.testing.assert_close(d1, d2.squeeze(2))


def test_stdp_with_gradient_descent_in_one_optimiser_step():
    """The STDP tutorial's pattern: loss.backward(), learner.step(on_grad=True), optimizer.step()."""
    torch.manual_seed(3)
    T, N = 4, 2
    net = nn.Sequential(layer.Linear(6, 3, bias=False, step_mode="m"),
                        neuron.IFNode(v_threshold=0.5, step_mode="m"))
    learner = learning.STDPLearner("m", net[0], net[1], 2.0, 2.0, f_pre=lambda w: w.clamp(-1, 1),
                                   f_post=lambda w: w.clamp(-1, 1))
    x = (torch.rand(T, N, 6) > 0.3).float()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    w0 = net[0].weight.detach().clone()
    opt.zero_grad()
    out = net(x)
    loss = out.mean()
    loss.backward()
    grad_gd = net[0].weight.grad.clone()
    # the expected ΔW from the recorded spikes, through the rule functions
    _, _, dw = learning.stdp_multi_step(net[0], x, out.detach(), None, None, 2.0, 2.0, lambda w: w.clamp(-1, 1),
                                        lambda w: w.clamp(-1, 1))
    assert dw.abs().sum() > 0
    assert learner.step(on_grad=True) is None
    torch.testing.assert_close(net[0].weight.grad, grad_gd - dw)
    opt.step()
    torch.testing.assert_close(net[0].weight.detach(), w0 - 0.1 * (grad_gd - dw))
    # the records were consumed; reset clears the traces
    assert learner.in_spike_monitor.records == [] and learner.out_spike_monitor.records == []
    learner.reset()
    assert learner.trace_pre is None and learner.trace_post is None


def test_disable_enable_close_and_scale():
    fc = nn.Linear(2, 2)
    sn = Replay([torch.ones(1, 2)] * 4)
    learner = learning.STDPLearner("s", fc, sn, 2.0, 2.0, ones, ones)
    learner.disable()
    with torch.no_grad():
        sn(fc(torch.ones(1, 2)))
    assert learner.step(on_grad=False) is None  # nothing recorded while disabled
    learner.enable()
    with torch.no_grad():
        sn(fc(torch.ones(1, 2)))
    # one step from zero traces: x = s, so ΔW = s_post s_preᵀ − s_post s_preᵀ = 0, scaled stays 0
    torch.testing.assert_close(learner.step(on_grad=False, scale=3.0), torch.zeros(2, 2))
    learner.close()
    with pytest.raises(RuntimeError, match="closed"):
        learner.enable()


def test_learner_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tau_pre"):
        learning.STDPLearner("s", nn.Linear(2, 2), nn.Identity(), 0.5, 2.0)
    with pytest.raises(NotImplementedError, match="groups"):
        learning.STDPLearner("s", nn.Conv2d(2, 2, 3, groups=2), nn.Identity(), 2.0, 2.0)
    with pytest.raises(NotImplementedError, match="Linear, Conv1d and Conv2d"):
        learning.STDPLearner("s", nn.Conv3d(2, 2, 3), nn.Identity(), 2.0, 2.0)
    with pytest.raises(ValueError, match="step_mode"):
        learning.STDPLearner("x", nn.Linear(2, 2), nn.Identity(), 2.0, 2.0)


def test_mstdp_by_hand():
    # exponential traces: x ← x·e^{−1/τ} + s; ΔW uses the eligibility of the previous step
    fc = nn.Linear(1, 1, bias=False)
    post = [torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]])]
    sn = Replay(post)
    learner = learning.MSTDPLearner("s", fc, sn, tau_pre=1.0, tau_post=1.0, f_pre=ones, f_post=ones)
    pre = [torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.tensor([[0.0]])]
    d = torch.exp(torch.tensor(-1.0))
    deltas = []
    with torch.no_grad():
        for x in pre:
            sn(fc(x))
            deltas.append(learner.step(reward=2.0, on_grad=False))
    # ζ0 = 1·0 − 1·0 = 0;  ζ1 = 0·(1) − e^{−1}·1 = −e^{−1};  ζ2 = 0
    torch.testing.assert_close(deltas[0], torch.zeros(1, 1))
    torch.testing.assert_close(deltas[1], torch.zeros(1, 1))          # 2 · ζ0
    torch.testing.assert_close(deltas[2], (2.0 * -d).reshape(1, 1))   # 2 · ζ1


def test_mstdpet_by_hand():
    fc = nn.Linear(1, 1, bias=False)
    sn = Replay([torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0])])
    learner = learning.MSTDPETLearner("s", fc, sn, 1.0, 1.0, tau_trace=2.0, f_pre=ones, f_post=ones)
    d = torch.exp(torch.tensor(-1.0))
    got = []
    with torch.no_grad():
        for x in (torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0])):
            sn(fc(x))
            got.append(learner.step(reward=1.0, on_grad=False))
    # ζ0 = 0, ζ1 = −e^{−1}; e1 = 0, e2 = e1·e^{−1/2} + ζ1/2
    torch.testing.assert_close(got[1], torch.zeros(1, 1))
    torch.testing.assert_close(got[2], (-d / 2).reshape(1, 1))


# ---- against SpikingJelly 2.0 in the same process ------------------------------------------------------------


@pytest.fixture(scope="module")
def sj():
    return pytest.importorskip("spikingjelly.activation_based.learning")


def _both(sj, mode, synapse, sn, *args, **kwargs):
    return sj.STDPLearner(mode, synapse, sn, *args, **kwargs), learning.STDPLearner(mode, synapse, sn, *args,
                                                                                   **kwargs)


def _clamp(w):
    return w.clamp(-0.5, 0.5)


@pytest.mark.parametrize("kind", ["linear", "conv2d", "conv1d"])
@pytest.mark.parametrize("mode", ["s", "m"])
def test_stdp_learner_matches_spikingjelly(sj, kind, mode):
    torch.manual_seed(4)
    T, N = 5, 3
    if kind == "linear":
        syn = layer.Linear(4, 6).double()
        pre, post = torch.rand(T, N, 4) > 0.5, torch.rand(T, N, 6) > 0.5
    elif kind == "conv2d":
        syn = layer.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="reflect").double()
        pre, post = torch.rand(T, N, 2, 7, 7) > 0.5, torch.rand(T, N, 3, 4, 4) > 0.5
    else:
        syn = layer.Conv1d(2, 3, 3, padding=2, padding_mode="circular").double()
        pre, post = torch.rand(T, N, 2, 7) > 0.5, torch.rand(T, N, 3, 9) > 0.5
    pre, post = pre.double(), post.double()
    sn = Replay(post if mode == "s" else [post[:2], post[2:]])
    theirs, ours = _both(sj, mode, syn, sn, 2.0, 3.0, _clamp, torch.tanh)
    syn.step_mode = mode
    with torch.no_grad():
        if mode == "s":
            for x in pre:
                sn(syn(x))
        else:  # two chunks: the traces carry over
            sn(syn(pre[:2]))
            sn(syn(pre[2:]))
    expected = theirs.step(on_grad=False)
    torch.testing.assert_close(ours.step(on_grad=False), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.trace_pre, theirs.trace_pre, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.trace_post, theirs.trace_post, rtol=1e-12, atol=1e-12)


def test_stdp_on_grad_matches_spikingjelly_with_real_neurons(sj):
    torch.manual_seed(5)
    net = nn.Sequential(layer.Linear(8, 4, bias=False), neuron.LIFNode(tau=2.0))
    with torch.no_grad():
        net[0].weight.uniform_(0.0, 1.0)  # strong enough for the LIF neurons to fire
    theirs, ours = _both(sj, "s", net[0], net[1], 2.0, 2.0, _clamp, _clamp)
    x = (torch.rand(6, 3, 8) > 0.4).float()
    for xt in x:
        net(xt)
    net[0].weight.grad = torch.full_like(net[0].weight, 0.25)
    theirs.step(on_grad=True)
    grad_sj = net[0].weight.grad.clone()
    net[0].weight.grad = torch.full_like(net[0].weight, 0.25)
    ours.step(on_grad=True)
    torch.testing.assert_close(net[0].weight.grad, grad_sj)
    assert (grad_sj != 0.25).any()


def test_mstdp_learners_match_spikingjelly(sj):
    torch.manual_seed(6)
    fc = nn.Linear(4, 3).double()
    post = [(torch.rand(2, 3) > 0.5).double() for _ in range(4)]
    pre = [(torch.rand(2, 4) > 0.5).double() for _ in range(4)]
    sn = Replay(post)
    a = sj.MSTDPLearner("s", fc, sn, 2.0, 3.0, _clamp, torch.tanh)
    b = learning.MSTDPLearner("s", fc, sn, 2.0, 3.0, _clamp, torch.tanh)
    with torch.no_grad():
        for t, x in enumerate(pre):
            sn(fc(x))
            reward = torch.tensor([1.0, -0.5], dtype=torch.float64) * (t + 1)
            torch.testing.assert_close(b.step(reward, on_grad=False), a.step(reward, on_grad=False))
    fc1 = nn.Linear(4, 3).double()
    sn1 = Replay([p[0] for p in post])
    a = sj.MSTDPETLearner("s", fc1, sn1, 2.0, 3.0, 4.0, _clamp, torch.tanh)
    b = learning.MSTDPETLearner("s", fc1, sn1, 2.0, 3.0, 4.0, _clamp, torch.tanh)
    with torch.no_grad():
        for t, x in enumerate(pre):
            sn1(fc1(x[0]))
            torch.testing.assert_close(b.step(0.5 * t, on_grad=False), a.step(0.5 * t, on_grad=False))


def test_rule_functions_match_spikingjelly(sj):
    fl = pytest.importorskip("spikingjelly.activation_based.functional.learning")
    torch.manual_seed(7)
    w = torch.randn(3, 4, dtype=torch.float64)
    pre, post = (torch.rand(2, 4) > 0.5).double(), (torch.rand(2, 3) > 0.5).double()
    trace = (torch.rand(2, 4, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64))
    for name in ("stdp_linear_step", "mstdp_linear_step"):
        ours = getattr(learning, name)(pre, post, trace, w, tau_pre=2.0, tau_post=5.0, f_pre=torch.tanh)
        theirs = getattr(fl, name)(pre, post, trace, w, tau_pre=2.0, tau_post=5.0, f_pre=torch.tanh)
        torch.testing.assert_close(ours[0], theirs[0])
        torch.testing.assert_close(ours[1], theirs[1])
    e = torch.rand(3, 4, dtype=torch.float64)
    torch.testing.assert_close(learning.mstdpet_reward_step(0.7, e, e * 2, tau_trace=3.0),
                               fl.mstdpet_reward_step(0.7, e, e * 2, tau_trace=3.0))


# ---- online training loops -------------------------------------------------------------------------------------


def _mse(y, target):
    return ((y - target) ** 2).mean()


@pytest.mark.parametrize("online", [True, False])
def test_ottt_online_training_by_hand(online):
    torch.manual_seed(8)
    model = nn.Linear(3, 2)
    ref = nn.Linear(3, 2)
    ref.load_state_dict(model.state_dict())
    x, target = torch.rand(4, 5, 3), torch.rand(4, 5, 2)  # batch-first [N, T, ...]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    total, ys = learning.ottt_online_training(model, opt, x, target, _mse, online)
    assert ys.shape == (4, 5, 2)
    # by hand: per-step SGD (online) or one SGD step on the summed per-step losses
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.5)
    expected_total = 0.0
    opt_ref.zero_grad()
    for t in range(5):
        if online:
            opt_ref.zero_grad()
        loss = _mse(ref(x[:, t]), target[:, t])
        loss.backward()
        expected_total += loss.item()
        if online:
            opt_ref.step()
    if not online:
        opt_ref.step()
    assert total.item() == pytest.approx(expected_total, rel=1e-6)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_fptt_first_steps_by_hand():
    torch.manual_seed(9)
    alpha, lr = 0.5, 0.1
    model = nn.Linear(2, 1, bias=False)
    w0 = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    w_ra = learning.fptt_online_training_init_w_ra(opt)
    torch.testing.assert_close(w_ra[0], w0)
    x, target = torch.rand(2, 3, 2), torch.rand(2, 3, 1)  # T = 2

    def grad_at(w, t):
        w = w.clone().requires_grad_(True)
        _mse(x[t] @ w.T, target[t]).backward()
        return w.grad

    learning.fptt_online_training(model, opt, x, target, _mse, alpha, w_ra)
    # t = 0: the proximal term is 0 at W = W̄ = W0 (and ∇_{-1} = 0), so a plain SGD step
    w1 = w0 - lr * grad_at(w0, 0)
    g1 = grad_at(w1, 0)                      # the plain step loss at the new weights
    w_ra1 = (w0 + w1) / 2 - g1 / (2 * alpha)
    # t = 1: loss + α/2 · mean((W − W̄ − g1/(2α))²)
    target_w = w_ra1 + g1 / (2 * alpha)
    w2 = w1 - lr * (grad_at(w1, 1) + alpha * (w1 - target_w) / w1.numel())
    torch.testing.assert_close(w_ra[0], w_ra1)
    torch.testing.assert_close(model.weight.detach(), w2)


def _twin_nets(sj_layer, sj_neuron):
    torch.manual_seed(10)
    a = nn.Sequential(sj_layer.Linear(4, 3), sj_neuron.LIFNode())
    b = nn.Sequential(layer.Linear(4, 3), neuron.LIFNode())
    with torch.no_grad():
        a[0].weight.uniform_(0.0, 1.0)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("method", ["ottt_online", "ottt_offline", "fptt"])
def test_online_training_matches_spikingjelly(sj, method):
    sjl = pytest.importorskip("spikingjelly.activation_based.layer")
    sjn = pytest.importorskip("spikingjelly.activation_based.neuron")
    sjf = pytest.importorskip("spikingjelly.activation_based.functional")
    sjo, ours = sj.online_learning, learning.online_learning  # the module path SpikingJelly uses
    a, b = _twin_nets(sjl, sjn)
    torch.manual_seed(11)
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5)
    if method == "fptt":
        x, target = torch.rand(4, 2, 4) * 2, (torch.rand(4, 2, 3) > 0.5).float()  # time-first
        ra_a, ra_b = sjo.fptt_online_training_init_w_ra(opt_a), ours.fptt_online_training_init_w_ra(opt_b)
        sjo.fptt_online_training(a, opt_a, x, target, _mse, 0.5, ra_a)
        ours.fptt_online_training(b, opt_b, x, target, _mse, 0.5, ra_b)
        for u, v in zip(ra_a, ra_b, strict=True):
            torch.testing.assert_close(v, u)
    else:
        x, target = torch.rand(2, 4, 4) * 2, (torch.rand(2, 4, 3) > 0.5).float()  # batch-first
        online = method == "ottt_online"
        la, ya = sjo.ottt_online_training(a, opt_a, x, target, _mse, online)
        lb, yb = ours.ottt_online_training(b, opt_b, x, target, _mse, online)
        torch.testing.assert_close(lb, la)
        torch.testing.assert_close(yb, ya)
    sjf.reset_net(a)
    moved = False
    for (name, pa), pb, p0 in zip(a.named_parameters(), b.parameters(), _twin_nets(sjl, sjn)[1].parameters(),
                                  strict=True):
        torch.testing.assert_close(pb, pa, msg=name)
        moved = moved or not torch.equal(pb, p0)
    assert moved
