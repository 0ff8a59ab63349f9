"""spikeforge.visualizing: every plot is drawn, labelled, saved non-empty; bad shapes are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from spikeforge import visualizing  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    return data


def test_plot_1d_spikes_raster_and_rates(tmp_path):
    spikes = torch.zeros(20, 4)
    spikes[::2, 1] = 1  # neuron 1 fires every other step: rate 0.5
    spikes[:, 3] = 1  # neuron 3 always: rate 1
    fig, ax = visualizing.plot_1d_spikes(spikes, "raster", "t", "neuron", figsize=(6, 4), dpi=80)
    assert ax.get_title() == "raster" and ax.get_xlabel() == "t" and ax.get_ylabel() == "neuron"
    rate_ax = fig.axes[1]
    assert rate_ax.get_title() == "firing rate"
    widths = [bar.get_width() for bar in rate_ax.patches]
    np.testing.assert_allclose(widths, [0.0, 0.5, 0.0, 1.0])
    assert len(ax.collections[0].get_offsets()) == 10 + 20  # one mark per spike
    _save(fig, tmp_path / "spikes.png")


def test_plot_1d_spikes_refuses_non_binary_and_wrong_rank():
    with pytest.raises(ValueError, match="only 0 and 1"):
        visualizing.plot_1d_spikes(np.full((3, 2), 0.5), "t", "x", "y")
    with pytest.raises(ValueError, match="2-d"):
        visualizing.plot_1d_spikes(np.zeros(5), "t", "x", "y")


def test_plot_2d_heatmap(tmp_path):
    v = np.linspace(-1, 1, 30).reshape(10, 3)  # [T=10, N=3]
    fig, ax = visualizing.plot_2d_heatmap(v, "membrane", "t", "neuron", colorbar_y_label="V", figsize=(6, 4),
                                          dpi=80)
    image = ax.images[0].get_array()
    assert image.shape == (3, 10)  # neurons as rows, time along x
    np.testing.assert_allclose(np.asarray(image), v.T)
    assert fig.axes[1].get_ylabel() == "V"
    _save(fig, tmp_path / "heat.png")
    with pytest.raises(ValueError, match="empty"):
        visualizing.plot_2d_heatmap(np.zeros((0, 3)), "a", "b", "c")


def test_plot_one_neuron_v_s(tmp_path):
    v = np.array([0.0, 0.5, 0.9, 0.0, 0.4])
    s = np.array([0, 0, 1, 0, 0])
    fig, ax_v, ax_s = visualizing.plot_one_neuron_v_s(v, s, v_threshold=0.8, v_reset=0.0, figsize=(6, 4), dpi=80)
    np.testing.assert_allclose(ax_v.lines[0].get_ydata(), v)
    assert ax_v.lines[1].get_ydata()[0] == 0.8  # threshold line
    assert ax_s.get_xlabel() == "time step t"
    _save(fig, tmp_path / "one.png")
    with pytest.raises(ValueError, match="same length"):
        visualizing.plot_one_neuron_v_s(v, s[:3])


def test_plot_2d_feature_map_layout(tmp_path):
    x = np.zeros((6, 4, 5))
    x[4] = 1.0  # channel 4 -> row 1, column 1 of a 2 x 3 grid
    fig, ax = visualizing.plot_2d_feature_map(x, 2, 3, 2, "maps", figsize=(6, 4), dpi=80)
    canvas = np.asarray(ax.images[0].get_array())
    assert canvas.shape == ((4 + 2) * 2, (5 + 2) * 3)
    top, left = 1 * 6 + 1, 1 * 7 + 1
    assert (canvas[top:top + 4, left:left + 5] == 1).all()
    assert (canvas[1:5, 1:6] == 0).all()  # channel 0 stays 0
    _save(fig, tmp_path / "maps.png")
    with pytest.raises(ValueError, match="nrows"):
        visualizing.plot_2d_feature_map(x, 2, 2, 1, "bad")


def test_training_curves_from_records_and_file(tmp_path):
    records = [dict(epoch=e, train_loss=0.05 / (e + 1), test_loss=0.06 / (e + 1), train_acc=0.8 + 0.05 * e,
                    test_acc=0.82 + 0.04 * e) for e in range(3)]
    fig, (ax_loss, ax_acc) = visualizing.plot_training_curves(records, title="curves")
    assert [line.get_label() for line in ax_acc.lines] == ["train", "test"]
    np.testing.assert_allclose(ax_acc.lines[1].get_ydata(), [0.82, 0.86, 0.90])
    _save(fig, tmp_path / "curves.png")
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    fig, _ = visualizing.plot_training_curves(path)
    _save(fig, tmp_path / "curves2.png")
    with pytest.raises(ValueError, match="empty"):
        visualizing.plot_training_curves([])


def test_save_run_plots_writes_three_files(tmp_path):
    records = [dict(epoch=0, train_loss=0.05, test_loss=0.04, train_acc=0.8, test_acc=0.85)]
    (tmp_path / "metrics.jsonl").write_text(json.dumps(records[0]) + "\n")
    rng = np.random.default_rng(0)
    written = visualizing.save_run_plots(tmp_path, rng.normal(size=(8, 10)), (rng.random((8, 10)) < 0.3) * 1.0,
                                         label=3)
    assert [p.name for p in written] == ["spikes.png", "membrane.png", "curves.png"]
    for p in written:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 2000
