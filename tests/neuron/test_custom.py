"""SpikingJelly-style custom neurons and constructor order: BaseNode / IFNode / LIFNode subclasses that override
neuronal_charge (or fire / reset), SimpleBaseNode / SimpleIFNode / SimpleLIFNode, SpikingJelly 2.0's positional
arguments and store_v_seq. Hand-computed traces and explicit torch loops as the expectations (CI, no
SpikingJelly); tests/compat/test_neurons_sj.py checks the same against SpikingJelly 2.0 where it is installed."""

from __future__ import annotations

import logging

import pytest
import torch

from spikeforge import functional, neuron, surrogate


def trace(node, xs):
    spikes, vs = [], []
    for x in xs:
        spikes.append(node(torch.tensor([x])).item())
        vs.append(node.v.item())
    return spikes, vs


@pytest.fixture
def count_kernel_calls(monkeypatch):
    calls = []
    real = functional.neuron_multi_step

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(functional, "neuron_multi_step", counting)
    return calls


# ------------------------------------------------------------------------------ SpikingJelly 2.0 positional
def test_if_positional_arguments_follow_spikingjelly_2():
    sg = surrogate.ATan()
    node = neuron.IFNode(0.5, -0.1, sg, True, "m", True)
    assert (node.v_threshold, node.v_reset, node.surrogate_function, node.detach_reset) == (0.5, -0.1, sg, True)
    assert node.step_mode == "m" and node.store_v_seq is True and node.backend is None
    out = node(torch.full((4, 2), 0.3))
    assert out[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]  # H: 0.2, 0.5 (fire, V=-0.1), 0.2, 0.5
    assert node.v_seq[:, 0].tolist() == pytest.approx([0.2, -0.1, 0.2, -0.1])


@pytest.mark.parametrize("cls,lead", [(neuron.LIFNode, (3.0, False)), (neuron.ParametricLIFNode, (3.0, False))])
def test_lif_positional_arguments_follow_spikingjelly_2(cls, lead):
    sg = surrogate.Erf()
    node = cls(*lead, 0.7, None, sg, True, "m", True)
    assert node.decay_input is False and node.v_threshold == 0.7 and node.v_reset is None
    assert node.surrogate_function is sg and node.detach_reset and node.step_mode == "m" and node.store_v_seq
    assert node.tau == pytest.approx(3.0)


def test_backend_is_keyword_only_and_an_old_positional_backend_is_refused():
    assert neuron.IFNode(backend="reference").backend == "reference"
    assert neuron.LIFNode(2.0, backend="reference").backend == "reference"
    with pytest.raises(TypeError, match="store_v_seq must be a bool.*backend="):
        neuron.IFNode(1.0, 0.0, surrogate.ATan(), False, "m", "torch")
    with pytest.raises(TypeError):
        neuron.IFNode(1.0, 0.0, surrogate.ATan(), False, "m", True, "torch")


def test_store_v_seq_in_single_step_mode_appends_until_reset():
    node = neuron.IFNode(store_v_seq=True)
    for x in (0.6, 0.6, 0.3):
        node(torch.tensor([x]))
    assert node.v_seq[:, 0].tolist() == pytest.approx([0.6, 0.0, 0.3])
    node.reset()
    assert node.v_seq is None
    node(torch.tensor([0.2]))
    assert node.v_seq.shape == (1, 1)


# ----------------------------------------------------------------------------------------- BaseNode subclass
class SquareIFNode(neuron.BaseNode):
    """SpikingJelly's tutorial neuron: H = V + X²."""

    def neuronal_charge(self, x):
        self.v = self.v + x ** 2


def test_base_node_subclass_hand_trace_and_reference_path(count_kernel_calls):
    assert SquareIFNode._python_dynamics and not neuron.IFNode._python_dynamics
    node = SquareIFNode()
    assert node.spec is None
    # H: 0.49, 0.98, 1.47 (fire, V=0), 0.49
    spikes, vs = trace(node, [0.7, 0.7, 0.7, -0.7])
    assert spikes == [0, 0, 1, 0]
    assert vs == pytest.approx([0.49, 0.98, 0.0, 0.49])
    assert count_kernel_calls == []


