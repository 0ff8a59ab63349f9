"""Plots of spikes, membrane potentials, feature maps and training curves (extra ``viz``: matplotlib).

The signatures follow SpikingJelly's ``visualizing`` module: arrays are time-first (``[T, N]``), each
function accepts numpy arrays or tensors and returns the figure and its axes. matplotlib is imported
only when a function is called; if pyplot is not loaded yet the non-interactive Agg backend is selected,
so plotting works on headless machines (call ``matplotlib.use(...)`` first to choose another).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "plot_1d_spikes",
    "plot_2d_heatmap",
    "plot_one_neuron_v_s",
    "plot_2d_feature_map",
    "plot_2d_spiking_feature_map",
    "plot_2d_bar_in_3d",
    "plot_training_curves",
    "save_run_plots",
]


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("spikeforge.visualizing needs matplotlib: pip install 'spikeforge[viz]'") from e
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _as_array(x, name: str, ndim: int) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    return x


def _integer_ticks(axis, enabled: bool):
    if enabled:
        from matplotlib.ticker import MaxNLocator

        # min_n_ticks=1 keeps integer ticks even when the range holds a single integer (a one-epoch run)
        axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_1d_spikes(spikes, title: str, xlabel: str, ylabel: str, int_x_ticks: bool = True,
                   int_y_ticks: bool = True, plot_firing_rate: bool = True,
                   firing_rate_map_title: str = "firing rate", figsize: tuple[float, float] = (12, 8),
                   dpi: int = 200):
    """Raster of ``spikes`` ``[T, N]`` (one row per neuron, a mark per spike) and, on the right, each
    neuron's firing rate (spikes / T) as a bar. Returns ``(fig, raster_axes)``."""
    spikes = _as_array(spikes, "spikes", 2)
    if not np.isin(spikes, (0, 1)).all():
        raise ValueError("spikes must hold only 0 and 1")
    plt = _pyplot()
    T, N = spikes.shape
    fig = plt.figure(figsize=figsize, dpi=dpi)
    if plot_firing_rate:
        grid = fig.add_gridspec(1, 2, width_ratios=[5, 1], wspace=0.05)
        ax = fig.add_subplot(grid[0])
        ax_rate = fig.add_subplot(grid[1], sharey=ax)
    else:
        ax = fig.add_subplot(1, 1, 1)
    t_idx, n_idx = np.nonzero(spikes)
    ax.scatter(t_idx, n_idx, marker="|", s=max(20.0, 2000.0 / max(N, 1)), linewidths=1.5, color="black")
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(-0.5, N - 0.5)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _integer_ticks(ax.xaxis, int_x_ticks)
    _integer_ticks(ax.yaxis, int_y_ticks)
    if plot_firing_rate:
        rate = spikes.mean(axis=0)
        ax_rate.barh(np.arange(N), rate, color="tab:blue", height=0.7)
        for i, r in enumerate(rate):
            ax_rate.text(r, i, f" {r:.2f}", va="center", fontsize=8)
        ax_rate.set_xlim(0, max(1.0, float(rate.max())) * 1.35)
        ax_rate.set_title(firing_rate_map_title)
        ax_rate.set_xlabel("spikes / step")
        ax_rate.tick_params(labelleft=False)
    return fig, ax


def plot_2d_heatmap(array, title: str, xlabel: str, ylabel: str, int_x_ticks: bool = True,
                    int_y_ticks: bool = True, plot_colorbar: bool = True, colorbar_y_label: str = "magnitude",
                    x_max: float | None = None, figsize: tuple[float, float] = (12, 8), dpi: int = 200):
    """Heat map of ``array`` ``[T, N]`` with time on the x axis and one row per neuron (e.g. membrane
    potential). ``x_max`` relabels the x axis as running from 0 to ``x_max``. Returns ``(fig, ax)``."""
    array = _as_array(array, "array", 2)
    plt = _pyplot()
    T, N = array.shape
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    extent = None if x_max is None else [-0.5, x_max, N - 0.5, -0.5]
    image = ax.imshow(array.T, aspect="auto", interpolation="nearest", cmap="viridis", extent=extent)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _integer_ticks(ax.xaxis, int_x_ticks)
    _integer_ticks(ax.yaxis, int_y_ticks)
    if plot_colorbar:
        bar = fig.colorbar(image, ax=ax)
        bar.ax.set_ylabel(colorbar_y_label, rotation=90)
    return fig, ax


