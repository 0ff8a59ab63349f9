"""What a training example leaves behind after its last epoch: the output layer's traces and the pictures.

* :func:`record_output` — membrane ``[T, C]`` and spikes ``[T, C]`` of one output neuron layer for one input;
* :func:`save_output_arrays` — them as ``v_t_array.npy`` / ``s_t_array.npy``;
* :func:`write_run_plots` — ``spikes.png``, ``membrane.png`` and ``curves.png`` (from ``metrics.jsonl``), or a
  note and no files when matplotlib is missing;
* :func:`save_feature_map_steps` — one tiled picture of a ``[T, C, H, W]`` spike map per time step.

Under torchrun only rank 0 should call the writers (``trainer.is_main``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import functional

__all__ = ["record_output", "save_output_arrays", "write_run_plots", "save_feature_map_steps", "RUN_OUTPUTS"]

# the files the writers below put into a run folder (the engine removes a replaced run's copies of them)
RUN_OUTPUTS = ("v_t_array.npy", "s_t_array.npy", "spikes.png", "membrane.png", "curves.png")


@torch.no_grad()
def record_output(net: nn.Module, neuron: nn.Module, run: Callable[[], torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """``run()`` (the net on one input, returning output spikes ``[T, 1, C]``) in eval mode with ``neuron``
    storing its membrane sequence; returns ``(v_t_array, s_t_array)`` as float32 ``[T, C]`` arrays. The net is
    reset afterwards."""
    net.eval()
    neuron.store_v_seq = True
    try:
        spikes = run()[:, 0]
        v_seq = neuron.v_seq[:, 0]
    finally:
        neuron.store_v_seq = False
        functional.reset_net(net)
    return v_seq.float().cpu().numpy(), spikes.float().cpu().numpy()


def save_output_arrays(out_dir: str | os.PathLike, v_t_array: np.ndarray, s_t_array: np.ndarray) -> list[Path]:
    """``v_t_array.npy`` and ``s_t_array.npy`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "v_t_array.npy", out_dir / "s_t_array.npy"]
    np.save(paths[0], v_t_array)
    np.save(paths[1], s_t_array)
    return paths


def write_run_plots(out_dir: str | os.PathLike, v_t_array, s_t_array, label: int, v_threshold: float,
                    log: Callable[[str], None] = print) -> list[Path]:
    """spikes.png, membrane.png and curves.png; an empty list (and a note) when matplotlib is missing."""
    try:
        from spikeforge import visualizing

        return visualizing.save_run_plots(out_dir, v_t_array, s_t_array, label=label, v_threshold=v_threshold)
    except ImportError as e:
        log(f"plots skipped: {e}")
        return []


@torch.no_grad()
def save_feature_map_steps(spikes: torch.Tensor, save_dir: str | os.PathLike, title: str,
                           prefix: str = "s") -> list[Path]:
    """``{prefix}_{t}.png`` for every step of a ``[T, C, H, W]`` map: the C channels tiled (8 per row when C is
    a multiple of 8). ``title`` may contain ``{t}`` and ``{channels}``."""
    from spikeforge import visualizing

    plt = visualizing._pyplot()
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    channels = spikes.shape[1]
    ncols = 8 if channels % 8 == 0 else 1
    written = []
    for t in range(spikes.shape[0]):
        fig, _ = visualizing.plot_2d_feature_map(spikes[t], channels // ncols, ncols, 2,
                                                 title.format(t=t, channels=channels))
        path = save_dir / f"{prefix}_{t}.png"
        fig.savefig(path, pad_inches=0.02, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
