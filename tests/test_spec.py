"""The neuron description: one spec per module, validated once, translated from SpikingJelly / STBP spellings."""

from __future__ import annotations

import pytest
import torch

from spikeforge import LIFSpike, functional, neuron, surrogate
from spikeforge.spec import (
    KernelFamily,
    Leak,
    LeakLaw,
    NeuronKind,
    NeuronSpec,
    SurrogateKind,
    SurrogateSpec,
    conversion_if_spec,
    group_lif_spec,
    if_spec,
    lif_spec,
    plif_spec,
    stbp_lif_spec,
)


def test_every_neuron_module_exposes_its_spec():
    cases = [
        (neuron.IFNode(v_threshold=0.5, v_reset=None), NeuronKind.IF, LeakLaw.NONE, None),
        (neuron.LIFNode(tau=4.0, decay_input=False, surrogate_function=surrogate.ATan()), NeuronKind.LIF,
         LeakLaw.TIME_CONSTANT, 4.0),
        (neuron.ParametricLIFNode(init_tau=3.0), NeuronKind.PLIF, LeakLaw.LEARNABLE_TIME_CONSTANT, 3.0),
        (LIFSpike(tau=0.25, v_th=0.4), NeuronKind.STBP_LIF, LeakLaw.RETENTION, 0.25),
        (neuron.ConversionIFNode(0.7, half_threshold=True), NeuronKind.CONVERSION_IF, LeakLaw.NONE, None),
        (neuron.GroupLIF(lif=4, init_tau=0.25, init_vth=0.1), NeuronKind.GROUP_LIF, LeakLaw.RETENTION, 0.25),
    ]
    for module, kind, law, value in cases:
        spec = module.spec
        assert isinstance(spec, NeuronSpec) and spec.kind is kind and spec.leak.law is law
        if value is None:
            assert spec.leak.value is None
        else:
            assert spec.leak.value == pytest.approx(value, rel=1e-6)
    lif = cases[1][0].spec
    assert lif.v_threshold == 1.0 and lif.v_reset == 0.0 and not lif.decay_input and lif.fire_on_tie
    assert lif.surrogate == SurrogateSpec(SurrogateKind.ATAN, 2.0) and lif.binary_output
    assert lif.leak.decay == 0.25 and lif.family is KernelFamily.CHARGE_FIRE_RESET
    assert cases[0][0].spec.soft_reset and cases[0][0].spec.v_threshold == 0.5
    stbp = cases[3][0].spec
    assert not stbp.fire_on_tie and stbp.leak.decay == 0.75 and stbp.leak.retention == 0.25
    assert stbp.surrogate == SurrogateSpec(SurrogateKind.RECT, 1.0)  # STBP rectangle, a = 0.5 → 1/(2a)
    conv = cases[4][0].spec
    assert conv.conversion.half_threshold and conv.conversion.initial_membrane_fraction == 0.5
    assert conv.surrogate is None and conv.soft_reset and conv.family is KernelFamily.CONVERSION_IF
    group = cases[5][0].spec
    assert not group.binary_output and group.group.group_size == 4 and group.v_threshold == pytest.approx(0.1)


def test_spec_follows_changed_hyper_parameters():
    node = neuron.LIFNode(tau=2.0)
    assert node.spec.leak.value == 2.0
    node.tau = 5.0  # SpikingJelly code sets attributes after construction
    node.v_threshold = 0.3
    assert node.spec.leak.value == 5.0 and node.spec.v_threshold == 0.3
    plif = neuron.ParametricLIFNode(init_tau=2.0)
    with torch.no_grad():
        plif.w.fill_(0.0)  # sigmoid(0) = 1/2 → τ = 2
        plif.w.add_(torch.log(torch.tensor(1.0 / 3.0)))  # sigmoid(log(1/3)) = 1/4 → τ = 4
    assert plif.spec.leak.value == pytest.approx(4.0)
    conv = neuron.ConversionIFNode(torch.tensor([0.5, 1.0]).view(1, 2))
    assert conv.spec.conversion.per_channel_threshold and conv.spec.v_threshold is None


