"""Monitors: record what layers output, their inputs, an attribute such as the membrane ``v``, or the gradients
flowing through them, with hooks (SpikingJelly's ``activation_based.monitor``, same names and behaviour).

    mon = monitor.OutputMonitor(net, neuron.LIFNode)
    net(x); mon.records          # one entry per call of each monitored layer, in call order
    mon[0]                       # the first record (integer index)
    mon['layer.2']               # the records of one layer (by name)
    rates = monitor.firing_rates(mon)
    mon.remove_hooks()

As in SpikingJelly, records keep the autograd graph: a firing-rate regulariser built from ``mon.records``
back-propagates into the network. Pass ``detach=True`` to record detached tensors instead (cheaper when the
records are only looked at). ``instance=None`` monitors the modules of the same type as ``net`` (SpikingJelly's
default); a monitor that matches no module warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn as nn


def _identity(x):
    return x


def _unpack(x):
    """A one-element tuple (a module's inputs, a gradient tuple) as its element, as SpikingJelly records it."""
    return x[0] if isinstance(x, tuple) and len(x) == 1 else x


def _detached(x):
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, tuple | list):
        return type(x)(_detached(v) for v in x)
    return x


class BaseMonitor:
    """Records and hooks shared by every monitor: ``records`` (all, in call order), ``monitored_layers`` (names),
    ``name_records_index`` (name → positions in ``records``); ``monitor[i]`` is record i, ``monitor[name]`` the
    records of one layer; ``enable`` / ``disable``, ``clear_recorded_data``, ``remove_hooks``, ``close`` and use
    as a context manager."""

    def __init__(self):
        self.hooks: list = []
        self.monitored_layers: list[str] = []
        self.records: list = []
        self.name_records_index: dict[str, list[int]] = {}
        self._enable = True

    def _monitor_modules(self, net: nn.Module, instance) -> list[tuple[str, nn.Module]]:
        if instance is None:
            instance = type(net)
        modules = [(name, m) for name, m in net.named_modules() if isinstance(m, instance)]
        if not modules:
            kinds = instance if isinstance(instance, tuple) else (instance,)
            names = ", ".join(getattr(i, "__name__", str(i)) for i in kinds)
            warnings.warn(f"{type(self).__name__}: net has no module of type {names} (instance={names}); "
                          "nothing will be recorded", stacklevel=3)
        self.monitored_layers.extend(name for name, _ in modules)
        self.name_records_index.update((name, []) for name, _ in modules)
        return modules

    def _record(self, name: str, value) -> None:
        self.name_records_index[name].append(len(self.records))
        self.records.append(value)

    def __getitem__(self, i):
        if isinstance(i, int):
            return self.records[i]
        if isinstance(i, str):
            if i not in self.name_records_index:
                raise KeyError(f"{i!r} is not monitored; monitored layers: {self.monitored_layers}")
            return [self.records[j] for j in self.name_records_index[i]]
        raise ValueError(f"index a monitor with an int (a record) or a str (a layer name), got {i!r}")

    def __len__(self) -> int:
        return len(self.records)

    def clear_recorded_data(self) -> None:
        self.records.clear()
        for positions in self.name_records_index.values():
            positions.clear()

    def enable(self) -> None:
        self._enable = True

    def disable(self) -> None:
        self._enable = False

    def is_enable(self) -> bool:
        return self._enable

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()

    def close(self) -> None:
        """Stop recording and remove the hooks (the records stay)."""
        self.disable()
        self.remove_hooks()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class OutputMonitor(BaseMonitor):
    """Record ``function_on_output(output)`` of every module of type ``instance`` after its forward.

    The output keeps its graph unless ``detach=True`` (detached before ``function_on_output``).
    """

    def __init__(self, net: nn.Module, instance=None, function_on_output: Callable = _identity,
                 detach: bool = False):
        super().__init__()
        self.function_on_output = function_on_output
        self.detach = bool(detach)
        for name, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_forward_hook(self.create_hook(name)))

    def create_hook(self, name: str):
        def hook(module, inputs, output):
            if self.is_enable():
                value = _unpack(output)
                self._record(name, self.function_on_output(_detached(value) if self.detach else value))

        return hook


