"""The energy card (JSON, Markdown, PNG) and the monitor-based plots."""

import json

import pytest
import torch

from spikeforge import energy, functional, monitor, neuron, visualizing

from .helpers import SPIKES_A, STATIC_X, hand_net

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def report():
    return energy.estimate(hand_net(), STATIC_X, model_name="hand net", data_name="STATIC_X")


def test_json_holds_the_rows_and_totals(report):
    card = json.loads(report.to_json())
    assert [row["name"] for row in card["layers"]] == ["0", "2"]
    first, second = card["layers"]
    for key in ("name", "type", "input_is_spikes", "flops", "input_rate", "sops", "macs", "energy_pj"):
        assert key in first
    assert (first["macs"], first["input_is_spikes"], second["sops"], second["input_rate"]) == (6, False, 8, 0.5)
    assert card["total_energy_pj"] == pytest.approx(34.8)
    assert card["ann"]["energy_pj"] == pytest.approx(46.0)
    assert card["costs"]["mac_pj"] == 4.6 and "Horowitz" in card["costs"]["source"]
    assert "not 2 x MACs" in card["flops_unit"]
    assert card["T"] == 4 and card["samples"] == 2


def test_markdown_card(report):
    text = report.to_markdown()
    assert "# Energy card: hand net" in text
    assert "| `0` | Linear | real, static (MAC once) |" in text
    assert "| `2` | Linear | spikes (AC) |" in text and "0.5000" in text
    assert "34.8 pJ" in text and "46 pJ" in text
    assert "not 2 × MACs" in text and "E_MAC = 4.6 pJ, E_AC = 0.9 pJ" in text


def test_plot_and_save_write_pngs(report, tmp_path):
    fig, (ax_energy, ax_rate) = report.plot(tmp_path / "energy.png")
    assert (tmp_path / "energy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [t.get_text() for t in ax_energy.get_yticklabels()] == ["0", "2"]
    written = report.save(tmp_path / "card")
    assert sorted(p.name for p in written) == ["card.json", "card.md", "energy.png"]
    assert all(p.stat().st_size > 0 for p in written)
    assert energy.format_energy(34.8) == "34.8 pJ" and energy.format_energy(2.5e9) == "2.5 mJ"


def _monitored(step_mode):
    net = hand_net(step_mode=step_mode)
    mon = monitor.OutputMonitor(net, neuron.IFNode)
    if step_mode == "m":
        net(STATIC_X)
    else:
        for t in range(STATIC_X.shape[0]):
            net(STATIC_X[t])
    functional.reset_net(net)
    return mon


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_spike_raster_from_monitor(step_mode):
    mon = _monitored(step_mode)
    # sample 0 of the first IF layer: neuron a fires at every step, neuron b at steps 1 and 3 (helpers.py)
    assert torch.equal(monitor.spike_raster(mon, "1", sample=0), SPIKES_A)
    assert monitor.layer_firing_rates(mon)["1"] == pytest.approx(0.5)
    with pytest.raises(IndexError):
        monitor.spike_raster(mon, "1", sample=5)


def test_plot_helpers(tmp_path):
    mon = _monitored("m")
    fig, (ax, ax_rate) = visualizing.plot_layer_raster(mon, "1", sample=0)
    assert len(ax.collections[0].get_offsets()) == int(SPIKES_A.sum())     # one mark per spike: 6
    fig.savefig(tmp_path / "raster.png")
    fig, ax = visualizing.plot_firing_rates({"a": 0.5, "b": None, "c": 0.1})
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    fig.savefig(tmp_path / "rates.png")
    assert (tmp_path / "raster.png").stat().st_size > 0 and (tmp_path / "rates.png").stat().st_size > 0
    with pytest.raises(ValueError):
        visualizing.plot_firing_rates({})
