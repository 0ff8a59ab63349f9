"""energy.estimate against counts done by hand (the network and its spikes: tests/energy/helpers.py)."""

import pytest
import torch
import torch.nn as nn

from spikeforge import energy, functional, layer, neuron, surrogate

from .helpers import STATIC_X, N, T, changing_x, hand_net

# Per time step of one sample: layer 1 has 3·2 = 6 MACs, layer 2 has 2·2 = 4 (no bias).
# Layer 2 reads spikes at rate 0.5 (helpers.py), so SOP_2 = 0.5 · T · 4 = 0.5 · 4 · 4 = 8 per sample
# (check by synapses: 8 spikes in the batch, each reaching 2 outputs, over 2 samples = 8).
SOP_2 = 0.5 * 4 * 4
E_MAC, E_AC = 4.6, 0.9


def rows(report):
    return {row.name: row for row in report.layers}


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_static_input_first_layer_charged_once(step_mode):
    report = energy.estimate(hand_net(step_mode=step_mode), STATIC_X)
    first, second = rows(report)["0"], rows(report)["2"]
    assert report.T == T and report.samples == N and report.step_mode == step_mode
    assert (first.type, first.input_is_spikes, first.static_input) == ("Linear", False, True)
    assert first.flops == 6 and first.macs == 6 and first.sops == 0     # direct coding: computed once
    assert first.input_rate is None
    assert (second.input_is_spikes, second.flops, second.steps) == (True, 4, T)
    assert second.input_rate == pytest.approx(0.5)
    assert second.sops == pytest.approx(SOP_2) and second.macs == 0
    assert "IFNode" in second.input_source
    # 6 MACs · 4.6 pJ + 8 SOPs · 0.9 pJ = 27.6 + 7.2 = 34.8 pJ
    assert first.energy_pj == pytest.approx(27.6)
    assert second.energy_pj == pytest.approx(7.2)
    assert report.total_energy_pj == pytest.approx(34.8)
    # as an ANN: (6 + 4) MACs · 4.6 pJ = 46 pJ, one pass
    assert report.ann["macs"] == 10 and report.ann["energy_pj"] == pytest.approx(46.0)
    assert report.neuron_rates["1"] == pytest.approx(0.5)


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_changing_input_first_layer_charged_every_step(step_mode):
    # the third input changes over time, its weights are 0: same spikes, but layer 1 must run at every step
    report = energy.estimate(hand_net(step_mode=step_mode), changing_x())
    first, second = rows(report)["0"], rows(report)["2"]
    assert first.static_input is False
    assert first.macs == 6 * T                                  # 6 MACs · 4 steps = 24
    assert second.sops == pytest.approx(SOP_2)
    # 24 · 4.6 + 8 · 0.9 = 110.4 + 7.2 = 117.6 pJ
    assert report.total_energy_pj == pytest.approx(117.6)


def test_first_layer_switch():
    # static input, but charged at every step on request: 24 · 4.6 + 7.2 = 117.6 pJ
    per_step = energy.estimate(hand_net(), STATIC_X, first_layer_mac_per_step=True)
    assert rows(per_step)["0"].macs == 24 and per_step.total_energy_pj == pytest.approx(117.6)
    assert per_step.first_layer_policy == "per_step" and "first_layer_mac_per_step" in rows(per_step)["0"].note
    # changing input, charged once on request: 6 · 4.6 + 7.2 = 34.8 pJ
    once = energy.estimate(hand_net(), changing_x(), first_layer_mac_per_step=False)
    assert rows(once)["0"].macs == 6 and once.total_energy_pj == pytest.approx(34.8)