class InputMonitor(BaseMonitor):
    """Record ``function_on_input(input)`` of every module of type ``instance`` before its forward (a module
    with one input records that tensor, otherwise the tuple of inputs)."""

    def __init__(self, net: nn.Module, instance=None, function_on_input: Callable = _identity,
                 detach: bool = False):
        super().__init__()
        self.function_on_input = function_on_input
        self.detach = bool(detach)
        for name, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_forward_pre_hook(self.create_hook(name)))

    def create_hook(self, name: str):
        def hook(module, inputs):
            if self.is_enable():
                value = _unpack(inputs)
                self._record(name, self.function_on_input(_detached(value) if self.detach else value))

        return hook


class AttributeMonitor(BaseMonitor):
    """Record ``function_on_attribute(module.<attribute_name>)`` (e.g. ``'v'`` or ``'v_seq'``) after each forward,
    or before it with ``pre_forward=True``. As in SpikingJelly the attribute itself is recorded (graph kept, no
    copy); ``detach=True`` records a detached clone."""

    def __init__(self, attribute_name: str, pre_forward: bool, net: nn.Module, instance=None,
                 function_on_attribute: Callable = _identity, detach: bool = False):
        super().__init__()
        self.attribute_name = attribute_name
        self.function_on_attribute = function_on_attribute
        self.detach = bool(detach)
        for name, module in self._monitor_modules(net, instance):
            if pre_forward:
                self.hooks.append(module.register_forward_pre_hook(self.create_hook(name)))
            else:
                self.hooks.append(module.register_forward_hook(self.create_hook(name)))

    def create_hook(self, name: str):
        def hook(module, *args):
            if not self.is_enable():
                return
            if not hasattr(module, self.attribute_name):
                raise AttributeError(f"{name} ({type(module).__name__}) has no attribute {self.attribute_name!r}")
            value = getattr(module, self.attribute_name)
            if self.detach and isinstance(value, torch.Tensor):
                value = value.detach().clone()
            self._record(name, self.function_on_attribute(value))

        return hook


class GradInputMonitor(BaseMonitor):
    """Record ``function_on_grad_input(grad_input)`` of every module of type ``instance`` during backward: the
    gradient of the loss with respect to the module's input (a full backward hook; a one-input module records
    the tensor, otherwise the tuple). Records are made in backward order (the last layer first)."""

    def __init__(self, net: nn.Module, instance=None, function_on_grad_input: Callable = _identity):
        super().__init__()
        self.function_on_grad_input = function_on_grad_input
        for name, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_full_backward_hook(self.create_hook(name)))

    def create_hook(self, name: str):
        def hook(module, grad_input, grad_output):
            if self.is_enable():
                self._record(name, self.function_on_grad_input(_unpack(grad_input)))

        return hook


class GradOutputMonitor(BaseMonitor):
    """Record ``function_on_grad_output(grad_output)`` of every module of type ``instance`` during backward: the
    gradient of the loss with respect to the module's output."""

    def __init__(self, net: nn.Module, instance=None, function_on_grad_output: Callable = _identity):
        super().__init__()
        self.function_on_grad_output = function_on_grad_output
        for name, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_full_backward_hook(self.create_hook(name)))

    def create_hook(self, name: str):
        def hook(module, grad_input, grad_output):
            if self.is_enable():
                self._record(name, self.function_on_grad_output(_unpack(grad_output)))

        return hook


def firing_rates(output_monitor: OutputMonitor) -> dict[str, float]:
    """Mean firing rate of each monitored layer over all its records (spikes are 0/1)."""
    rates = {}
    for name in output_monitor.monitored_layers:
        records = output_monitor[name]
        if records:
            total = sum(float(r.detach().float().sum()) for r in records)
            count = sum(r.numel() for r in records)
            rates[name] = total / count
    return rates


__all__ = ["BaseMonitor", "OutputMonitor", "InputMonitor", "AttributeMonitor", "GradInputMonitor",
           "GradOutputMonitor", "firing_rates"]


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
            rates[name] = sum(float(r.detach().float().sum()) for r in records) / sum(r.numel() for r in records)
    return rates


__all__ += ["layer_records_as_sequence", "spike_raster", "layer_firing_rates"]
