"""Monitors: record what layers output, or a state attribute such as the membrane ``v``, with forward hooks.

    mon = monitor.OutputMonitor(net, neuron.LIFNode)
    net(x); mon.records          # one tensor per call of each monitored layer, in call order
    mon['layer.2']               # the records of one layer
    rates = monitor.firing_rates(mon)
    mon.remove_hooks()
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


def _identity(x):
    return x


class BaseMonitor:
    def __init__(self):
        self.hooks: list = []
        self.monitored_layers: list[str] = []
        self.records: list = []
        self.name_records_index: dict[str, list[int]] = {}
        self._enabled = True

    def _select(self, net: nn.Module, instance) -> list[tuple[str, nn.Module]]:
        if instance is None:
            instance = (nn.Module,)
        elif not isinstance(instance, tuple):
            instance = (instance,)
        selected = [(name, m) for name, m in net.named_modules() if isinstance(m, instance)]
        if not selected:
            names = ", ".join(getattr(i, "__name__", str(i)) for i in instance)
            raise ValueError(f"net has no module of type {names} to monitor (instance={names})")
        return selected

    def _record(self, name: str, value) -> None:
        if not self._enabled:
            return
        self.name_records_index.setdefault(name, []).append(len(self.records))
        self.records.append(value)

    def __getitem__(self, name: str) -> list:
        if name not in self.name_records_index and name not in self.monitored_layers:
            raise KeyError(f"{name!r} is not monitored; monitored layers: {self.monitored_layers}")
        return [self.records[i] for i in self.name_records_index.get(name, [])]

    def __len__(self) -> int:
        return len(self.records)

    def clear_recorded_data(self) -> None:
        self.records.clear()
        self.name_records_index.clear()

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def is_enable(self) -> bool:
        return self._enabled

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()

    def __del__(self):
        try:
            self.remove_hooks()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class OutputMonitor(BaseMonitor):
    """Record ``function_on_output(output)`` of every module of type ``instance`` (detached by default)."""

    def __init__(self, net: nn.Module, instance=None, function_on_output: Callable = _identity, detach: bool = True):
        super().__init__()
        self.function_on_output = function_on_output
        for name, module in self._select(net, instance):
            self.monitored_layers.append(name)
            self.hooks.append(module.register_forward_hook(self._hook(name, detach)))

    def _hook(self, name: str, detach: bool):
        def hook(module, inputs, output):
            value = output.detach() if detach and isinstance(output, torch.Tensor) else output
            self._record(name, self.function_on_output(value))

        return hook


class InputMonitor(BaseMonitor):
    """Record ``function_on_input(input)`` of every module of type ``instance``."""

    def __init__(self, net: nn.Module, instance=None, function_on_input: Callable = _identity):
        super().__init__()
        self.function_on_input = function_on_input
        for name, module in self._select(net, instance):
            self.monitored_layers.append(name)
            self.hooks.append(module.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, inputs):
            x = inputs[0] if len(inputs) == 1 else inputs
            self._record(name, self.function_on_input(x.detach() if isinstance(x, torch.Tensor) else x))

        return hook


class AttributeMonitor(BaseMonitor):
    """Record ``module.<attribute_name>`` (e.g. ``'v'`` or ``'v_seq'``) after (or before) each forward."""

    def __init__(self, attribute_name: str, pre_forward: bool, net: nn.Module, instance=None,
                 function_on_attribute: Callable = _identity):
        super().__init__()
        self.attribute_name = attribute_name
        self.function_on_attribute = function_on_attribute
        for name, module in self._select(net, instance):
            self.monitored_layers.append(name)
            if pre_forward:
                self.hooks.append(module.register_forward_pre_hook(self._hook(name)))
            else:
                self.hooks.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, *args):
            if not hasattr(module, self.attribute_name):
                raise AttributeError(f"{name} ({type(module).__name__}) has no attribute {self.attribute_name!r}")
            value = getattr(module, self.attribute_name)
            if isinstance(value, torch.Tensor):
                value = value.detach().clone()
            self._record(name, self.function_on_attribute(value))

        return hook


def firing_rates(output_monitor: OutputMonitor) -> dict[str, float]:
    """Mean firing rate of each monitored layer over all its records (spikes are 0/1)."""
    rates = {}
    for name in output_monitor.monitored_layers:
        records = output_monitor[name]
        if records:
            total = sum(float(r.float().sum()) for r in records)
            count = sum(r.numel() for r in records)
            rates[name] = total / count
    return rates


__all__ = ["BaseMonitor", "OutputMonitor", "InputMonitor", "AttributeMonitor", "firing_rates"]


# ------------------------------------------------------------------------------ per-layer views of the records
def layer_records_as_sequence(monitor: BaseMonitor, layer_name: str, step_mode: str | None = None,
                              record: int = -1) -> torch.Tensor:
    """The records of one layer as one time-first sequence ``[T, N, ...]``.

    ``step_mode='m'``: each record is a whole sequence ``[T, N, ...]``; record number ``record`` is returned
    (default: the last one). ``step_mode='s'``: each record is one step ``[N, ...]``; all records are stacked
    along a new time axis. ``None`` guesses: one record with at least 3 dimensions is a multi-step record,
    anything else is single-step.
    """
    records = monitor[layer_name]
    if not records:
        raise ValueError(f"layer {layer_name!r} has no records yet: run the network with the monitor attached")
    if not all(isinstance(r, torch.Tensor) for r in records):
        raise TypeError(f"the records of {layer_name!r} are not tensors (a function_on_output changed them?)")
    if step_mode is None:
        step_mode = "m" if len(records) == 1 and records[0].dim() >= 3 else "s"
    if step_mode == "m":
        try:
            seq = records[record]
        except IndexError:
            raise IndexError(f"layer {layer_name!r} has {len(records)} record(s), no record {record}") from None
        if seq.dim() < 2:
            raise ValueError(f"a multi-step record is [T, N, ...], got shape {tuple(seq.shape)}")
        return seq
    if step_mode != "s":
        raise ValueError(f"step_mode must be 's', 'm' or None, got {step_mode!r}")
    shapes = {tuple(r.shape) for r in records}
    if len(shapes) != 1:
        raise ValueError(f"the single-step records of {layer_name!r} have different shapes {sorted(shapes)}; "
                         "clear the monitor between sequences (monitor.clear_recorded_data())")
    return torch.stack(records)


def spike_raster(monitor: BaseMonitor, layer_name: str, sample: int = 0, step_mode: str | None = None,
                 record: int = -1) -> torch.Tensor:
    """One sample's recorded output of one layer as a ``[T, M]`` float tensor (M = its neurons, flattened).

    See :func:`layer_records_as_sequence` for ``step_mode`` and ``record``.
    """
    seq = layer_records_as_sequence(monitor, layer_name, step_mode, record)
    if seq.dim() < 2:
        raise ValueError(f"records of {layer_name!r} have no batch dimension (shape {tuple(seq.shape)})")
    if not -seq.shape[1] <= sample < seq.shape[1]:
        raise IndexError(f"sample {sample} is out of range: the records of {layer_name!r} hold {seq.shape[1]}")
    return seq[:, sample].reshape(seq.shape[0], -1).float()


def layer_firing_rates(monitor: BaseMonitor) -> dict[str, float]:
    """Mean of each monitored layer's records that hold only 0 and 1 (its firing rate); layers whose records
    hold other values (graded outputs) are left out."""
    rates = {}
    for name in monitor.monitored_layers:
        records = [r for r in monitor[name] if isinstance(r, torch.Tensor)]
        if records and all(bool(((r == 0) | (r == 1)).all()) for r in records):
            rates[name] = sum(float(r.float().sum()) for r in records) / sum(r.numel() for r in records)
    return rates


__all__ += ["layer_records_as_sequence", "spike_raster", "layer_firing_rates"]