def test_non_binary_producer_is_counted_as_macs():
    # ConversionIFNode(emit_threshold=True) describes itself as graded (spec.binary_output=False). Soft-reset IF
    # with V_th = 1 gives the same values as the hard-reset IF here (a: 1 1 1 1, b: 0 1 0 1), but layer 2 is
    # charged MACs: its input changes over time, so 4 MACs · 4 steps = 16 MACs.
    producer = neuron.ConversionIFNode(v_threshold=1.0, emit_threshold=True, backend="reference")
    assert producer.spec.binary_output is False
    report = energy.estimate(hand_net(producer), STATIC_X)
    second = rows(report)["2"]
    assert second.input_is_spikes is False and second.input_rate is None
    assert second.static_input is False and second.macs == 16 and second.sops == 0
    assert "binary_output=False" in second.input_source
    # 6 · 4.6 + 16 · 4.6 = 27.6 + 73.6 = 101.2 pJ
    assert report.total_energy_pj == pytest.approx(101.2)
    assert any("`2`" in note and "non-binary" in note and "ConversionIFNode" in note for note in report.notes)
    assert "counted as MACs" in report.to_markdown()


def test_smooth_surrogate_output_is_not_spikes():
    smooth = neuron.IFNode(surrogate_function=surrogate.Sigmoid(spiking=False), backend="reference")
    report = energy.estimate(hand_net(smooth), STATIC_X)
    assert rows(report)["2"].input_is_spikes is False
    assert "smooth" in rows(report)["2"].input_source


def test_loader_averages_per_sample_and_encodes_with_T():
    # two batches of one sample each: the per-sample average is the same as one batch of both
    loader = [(STATIC_X[:, :1], torch.tensor([0])), (STATIC_X[:, 1:], torch.tensor([1]))]
    report = energy.estimate(hand_net(), loader)
    assert (report.samples, report.batches) == (2, 2)
    assert report.total_energy_pj == pytest.approx(34.8)
    # [N, 3] batches, direct-coded into T = 4 steps by estimate
    images = STATIC_X[0]
    encoded = energy.estimate(hand_net(), [images, images], T=T, batches=1)
    assert encoded.batches == 1 and encoded.total_energy_pj == pytest.approx(34.8)


def test_declared_spike_input_is_charged_as_acs():
    # binary input [T, 1, 3] with 6 ones of 12 -> rate 0.5; layer 1: SOP = 0.5 · 4 · 6 = 12 at 0.9 pJ
    x = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).unsqueeze(1)
    report = energy.estimate(hand_net(), x, input_spikes=True)
    first = rows(report)["0"]
    assert first.input_is_spikes and first.input_rate == pytest.approx(0.5) and first.sops == pytest.approx(12)
    assert first.energy_pj == pytest.approx(12 * 0.9)
    with pytest.raises(ValueError, match="0 and 1"):
        energy.estimate(hand_net(), STATIC_X * 0.5, input_spikes=True)


def test_cost_tables():
    # fp16: 6 · 1.5 + 8 · 0.4 = 12.2 pJ; int8: 6 · 0.23 + 8 · 0.03 = 1.62 pJ; custom: 6 · 2 + 8 · 1 = 20 pJ
    assert energy.estimate(hand_net(), STATIC_X, costs="fp16").total_energy_pj == pytest.approx(12.2)
    assert energy.estimate(hand_net(), STATIC_X, costs="int8").total_energy_pj == pytest.approx(1.62)
    custom = energy.CostTable(mac_pj=2.0, ac_pj=1.0, name="mine")
    assert energy.estimate(hand_net(), STATIC_X, costs=custom).total_energy_pj == pytest.approx(20.0)
    assert energy.estimate(hand_net(), STATIC_X, costs={"mac_pj": 2, "ac_pj": 1}).total_energy_pj == 20.0
    fp32 = energy.COST_TABLES["fp32"]
    assert (fp32.mac_pj, fp32.ac_pj, fp32.mult_pj, fp32.add_pj) == (4.6, 0.9, 3.7, 0.9)
    assert (energy.COST_TABLES["fp16"].mac_pj, energy.COST_TABLES["int8"].mac_pj) == (1.5, 0.23)
    with pytest.raises(ValueError, match="presets"):
        energy.cost_table("fp64")
    with pytest.raises(ValueError):
        energy.CostTable(mac_pj=-1.0, ac_pj=0.1)