def plot_one_neuron_v_s(v, s, v_threshold: float = 1.0, v_reset: float | None = 0.0,
                        title: str = "$V[t]$ and $S[t]$ of the neuron", figsize: tuple[float, float] = (12, 8),
                        dpi: int = 200):
    """Membrane ``v`` ``[T]`` with the threshold (and reset) lines above, spikes ``s`` ``[T]`` below.
    Returns ``(fig, ax_v, ax_s)``."""
    v = _as_array(v, "v", 1)
    s = _as_array(s, "s", 1)
    if v.shape != s.shape:
        raise ValueError(f"v and s must have the same length, got {v.shape} and {s.shape}")
    plt = _pyplot()
    T = v.shape[0]
    fig, (ax_v, ax_s) = plt.subplots(2, 1, figsize=figsize, dpi=dpi, sharex=True,
                                     gridspec_kw={"height_ratios": [3, 1]})
    t = np.arange(T)
    ax_v.plot(t, v, marker=".", label="$V[t]$")
    ax_v.axhline(v_threshold, color="tab:red", linestyle="--", label="$V_{threshold}$")
    if v_reset is not None:
        ax_v.axhline(v_reset, color="tab:gray", linestyle=":", label="$V_{reset}$")
    ax_v.set_title(title)
    ax_v.set_ylabel("membrane potential")
    ax_v.legend(loc="upper right")
    fired = np.nonzero(s)[0]
    ax_s.eventplot(fired, lineoffsets=0.5, linelengths=1.0, colors="black")
    ax_s.set_ylim(0, 1)
    ax_s.set_yticks([])
    ax_s.set_ylabel("$S[t]$")
    ax_s.set_xlabel("time step t")
    ax_s.set_xlim(-0.5, T - 0.5)
    _integer_ticks(ax_s.xaxis, True)
    return fig, ax_v, ax_s