def test_base_node_subclass_gradient_equals_an_explicit_loop():
    torch.manual_seed(0)
    x = (torch.rand(5, 7, dtype=torch.float64) * 1.6 - 0.3).requires_grad_()
    node = SquareIFNode(v_reset=None, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")
    out = node(x)
    grad, = torch.autograd.grad((out * torch.arange(7.0, dtype=torch.float64)).sum() + node.v.sum(), x)

    x2 = x.detach().clone().requires_grad_()
    sg, v, spikes = surrogate.ATan(), torch.zeros(7, dtype=torch.float64), []
    for t in range(5):
        h = v + x2[t] ** 2
        s = sg(h - 1.0)
        v = h - s.detach() * 1.0
        spikes.append(s)
    ref = torch.stack(spikes)
    grad_ref, = torch.autograd.grad((ref * torch.arange(7.0, dtype=torch.float64)).sum() + v.sum(), x2)
    assert out.sum() > 0
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, grad_ref)


def test_subclass_calling_super_charge_reproduces_the_fused_neuron():
    class Doubled(neuron.LIFNode):
        def neuronal_charge(self, x):
            super().neuronal_charge(2.0 * x)

    class DoubledPLIF(neuron.ParametricLIFNode):
        def neuronal_charge(self, x):
            super().neuronal_charge(2.0 * x)

    torch.manual_seed(1)
    x = torch.rand(8, 3, 5, dtype=torch.float64)
    for custom, builtin in ((Doubled(3.0, False, 0.8, -0.1, step_mode="m", store_v_seq=True),
                             neuron.LIFNode(3.0, False, 0.8, -0.1, step_mode="m", store_v_seq=True)),
                            (DoubledPLIF(2.5, step_mode="m", store_v_seq=True),
                             neuron.ParametricLIFNode(2.5, step_mode="m", store_v_seq=True))):
        assert custom.spec is None and builtin.spec is not None
        xc, xb = x.clone().requires_grad_(), (2.0 * x).requires_grad_()
        out_c, out_b = custom(xc), builtin(xb)
        assert out_b.sum() > 0
        torch.testing.assert_close(out_c, out_b)
        torch.testing.assert_close(custom.v_seq, builtin.v_seq)
        (out_c.sum() + custom.v.sum()).backward()
        (out_b.sum() + builtin.v.sum()).backward()
        torch.testing.assert_close(xc.grad, 2.0 * xb.grad)
        for pc, pb in zip(custom.parameters(), builtin.parameters(), strict=True):
            torch.testing.assert_close(pc.grad, pb.grad)


def test_builtin_neurons_and_cosmetic_subclasses_stay_on_the_kernel(count_kernel_calls):
    class Named(neuron.LIFNode):
        def extra_repr(self):
            return "named"

    assert not Named._python_dynamics
    for node in (neuron.IFNode(step_mode="m"), neuron.LIFNode(step_mode="m"),
                 neuron.ParametricLIFNode(step_mode="m"), Named(step_mode="m")):
        node(torch.rand(4, 3))
        assert node.spec is not None
    assert len(count_kernel_calls) == 4


def test_overriding_fire_or_reset_is_detected_per_class():
    class NoReset(neuron.IFNode):
        def neuronal_reset(self, spike):
            pass

    class NegativeFire(neuron.LIFNode):
        def neuronal_fire(self):
            return self.surrogate_function(-self.v - self.v_threshold)

    assert NoReset._python_dynamics and NegativeFire._python_dynamics
    spikes, vs = trace(NoReset(), [0.6, 0.6, 0.6])
    assert spikes == [0, 1, 1] and vs == pytest.approx([0.6, 1.2, 1.8])
    spikes, _ = trace(NegativeFire(tau=2.0), [-3.0, -3.0])  # H = -1.5 fires: -H - 1 >= 0
    assert spikes == [1, 1]


def test_python_path_logs_once_per_class(caplog):
    class Once(neuron.BaseNode):
        def neuronal_charge(self, x):
            self.v = self.v + x

    with caplog.at_level(logging.INFO, logger="spikeforge.neuron"):
        for _ in range(2):
            node = Once(step_mode="m")
            node(torch.rand(3, 2))
            node.step_mode = "s"
            node(torch.rand(2))
        neuron.IFNode(step_mode="m")(torch.rand(3, 2))
    records = [r for r in caplog.records if r.name == "spikeforge.neuron"]
    assert len(records) == 1 and "Once" in records[0].getMessage() and "fused kernel" in records[0].getMessage()