def _conv_net(between: nn.Module) -> nn.Sequential:
    net = nn.Sequential(layer.Conv2d(1, 1, 1, bias=False), neuron.IFNode(backend="reference"), between,
                        layer.Flatten(), layer.Linear(1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[4].weight.fill_(1.0)
    functional.set_step_mode(net, "m")
    return net


def test_spikes_traced_through_max_pool_and_flatten_but_not_avg_pool():
    # x [T=2, N=1, 1, 2, 2]: step 0 one pixel at 1 (one spike, max-pooled to 1), step 1 nothing:
    # the Linear reads the max-pooled spikes [1, 0] -> rate 0.5, SOP = 0.5 · 2 steps · 1 MAC = 1
    x = torch.zeros(2, 1, 1, 2, 2)
    x[0, 0, 0, 0, 0] = 1.0
    report = energy.estimate(_conv_net(layer.MaxPool2d(2)), x)
    linear = rows(report)["4"]
    assert linear.input_is_spikes and linear.input_rate == pytest.approx(0.5) and linear.sops == pytest.approx(1)
    assert rows(report)["0"].type == "Conv2d" and rows(report)["0"].flops == 4    # 2·2 positions, 1x1 kernel
    # average pooling makes 0.25: not a spike any more -> MACs
    assert rows(energy.estimate(_conv_net(layer.AvgPool2d(2)), x))["4"].input_is_spikes is False


def test_seq_to_ann_container_and_in_place_change():
    net = nn.Sequential(layer.SeqToANNContainer(nn.Linear(3, 2, bias=False)),
                        neuron.IFNode(step_mode="m", backend="reference"),
                        layer.SeqToANNContainer(nn.Linear(2, 2, bias=False)))
    report = energy.estimate(net, STATIC_X)
    assert [r.name for r in report.layers] == ["0.0", "2.0"]
    assert rows(report)["2.0"].input_is_spikes        # T folded into the batch inside the container

    class Doubling(nn.Module):
        def forward(self, x):
            return x.mul_(2.0)   # in place: the values are no longer spikes

    net = nn.Sequential(layer.Linear(3, 2), neuron.IFNode(step_mode="m", backend="reference"), Doubling(),
                        layer.Linear(2, 2))
    functional.set_step_mode(net, "m")
    assert rows(energy.estimate(net, STATIC_X))["3"].input_is_spikes is False


class SpikeMatmul(nn.Module):
    """s = IF(x) then s @ W (W a parameter) and s @ sᵀ (spike-spike, as in spiking self-attention)."""

    def __init__(self):
        super().__init__()
        self.lif = neuron.IFNode(step_mode="m", backend="reference")
        self.w = nn.Parameter(torch.ones(3, 4))

    def forward(self, x):          # x [T, N, L=2, 3]
        s = self.lif(x)
        return s @ self.w, torch.matmul(s, s.transpose(-2, -1))


def test_functional_matmuls_are_rows():
    # x [T=2, N=1, 2, 3] of 0s and 1s: IF (V_th 1, reset to 0) fires exactly where x is 1: 8 of 12 -> rate 2/3
    x = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]]]).unsqueeze(1)
    report = energy.estimate(SpikeMatmul(), x)
    by_name = rows(report)
    assert list(by_name) == ["model.matmul[0]", "model.matmul[1]"]
    weight, attention = by_name["model.matmul[0]"], by_name["model.matmul[1]"]
    # s @ W: [2, 3] x [3, 4] = 24 MACs per step; SOP = 2/3 · 2 steps · 24 = 32
    assert weight.input_is_spikes and weight.flops == 24 and weight.sops == pytest.approx(32)
    # s @ sᵀ: [2, 3] x [3, 2] = 12 MACs per step; SOP = 2/3 · 2 · 12 = 16
    assert attention.input_is_spikes and attention.flops == 12 and attention.sops == pytest.approx(16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sequence"):
        energy.estimate(hand_net(), torch.ones(3))
    with pytest.raises(ValueError, match="T must be"):
        energy.estimate(hand_net(), STATIC_X, T=0)
    with pytest.raises(ValueError, match="no batch"):
        energy.estimate(hand_net(), [])
    with pytest.raises(TypeError):
        energy.estimate(hand_net(), 3)


def test_model_mode_and_state_restored():
    net = hand_net()
    net.train()
    first = energy.estimate(net, STATIC_X).total_energy_pj
    assert net.training                                     # measured in eval mode, then put back
    assert energy.estimate(net, STATIC_X).total_energy_pj == first    # membranes reset between runs