def test_leak_laws_give_the_kernel_coefficient():
    assert Leak(LeakLaw.NONE).decay == 0.0 and not Leak(LeakLaw.NONE).leaky
    assert Leak(LeakLaw.TIME_CONSTANT, 4.0).decay == 0.25
    assert Leak(LeakLaw.RETENTION, 0.25).decay == 0.75
    assert Leak(LeakLaw.LEARNABLE_TIME_CONSTANT, 2.0).decay == 0.5
    with pytest.raises(ValueError, match="comes from the module"):
        Leak(LeakLaw.LEARNABLE_TIME_CONSTANT).decay  # noqa: B018


@pytest.mark.parametrize("make, message", [
    (lambda: lif_spec(tau=1.0), "tau must be a finite number > 1"),
    (lambda: lif_spec(tau="2"), "tau must be a number"),
    (lambda: if_spec(v_threshold=float("nan")), "v_threshold must be a finite number"),
    (lambda: if_spec(v_reset=float("inf")), "v_reset must be a finite number or None"),
    (lambda: stbp_lif_spec(tau=1.5), r"tau must be the multiplicative decay in \[0, 1\]"),
    (lambda: group_lif_spec(group_size=0), "lif must be -1"),
    (lambda: SurrogateSpec(SurrogateKind.ATAN, alpha=0.0), "alpha must be a finite number > 0"),
    (lambda: NeuronSpec(NeuronKind.IF), "leak law none"),
    (lambda: NeuronSpec(NeuronKind.CONVERSION_IF, leak=Leak()), "conversion options"),
])
def test_validation_lives_in_the_spec(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_modules_validate_through_the_spec():
    with pytest.raises(ValueError, match="tau must be a finite number > 1"):
        neuron.LIFNode(tau=0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        LIFSpike(tau=2.0)
    with pytest.raises(ValueError, match="init_tau"):
        neuron.ParametricLIFNode(init_tau=1.0)
    with pytest.raises(ValueError, match="not a known neuron backend"):
        neuron.LIFNode(backend="cuda")
    with pytest.raises(ValueError, match="not a known neuron backend"):
        neuron.ConversionIFNode(backend="numba")


@pytest.mark.parametrize("spec", [
    if_spec(), lif_spec(3.0, v_reset=None, surrogate=SurrogateSpec(SurrogateKind.PIECEWISE_LEAKY_RELU, 1.0, 0.01)),
    plif_spec(2.0), stbp_lif_spec(), conversion_if_spec(0.5, signed_spikes=True), group_lif_spec(dim=3),
])
def test_key_round_trips_and_plain_data(spec):
    back = NeuronSpec.from_key(spec.key)
    if spec.leak.learnable:
        assert back == spec.replace(leak=Leak(spec.leak.law))  # the current τ travels as a tensor, not in the key
    else:
        assert back == spec
    assert NeuronSpec.from_dict(spec.to_dict()) == spec
    import json

    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()


def test_functional_calls_build_the_same_spec_as_the_modules():
    x = torch.rand(6, 3, 4) * 2
    node = neuron.LIFNode(tau=3.0, v_reset=None, surrogate_function=surrogate.ATan(), step_mode="m")
    out = node(x)
    spikes, v_last, _ = functional.lif_multi_step(x, tau=3.0, v_reset=None, surrogate_function=surrogate.ATan())
    assert torch.equal(out, spikes) and torch.equal(node.v, v_last)
    spikes2, _, _ = functional.neuron_multi_step(x, 0.0, node.spec)
    assert torch.equal(spikes, spikes2)
    with pytest.raises(ValueError, match="conversion_if spec"):
        functional.neuron_multi_step(x, 0.0, conversion_if_spec())


def test_surrogate_modules_and_specs_round_trip():
    from cases import SURROGATE_MODULES

    for cls in SURROGATE_MODULES:
        module = cls()
        rebuilt = surrogate.from_spec(module.spec)
        assert rebuilt.spec == module.spec
        x = torch.linspace(-2, 2, 41)
        torch.testing.assert_close(rebuilt.derivative(x), module.derivative(x), rtol=0, atol=0)
    assert surrogate.default().spec == neuron.LIFNode().spec.surrogate == functional.surrogate_spec(None)