def test_custom_neuron_with_extra_memory_and_a_refractory_step():
    class Refractory(neuron.BaseNode):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_memory("rest", 0.0)

        def neuronal_charge(self, x):
            self.v = self.v + x * (torch.as_tensor(self.rest) <= 0)

        def neuronal_reset(self, spike):
            super().neuronal_reset(spike)
            self.rest = torch.where(spike > 0, 2.0, (torch.as_tensor(self.rest) - 1).clamp_min(0))

    node = Refractory(step_mode="m")
    out = node(torch.full((6, 1), 0.6))
    # H: .6, 1.2 (fire, 2 steps blocked), 0, 0, .6, 1.2 (fire)
    assert out[:, 0].tolist() == [0, 1, 0, 0, 0, 1]
    node.reset()
    assert node.rest == 0.0 and node.v == 0.0


def test_single_step_functional_forward_override_spikingjelly_2_style():
    class Leaky(neuron.BaseNode):
        def single_step_functional_forward(self, inputs, states, **kwargs):
            (x,), (v,) = inputs, states
            h = 0.5 * v + x
            spike = self.surrogate_function(h - self.v_threshold)
            return (spike,), ((1.0 - spike) * h,)

    assert Leaky._python_dynamics and Leaky().spec is None
    spikes, vs = trace(Leaky(), [0.8, 0.8, 0.8])
    # H: .8, 1.2 (fire, 0), .8
    assert spikes == [0, 1, 0] and vs == pytest.approx([0.8, 0.0, 0.8])


def test_custom_neuron_in_a_network_resets_and_detaches():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), SquareIFNode(), torch.nn.Linear(4, 2), neuron.LIFNode())
    functional.set_step_mode(net, "m")
    functional.set_backend(net, "reference")
    assert net[3].backend == "reference" and net[1].backend is None  # set_backend reaches neurons with a spec
    x = torch.rand(5, 2, 3)
    out = net(x)
    out.sum().backward()
    functional.detach_net(net)
    assert not net[1].v.requires_grad
    functional.reset_net(net)
    assert net[1].v == 0.0


def test_base_node_without_charge_says_what_to_define():
    class Empty(neuron.BaseNode):
        pass

    with pytest.raises(NotImplementedError, match="neuronal_charge"):
        Empty()(torch.rand(3))


# ---------------------------------------------------------------------------------------- Simple* neurons
def test_simple_if_node_hand_trace_starts_at_zero():
    node = neuron.SimpleIFNode(1.0, -0.5)
    # v starts at 0 (not v_reset, as SpikingJelly's SimpleBaseNode): H .6, 1.2 (fire, V=-.5), .1
    spikes, vs = trace(node, [0.6, 0.6, 0.6])
    assert spikes == [0, 1, 0] and vs == pytest.approx([0.6, -0.5, 0.1])
    assert node.spec.kind.value == "if"


@pytest.mark.parametrize("decay_input", [True, False])
def test_simple_lif_node_hand_trace(decay_input):
    node = neuron.SimpleLIFNode(2.0, decay_input, 1.0, 0.0)
    x, v, expected = 1.5, 0.0, []
    for _ in range(4):
        h = v + (0.0 - v + x) / 2.0 if decay_input else v + (0.0 - v) / 2.0 + x
        s = float(h >= 1.0)
        v = 0.0 if s else h
        expected.append((s, v))
    spikes, vs = trace(node, [x] * 4)
    assert spikes == [s for s, _ in expected]
    assert vs == pytest.approx([v for _, v in expected])
    assert 1.0 in spikes


def test_simple_base_node_subclass_multi_step_equals_single_step():
    class Cubic(neuron.SimpleBaseNode):
        def neuronal_charge(self, x):
            self.v = 0.9 * self.v + x ** 3

    assert Cubic().spec is None
    x = torch.rand(6, 4) * 1.4
    multi = Cubic(step_mode="m")(x)
    single = Cubic()
    torch.testing.assert_close(multi, torch.stack([single(xt) for xt in x]))
    assert multi.sum() > 0

    class ChangedSimpleIF(neuron.SimpleIFNode):
        def neuronal_charge(self, x):
            self.v = self.v + 2 * x

    assert ChangedSimpleIF().spec is None and neuron.SimpleLIFNode(2.0, True).spec is not None


def test_reset_helpers_of_base_node():
    v, s = torch.tensor([0.4, 1.3]), torch.tensor([0.0, 1.0])
    assert neuron.BaseNode.apply_hard_reset(v, s, -0.1).tolist() == pytest.approx([0.4, -0.1])
    assert neuron.LIFNode.apply_soft_reset(v, s, 1.0).tolist() == pytest.approx([0.4, 0.3])
    assert neuron.IFNode.jit_hard_reset is neuron.BaseNode.apply_hard_reset
