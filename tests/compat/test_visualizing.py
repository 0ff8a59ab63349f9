"""spikeforge.visualizing's SpikingJelly 2.0 names (plot_2d_bar_in_3d added; the older
plot_2d_spiking_feature_map too): signatures equal to SpikingJelly's, the bars drawn where the data says (CI), and
the same figure structure as SpikingJelly's plot in the peer venv."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")

from spikeforge import visualizing  # noqa: E402

SJ_NAMES = ["plot_1d_spikes", "plot_2d_bar_in_3d", "plot_2d_feature_map", "plot_2d_heatmap", "plot_one_neuron_v_s"]


def test_plot_2d_bar_in_3d(tmp_path):
    import matplotlib.pyplot as plt

    array = np.arange(12, dtype=float).reshape(4, 3) / 11  # [T=4, N=3]
    fig, ax = visualizing.plot_2d_bar_in_3d(torch.tensor(array), "bars", "neuron", "t", "value", dpi=80)
    assert ax.name == "3d" and ax.get_title() == "bars"
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()) == ("neuron", "t", "value")
    # one row of T bars per neuron, coloured by the neuron: T·N bars, row n in tab10's colour n
    assert len(ax.patches) == 12
    tab10 = matplotlib.colormaps["tab10"]
    for i, patch in enumerate(ax.patches):
        np.testing.assert_allclose(patch.get_facecolor()[:3], tab10(i // 4)[:3])
    heights = [getattr(p, "_height", None) for p in ax.patches]
    if None not in heights:  # matplotlib keeps each 3-d bar's height (private; checked where present)
        np.testing.assert_allclose(heights, array.T.flatten())
    zmin, zmax = ax.get_zlim()
    assert zmax >= array.max() - 1e-9 and zmin <= 0
    path = tmp_path / "bar3d.png"
    fig.savefig(path)
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="2-d"):
        visualizing.plot_2d_bar_in_3d(np.zeros(3), "t", "x", "y", "z")


def test_plot_2d_spiking_feature_map():
    import matplotlib.pyplot as plt

    spikes = (torch.rand(6, 5, 5) > 0.5).float()
    fig, ax = visualizing.plot_2d_spiking_feature_map(spikes, 2, 3, 1, "spikes")
    assert ax.get_title() == "spikes" and ax.images[0].get_array().shape == (12, 18)
    plt.close(fig)
    with pytest.raises(ValueError, match="only 0 and 1"):
        visualizing.plot_2d_spiking_feature_map(torch.rand(6, 5, 5) + 0.1, 2, 3, 1, "x")


def test_sj_visualizing_names_and_signatures():
    pytest.importorskip("spikingjelly")
    import spikingjelly.visualizing as sj_vis

    for name in SJ_NAMES:
        ours = inspect.signature(getattr(visualizing, name)).parameters
        theirs = inspect.signature(getattr(sj_vis, name)).parameters
        assert list(ours) == list(theirs), name
        assert [p.default for p in ours.values()] == [p.default for p in theirs.values()], name


def test_sj_plot_2d_bar_in_3d_same_figure():
    pytest.importorskip("spikingjelly")
    import matplotlib.pyplot as plt
    import spikingjelly.visualizing as sj_vis

    array = np.random.RandomState(0).rand(5, 4)
    figs = [lib.plot_2d_bar_in_3d(array, "t", "x", "y", "z", dpi=60) for lib in (visualizing, sj_vis)]
    (f1, a1), (f2, a2) = figs
    assert len(a1.collections) == len(a2.collections) and len(a1.patches) == len(a2.patches)
    np.testing.assert_allclose(a1.get_xlim3d(), a2.get_xlim3d())
    np.testing.assert_allclose(a1.get_ylim3d(), a2.get_ylim3d())
    np.testing.assert_allclose(a1.get_zlim3d(), a2.get_zlim3d())
    plt.close(f1)
    plt.close(f2)