def plot_2d_feature_map(x3d, nrows: int, ncols: int, space: int, title: str,
                        figsize: tuple[float, float] = (12, 8), dpi: int = 200):
    """Tile the ``C`` channels of ``x3d`` ``[C, H, W]`` into an ``nrows x ncols`` grid separated by
    ``space`` pixels (filled with the maximum). Returns ``(fig, ax)``."""
    x3d = _as_array(x3d, "x3d", 3)
    C, H, W = x3d.shape
    if nrows < 1 or ncols < 1 or nrows * ncols != C:
        raise ValueError(f"nrows * ncols must equal the number of channels {C}, got {nrows} x {ncols}")
    if space < 0:
        raise ValueError(f"space must be >= 0, got {space}")
    plt = _pyplot()
    canvas = np.full(((H + space) * nrows, (W + space) * ncols), float(x3d.max()))
    for c in range(C):
        r, q = divmod(c, ncols)
        top, left = r * (H + space) + space // 2, q * (W + space) + space // 2
        canvas[top:top + H, left:left + W] = x3d[c]
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    ax.imshow(canvas, cmap="gray", interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return fig, ax


def plot_2d_spiking_feature_map(x3d, nrows: int, ncols: int, space: int, title: str,
                                figsize: tuple[float, float] = (12, 8), dpi: int = 200):
    """SpikingJelly 0.0.0.0.14's name for :func:`plot_2d_feature_map` of a spike map ``[C, H, W]`` (only 0 and
    1 allowed; spikes white on black). Returns ``(fig, ax)``."""
    spikes = _as_array(x3d, "x3d", 3)
    if not np.isin(spikes, (0, 1)).all():
        raise ValueError("x3d must hold only 0 and 1 (spikes); use plot_2d_feature_map for analog maps")
    return plot_2d_feature_map(spikes, nrows, ncols, space, title, figsize, dpi)


def plot_2d_bar_in_3d(array, title: str, xlabel: str, ylabel: str, zlabel: str, int_x_ticks: bool = True,
                      int_y_ticks: bool = True, int_z_ticks: bool = False, dpi: int = 200):
    """A 3-d bar chart of ``array`` ``[T, N]``: one row of bars per neuron n (at x = n, coloured by n), the bar
    at y = t of height ``array[t, n]`` (z). Returns ``(fig, ax)`` with ``ax`` a 3-d axes."""
    array = _as_array(array, "array", 2)
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig = plt.figure(dpi=dpi)
    ax = fig.add_subplot(111, projection="3d")
    colors = plt.get_cmap("tab10")
    steps = np.arange(array.shape[0])
    for n in range(array.shape[1]):
        ax.bar(steps, array[:, n], n, zdir="x", color=colors(n % 10), alpha=0.8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_zlabel(zlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=int_x_ticks))
    ax.yaxis.set_major_locator(MaxNLocator(integer=int_y_ticks))
    ax.zaxis.set_major_locator(MaxNLocator(integer=int_z_ticks))
    return fig, ax


def plot_training_curves(records: Sequence[dict] | str | os.PathLike, title: str = "training curves",
                         figsize: tuple[float, float] = (12, 5), dpi: int = 150):
    """Loss and accuracy per epoch, train and test, from ``metrics.jsonl`` records (or its path).
    Returns ``(fig, (ax_loss, ax_acc))``."""
    if isinstance(records, (str, os.PathLike)):
        from .training import read_metrics

        records = read_metrics(records)
    if not records:
        raise ValueError("records is empty: no epoch has been recorded yet")
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=figsize, dpi=dpi)
    marker = "o" if len(epochs) < 30 else None
    for ax, key, label in ((ax_loss, "loss", "MSE loss"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "-"), ("test", "--")):
            values = [r[f"{split}_{key}"] for r in records]
            ax.plot(epochs, values, style, marker=marker, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)  # a one-epoch run would otherwise get ±0.05 ticks
        _integer_ticks(ax.xaxis, True)
    best = max(records, key=lambda r: r["test_acc"])
    ax_acc.annotate(f"best test {best['test_acc']:.2%}\n(epoch {best['epoch']})",
                    xy=(best["epoch"], best["test_acc"]), xytext=(0.55, 0.15), textcoords="axes fraction",
                    arrowprops={"arrowstyle": "->"})
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    return fig, (ax_loss, ax_acc)


