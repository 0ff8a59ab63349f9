"""Accuracy of a converted SNN at several simulation lengths, from one simulation pass."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from .. import functional as SF
from .converter import _progress
from .result import ConvertedSNN

__all__ = ["evaluate", "plot_accuracy_vs_T"]


def _check_steps(T_list) -> list[int]:
    if isinstance(T_list, int):
        T_list = [T_list]
    try:
        steps = sorted({int(t) for t in T_list})
    except (TypeError, ValueError):
        raise ValueError(f"T_list must be positive ints, got {T_list!r}") from None
    if not steps or steps[0] < 1 or any(int(t) != t for t in T_list):
        raise ValueError(f"T_list must be positive ints, got {T_list!r}")
    return steps


def _split_batch(batch):
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in ("input", "inputs", "image", "images", "x") if k in batch), None)
        y = next((batch[k] for k in ("target", "targets", "label", "labels", "y") if k in batch), None)
        if x is not None and y is not None:
            return x, y
    raise TypeError("loader batches must be (input, target) pairs or dicts with input and target keys")


@torch.no_grad()
def evaluate(snn: nn.Module, loader: Iterable, T_list: Sequence[int] | int, device: torch.device | str | None = None,
             max_merged_batch: int | None = None, progress: bool = False) -> dict[int, float]:
    r"""Top-1 accuracy (in %) of ``snn`` after each number of steps in ``T_list``, simulating ``max(T_list)`` once.

    Each input is presented unchanged at every step (direct coding); the prediction after ``T`` steps is
    :math:`\arg\max_c \sum_{t \le T} y_t[c]`. A :class:`ConvertedSNN` runs in multi-step chunks of at most
    ``max_merged_batch`` samples-times-steps; the neuron-independent first layers are computed once per batch
    (:meth:`ConvertedSNN.static_split`: before, they ran again in every chunk, one step per chunk on the CPU);
    any other module is stepped one call per time step. State is reset
    (``functional.reset_net``) before every batch.

    ``max_merged_batch=None`` picks one step per call on CPU (merging steps into one big convolution batch
    measured no faster there and spills the caches) and 4096 on GPU, where large batches pay.
    """
    steps = _check_steps(T_list)
    if max_merged_batch is not None and (not isinstance(max_merged_batch, int) or max_merged_batch < 1):
        raise ValueError(f"max_merged_batch must be None or a positive int, got {max_merged_batch!r}")
    if device is None:
        first = next(iter([*snn.parameters(), *snn.buffers()]), None)
        device = first.device if first is not None else torch.device("cpu")
    was_training = snn.training
    snn.eval()
    correct = dict.fromkeys(steps, 0)
    total = 0
    t_max = steps[-1]
    for batch in _progress(loader, progress, "ann2snn evaluate"):
        x, y = _split_batch(batch)
        x, y = x.to(device), torch.as_tensor(y).to(device)
        SF.reset_net(snn)
        running = None
        done = 0
        merged = max_merged_batch or (4096 if x.device.type == "cuda" else x.shape[0])
        chunk = max(1, merged // max(1, x.shape[0]))
        split = isinstance(snn, ConvertedSNN) and snn.static_split() is not None
        prefix = snn.run_prefix(x) if split else None   # the neuron-independent layers, once per batch
        while done < t_max:
            n = min(chunk, t_max - done)
            if split:
                out = snn.run_suffix(prefix, n)
            elif isinstance(snn, ConvertedSNN):
                out = snn.run_static(x, n)
            else:
                out = torch.stack([snn(x) for _ in range(n)])
            cumulative = out.flatten(2).cumsum(0)
            if running is not None:
                cumulative += running
            for t in steps:
                if done < t <= done + n:
                    correct[t] += (cumulative[t - done - 1].argmax(1) == y).sum().item()
            running = cumulative[-1]
            done += n
        total += y.numel()
    snn.train(was_training)
    if total == 0:
        raise ValueError("loader yielded no batch")
    return {t: 100.0 * correct[t] / total for t in steps}


def plot_accuracy_vs_T(results: Mapping, path: str | os.PathLike, ann_accuracy: float | None = None,
                       title: str = "ANN -> SNN conversion") -> str:
    """Write a PNG of accuracy against T.

    ``results`` is ``{T: accuracy}`` or ``{label: {T: accuracy}}`` (e.g. one curve per mode); ``ann_accuracy``
    draws the ANN's accuracy as a dashed line. Returns the path written. Needs matplotlib
    (``pip install spikeforge[viz]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plot_accuracy_vs_T needs matplotlib: pip install spikeforge[viz]") from error
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping {T: acc} or {label: {T: acc}}")
    curves = results if all(isinstance(v, Mapping) for v in results.values()) else {"SNN": results}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, curve in curves.items():
        ts = sorted(curve)
        ax.plot(ts, [curve[t] for t in ts], marker="o", label=str(label))
    if ann_accuracy is not None:
        ax.axhline(ann_accuracy, color="k", linestyle="--", linewidth=1, label=f"ANN {ann_accuracy:.2f}%")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
