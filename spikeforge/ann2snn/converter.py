"""ANN -> SNN conversion by rate coding, as a ``torch.fx`` graph pass: :class:`Converter` runs the steps.

Pipeline (Diehl et al. 2015; Rueckauer et al. 2017):

1. trace the ANN with ``torch.fx`` (:mod:`.tracing`) and check every node against the list of operations that keep
   their meaning when applied to time-averaged signals (:mod:`.ops`: linear/affine maps, pooling, additions,
   concatenation, reshapes); anything else raises :class:`UnsupportedNodeError` naming the node and where it sits;
2. fold each BatchNorm into the Conv/Linear before it (:mod:`.fold`), ``W' = W g/sqrt(var+eps)``,
   ``b' = (b - mean) g/sqrt(var+eps) + beta`` (a BatchNorm with nothing to fold into becomes a per-channel affine);
3. calibrate (:mod:`.observe`): run the dataloader once and record, after every ReLU-like activation, the
   statistic chosen by ``mode`` (max, a percentile, or a fraction of the max), averaged over batches with
   ``momentum``;
4. replace every activation by ``VoltageScaler(1/lambda) -> IF (soft reset, threshold 1) -> VoltageScaler(lambda)``
   (:class:`~spikeforge.ann2snn.modules.IFActivation`); clipped activations (ReLU6, Hardtanh(0, a),
   clamp(0, a)) use ``min(lambda, a)``; max-pooling becomes :class:`~spikeforge.ann2snn.modules.SpikingMaxPool`;
   Dropout is removed. The result is a :class:`~spikeforge.ann2snn.result.ConvertedSNN`.

The scale is kept in explicit scalers rather than folded into the weights so that every edge of the graph
carries ANN units; that is what lets residual additions and concatenations of branches with different
scales work unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import check_device, check_float
from ..neuron import IFNode
from .fold import fold_batchnorm
from .modules import ConversionIFNode, IFActivation, MembraneReadout, SpikingMaxPool
from .observe import ActivationObserver, _check_momentum, parse_mode
from .ops import _classify, _pool_module_from_call
from .result import ConvertedSNN
from .tracing import (
    UnsupportedNodeError,  # noqa: F401  (importable from here before the split)
    _block_name,
    _call_sites,
    _unique_name,
    trace,
)

__all__ = ["Converter"]


class Converter:
    """Convert a trained ANN into a rate-coded SNN of soft-reset IF neurons.

    Tutorial call style: ``snn = Converter(mode='max', dataloader=train_loader)(ann)``; ``.convert(ann)`` is
    the same. The ANN is deep-copied, never modified.

    Args:
        dataloader: calibration data (batches as tensors, ``(input, target)`` pairs or dicts with 'input').
        mode: ``'max'`` (Diehl 2015), a percentile string such as ``'99.9%'`` (robust normalisation,
            Rueckauer 2017) or a float in (0, 1]: that fraction of the max. lambda is the statistic of each
            activation's *output* on the calibration data.
        fuse_flag: fold BatchNorm into the preceding Conv/Linear (otherwise BN stays as a per-channel affine).
        momentum: per-batch statistics are averaged as ``s = (1-m) s + m s_batch`` (SpingJelly's default 0.1);
            ``None`` uses the whole-dataset max (or the mean of per-batch percentiles).
        channel_wise: one lambda per channel (dim 1) instead of one per layer.
        half_threshold: start every membrane at threshold/2 (rounding instead of flooring the spike count).
        signed_spikes: neurons may emit a -1 spike to take back an earlier spike when their accumulated input
            falls (see :class:`~spikeforge.ann2snn.modules.ConversionIFNode`).
        readout: ``'spikes'`` keeps IF neurons on the output layer (spike counts); ``'membrane'`` replaces the
            activations that feed the output directly with :class:`MembraneReadout` (count + residual membrane,
            no quantisation, no ties).
        neuron: ``'fused'`` (default): :class:`ConversionIFNode` with threshold lambda emitting spikes of
            amplitude lambda, one pass per step; ``'core'``: ``VoltageScaler(1/lambda) ->
            spikeforge.neuron.IFNode(v_reset=None) -> VoltageScaler(lambda)``, SpikingJelly's layout. Both
            compute the same spikes (up to float rounding at exact ties).
        max_batches: calibrate on at most this many batches.
        device: where to calibrate and put the result (default: the ANN's device).
        progress: show a tqdm bar during calibration.

    Without the low-latency options the neurons are plain soft-reset IF neurons (``v_reset=None``).
    """

    def __init__(self, dataloader: Iterable | None = None, mode="max", fuse_flag: bool = True,
                 momentum: float | None = 0.1, channel_wise: bool = False, half_threshold: bool = False,
                 signed_spikes: bool = False, readout: str = "spikes", neuron: str = "fused",
                 max_batches: int | None = None,
                 device: torch.device | str | None = None, progress: bool = True, eps: float = 1e-8):
        self.kind, self.value = parse_mode(mode)
        if dataloader is None:
            raise ValueError("dataloader is required: conversion calibrates thresholds on data")
        _check_momentum(momentum)
        if readout not in ("spikes", "membrane"):
            raise ValueError(f"readout must be 'spikes' or 'membrane', got {readout!r}")
        if neuron not in ("fused", "core"):
            raise ValueError(f"neuron must be 'fused' or 'core', got {neuron!r}")
        if neuron == "core" and (half_threshold or signed_spikes):
            raise ValueError("neuron='core' (spikeforge.neuron.IFNode) has no half_threshold/signed_spikes; "
                             "use neuron='fused'")
        if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
            raise ValueError(f"max_batches must be None or a positive int, got {max_batches!r}")
        if not hasattr(dataloader, "__iter__"):
            raise TypeError(f"dataloader must be an iterable of batches (a DataLoader, a list of tensors ...), got "
                            f"{type(dataloader).__name__}")
        check_float(eps, "eps", positive=True)
        if device is not None:
            device = check_device(device, "device")
        self.dataloader = dataloader
        self.mode = mode
        self.fuse_flag = bool(fuse_flag)
        self.momentum = momentum
        self.channel_wise = bool(channel_wise)
        self.half_threshold = bool(half_threshold)
        self.signed_spikes = bool(signed_spikes)
        self.readout = readout
        self.neuron = neuron
        self.max_batches = max_batches
        self.device = device
        self.progress = progress
        self.eps = float(eps)

    def __call__(self, ann: nn.Module) -> ConvertedSNN:
        return self.convert(ann)

    def convert(self, ann: nn.Module) -> ConvertedSNN:
        if not isinstance(ann, nn.Module):
            raise TypeError(f"ann must be a torch.nn.Module, got {type(ann).__name__}")
        ann = copy.deepcopy(ann).eval()
        device = self.device
        if device is None:
            first = next(ann.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        ann.to(device)
        gm = trace(ann)
        modules = dict(gm.named_modules())
        kinds = {node: _classify(node, modules) for node in gm.graph.nodes}
        gm = fold_batchnorm(gm, fuse=self.fuse_flag)
        _remove_dropout(gm, kinds)
        activations = [n for n in gm.graph.nodes if kinds.get(n, ("pass",))[0] == "act"]
        if not activations:
            raise ValueError("the ANN has no ReLU-like activation to convert into spiking neurons")
        observers = self._insert_observers(gm, activations)
        self._calibrate(gm, device)
        self._replace(gm, activations, observers, kinds)
        return ConvertedSNN(gm).to(device)

    # -- steps ---------------------------------------------------------------------------------
    def _insert_observers(self, gm: fx.GraphModule, activations: list[fx.Node]
                          ) -> dict[fx.Node, tuple[ActivationObserver, fx.Node]]:
        observers = {}
        for node in activations:
            observer = ActivationObserver(self.mode, self.momentum, self.channel_wise)
            name = _unique_name(gm, f"observer_{node.name}")
            gm.add_submodule(name, observer)
            with gm.graph.inserting_after(node):
                obs_node = gm.graph.call_module(name, (node,))
            node.replace_all_uses_with(obs_node, delete_user_cb=lambda user, o=obs_node: user is not o)
            observers[node] = (observer, obs_node)
        gm.recompile()
        return observers

    @torch.no_grad()
    def _calibrate(self, gm: fx.GraphModule, device) -> None:
        seen = 0
        for i, batch in enumerate(_progress(self.dataloader, self.progress, "ann2snn calibration")):
            if self.max_batches is not None and i >= self.max_batches:
                break
            gm(_batch_input(batch).to(device))
            seen += 1
        if seen == 0:
            raise ValueError("dataloader yielded no batch to calibrate on")

    def _make_neuron(self, scale: torch.Tensor) -> nn.Module:
        if self.neuron == "core":
            return IFNode(v_threshold=1.0, v_reset=None)
        return ConversionIFNode(scale, half_threshold=self.half_threshold, signed=self.signed_spikes,
                                emit_threshold=True)

    def _replace(self, gm: fx.GraphModule, activations, observers, kinds) -> None:
        readout_nodes = _output_activations(gm, set(activations)) if self.readout == "membrane" else set()
        sites = _call_sites(gm)
        for node in activations:
            clip = kinds[node][1]
            observer, obs_node = observers[node]
            if node in readout_nodes:
                block = MembraneReadout(clip)
            else:
                scale = observer.stat.clamp_min(self.eps)
                if clip is not None:
                    scale = scale.clamp_max(clip)
                if self.channel_wise:
                    scale = scale.view((1, -1) + (1,) * (observer.ndim - 2))
                else:
                    scale = scale.reshape(())
                block = IFActivation(scale, self._make_neuron(scale))
            name = _block_name(gm, node, "readout" if isinstance(block, MembraneReadout) else "if", sites)
            gm.add_submodule(name, block)
            with gm.graph.inserting_before(node):
                new = gm.graph.call_module(name, (node.args[0],))
            obs_node.replace_all_uses_with(new)
            gm.graph.erase_node(obs_node)
            gm.graph.erase_node(node)
        modules = dict(gm.named_modules())
        for node in list(gm.graph.nodes):
            if kinds.get(node, ("pass",))[0] != "maxpool":
                continue
            if node.op == "call_module":
                pool = copy.deepcopy(modules[node.target])
                args = (node.args[0],)
            else:
                pool = _pool_module_from_call(node)
                args = (node.args[0],)
            name = _block_name(gm, node, "spiking", sites)
            gm.add_submodule(name, SpikingMaxPool(pool))
            with gm.graph.inserting_before(node):
                new = gm.graph.call_module(name, args)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
        gm.graph.lint()
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()


def _remove_dropout(gm: fx.GraphModule, kinds) -> None:
    for node in list(gm.graph.nodes):
        if kinds.get(node, ("pass",))[0] == "dropout":
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.recompile()


def _output_activations(gm: fx.GraphModule, activations: set[fx.Node]) -> set[fx.Node]:
    """Activations from which the output is reached through stateless nodes only."""
    found, stack, seen = set(), [n for n in gm.graph.nodes if n.op == "output"], set()
    while stack:
        node = stack.pop()
        for arg in node.all_input_nodes:
            if arg in seen:
                continue
            seen.add(arg)
            if arg in activations:
                found.add(arg)
            else:
                stack.append(arg)
    return found


def _batch_input(batch):
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("input", "inputs", "image", "images", "x"):
            if key in batch:
                return batch[key]
    raise TypeError("dataloader batches must be a tensor, an (input, target) pair or a dict with an 'input' "
                    f"or 'image' key; got {type(batch).__name__}")


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)