def save_run_plots(out_dir: str | os.PathLike, v_t_array, s_t_array, label: int | None = None,
                   v_threshold: float = 1.0, metrics_path: str | os.PathLike | None = None) -> list[Path]:
    """The three pictures a training example leaves behind: ``spikes.png`` (output raster and firing
    rates), ``membrane.png`` (output membrane heat map) for one test image, and ``curves.png``."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    about = "" if label is None else f" (test image 0, label {label})"
    written = []
    fig, _ = plot_1d_spikes(s_t_array, f"output spikes{about}", "time step t", "output neuron (class)",
                            figsize=(10, 5), dpi=120)
    written.append(_save(fig, out_dir / "spikes.png", plt))
    fig, ax = plot_2d_heatmap(v_t_array, f"output membrane potential V[t] after reset{about}", "time step t",
                              "output neuron (class)", colorbar_y_label=f"V[t] (threshold {v_threshold:g})",
                              figsize=(10, 5), dpi=120)
    # the membrane right after a spike is the reset value, so mark the spikes: a neuron that fires every
    # step would otherwise look silent
    t_idx, n_idx = np.nonzero(_as_array(s_t_array, "s_t_array", 2))
    if len(t_idx):
        ax.scatter(t_idx, n_idx, marker="o", s=12, facecolors="none", edgecolors="red", linewidths=0.8,
                   label="spike (V reset)")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    written.append(_save(fig, out_dir / "membrane.png", plt))
    metrics_path = Path(metrics_path) if metrics_path is not None else out_dir / "metrics.jsonl"
    if metrics_path.is_file():
        from .training import read_metrics

        records = read_metrics(metrics_path)
        if records:
            fig, _ = plot_training_curves(records, title=f"training curves ({out_dir.name})")
            written.append(_save(fig, out_dir / "curves.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


# -------------------------------------------------------------------------------- monitor-based plots
def plot_firing_rates(rates: dict, title: str = "firing rate per layer", ax=None, xlabel: str = "spikes / step",
                      missing_label: str = "n/a", figsize: tuple[float, float] | None = None, dpi: int = 120):
    """Horizontal bars of ``rates`` (``{layer name: firing rate}``, e.g. :func:`spikeforge.monitor.firing_rates`
    or ``EnergyReport.input_rates``), one row per layer in the dict's order, each labelled with its value.
    A ``None`` or NaN rate is drawn as an empty row labelled ``missing_label``. Draws into ``ax`` when given.
    Returns ``(fig, ax)``."""
    if not isinstance(rates, dict) or not rates:
        raise ValueError("rates must be a non-empty dict {layer name: firing rate}")
    names = [str(k) for k in rates]
    values = []
    for name, value in rates.items():
        value = float("nan") if value is None else float(value)
        if value == value and value < 0:
            raise ValueError(f"firing rate of {name!r} is negative ({value})")
        values.append(value)
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize or (8, max(2.5, 0.4 * len(names) + 1.2)), dpi=dpi)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names)
        ax.invert_yaxis()
    else:
        fig = ax.figure
    finite = [v for v in values if v == v]
    top = max(finite + [0.0])
    ax.barh(range(len(names)), [v if v == v else 0.0 for v in values], color="tab:blue", height=0.7)
    for i, v in enumerate(values):
        ax.text(v if v == v else 0.0, i, f" {v:.3f}" if v == v else f" {missing_label}", va="center", fontsize=8,
                color="black" if v == v else "gray")
    ax.set_xlim(0, max(top * 1.35, 0.05))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return fig, ax


def plot_layer_raster(monitor, layer_name: str, sample: int = 0, step_mode: str | None = None,
                      max_neurons: int | None = None, title: str | None = None,
                      figsize: tuple[float, float] = (10, 6), dpi: int = 120):
    """Spike raster of one monitored layer for one sample (from a :class:`spikeforge.monitor.OutputMonitor`):
    a mark per spike (time step, neuron), and below it the layer's population firing rate per step.
    ``max_neurons`` keeps the first neurons only (flattened order). Returns ``(fig, (ax_raster, ax_rate))``."""
    from .monitor import spike_raster

    raster = _as_array(spike_raster(monitor, layer_name, sample, step_mode), "raster", 2)
    if not np.isin(raster, (0, 1)).all():
        raise ValueError(f"the records of {layer_name!r} are not spikes (values other than 0 and 1): "
                         "plot them with plot_2d_heatmap instead")
    total_neurons = raster.shape[1]
    if max_neurons is not None:
        if max_neurons < 1:
            raise ValueError(f"max_neurons must be >= 1, got {max_neurons}")
        raster = raster[:, :max_neurons]
    plt = _pyplot()
    T, M = raster.shape
    fig, (ax, ax_rate) = plt.subplots(2, 1, figsize=figsize, dpi=dpi, sharex=True,
                                      gridspec_kw={"height_ratios": [4, 1]})
    t_idx, n_idx = np.nonzero(raster)
    ax.scatter(t_idx, n_idx, marker="|", s=max(4.0, min(200.0, 3000.0 / max(M, 1))), linewidths=1.0,
               color="black")
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(M - 0.5, -0.5)
    shown = f"{M} of {total_neurons}" if M < total_neurons else f"{M}"
    ax.set_ylabel(f"neuron ({shown})")
    about = " of the neurons shown" if M < total_neurons else ""
    ax.set_title(title or f"spikes of {layer_name}, sample {sample} (firing rate {raster.mean():.3f}{about})")
    _integer_ticks(ax.yaxis, True)
    ax_rate.plot(np.arange(T), raster.mean(axis=1), marker="." if T <= 64 else None, color="tab:blue")
    ax_rate.set_ylim(0, max(0.05, float(raster.mean(axis=1).max()) * 1.2))
    ax_rate.set_ylabel("rate")
    ax_rate.set_xlabel("time step t")
    _integer_ticks(ax_rate.xaxis, True)
    return fig, (ax, ax_rate)


__all__ += ["plot_firing_rates", "plot_layer_raster"]
