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
from .modules import ConversionIFNode, IFActivation, MembraneReadout, SpikingMaxPool, TiledAvgPool2d
from .observe import ActivationObserver, _check_momentum, parse_mode
from .ops import _classify, _pool_module_from_call
from .recipes import RECIPE_NAMES, FXConversionRecipe, RateCodingRecipe
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
    the same. The ANN is deep-copied, never modified. SpikingJelly 2.0's recipe style gives the same network:
    ``Converter(recipe=RateCodingRecipe(dataloader=train_loader, mode='Max')).convert(ann)`` (or
    ``Converter(RateCodingRecipe(...), device)`` positionally); the options then come from the recipe
    (see :mod:`spikeforge.ann2snn.recipes`), and a custom :class:`~.recipes.FXConversionRecipe` runs hook by hook.

    Args (positional order as SpikingJelly's ``Converter(dataloader, device, mode, momentum, fuse_flag)``):
        dataloader: calibration data (batches as tensors, ``(input, target)`` pairs or dicts with 'input').
        device: where to calibrate and put the result (default: the ANN's device).
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
        progress: show a tqdm bar during calibration.

    Without the low-latency options the neurons are plain soft-reset IF neurons (``v_reset=None``).
    """

    def __init__(self, dataloader: Iterable | None = None, device: torch.device | str | None = None, mode="max",
                 momentum: float | None = 0.1, fuse_flag: bool = True, channel_wise: bool = False,
                 half_threshold: bool = False, signed_spikes: bool = False, readout: str = "spikes",
                 neuron: str = "fused", max_batches: int | None = None, progress: bool = True, eps: float = 1e-8,
                 *, recipe: FXConversionRecipe | str | None = None):
        # positional order: SpikingJelly 0.0.0.0.14's Converter(dataloader, device, mode, momentum, fuse_flag)
        # and 2.0's Converter(recipe, device)
        self.recipe = None
        self._neuron_factory = None
        if recipe is None and isinstance(dataloader, (FXConversionRecipe, str)):
            recipe, dataloader = dataloader, None
        if recipe is not None:
            given = dict(dataloader=dataloader, mode=mode, fuse_flag=fuse_flag, momentum=momentum,
                         channel_wise=channel_wise, half_threshold=half_threshold, signed_spikes=signed_spikes,
                         readout=readout, neuron=neuron, max_batches=max_batches, progress=progress, eps=eps)
            clashing = [k for k, v in given.items() if v is not _RECIPE_FREE_DEFAULTS[k]
                        and v != _RECIPE_FREE_DEFAULTS[k]]
            if clashing:
                raise ValueError(f"Converter(recipe=...) takes its options from the recipe; pass "
                                 f"{', '.join(clashing)} to the recipe instead")
            self._init_from_recipe(_resolve_recipe(recipe), device)
            return
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

    def _init_from_recipe(self, recipe: FXConversionRecipe, device) -> None:
        if isinstance(recipe, RateCodingRecipe):
            options = recipe.converter_options()
            if device is not None:
                options["device"] = device
            self.__init__(**options)
            self._neuron_factory = recipe.neuron_factory
        else:  # a custom recipe: SpikingJelly's hooks, run by convert()
            self.device = check_device(device, "device") if device is not None else None
        self.recipe = recipe

    def __call__(self, ann: nn.Module) -> ConvertedSNN:
        return self.convert(ann)

    def convert(self, ann: nn.Module) -> ConvertedSNN:
        if not isinstance(ann, nn.Module):
            raise TypeError(f"ann must be a torch.nn.Module, got {type(ann).__name__}")
        if self.recipe is not None and not isinstance(self.recipe, RateCodingRecipe):
            return self._convert_with_hooks(ann)
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
        _tile_avg_pools(gm)
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

    def _convert_with_hooks(self, ann: nn.Module) -> nn.Module:
        """SpikingJelly 2.0's FXConverter protocol for a custom :class:`FXConversionRecipe` (the ANN is copied)."""
        recipe, configured = self.recipe, self.device
        ann = copy.deepcopy(ann)
        if self.device is None:
            first = next(ann.parameters(), None)
            self.device = first.device if first is not None else torch.device("cpu")
        try:
            with torch.no_grad():
                recipe.validate(self)
                ann = recipe.before_trace(self, ann)
                gm = fx.symbolic_trace(ann).to(self.device)
                for hook in (recipe.after_trace, recipe.insert_observers, recipe.calibrate, recipe.replace,
                             recipe.finalize):
                    gm = hook(self, gm)
            return gm
        finally:
            self.device = configured

    def _make_neuron(self, scale: torch.Tensor) -> nn.Module:
        if self._neuron_factory is not None:
            made = self._neuron_factory(float(scale))
            threshold = getattr(made, "v_threshold", 1.0)
            if not isinstance(made, nn.Module) or not hasattr(made, "step_mode") or float(threshold) != 1.0:
                raise ValueError("neuron_factory(scale) must return a neuron module with step_mode and "
                                 f"v_threshold=1 (it sits between VoltageScaler(1/scale) and VoltageScaler(scale)), "
                                 f"got {type(made).__name__} with v_threshold={threshold!r}")
            return made
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


_RECIPE_FREE_DEFAULTS = dict(dataloader=None, mode="max", fuse_flag=True, momentum=0.1, channel_wise=False,
                             half_threshold=False, signed_spikes=False, readout="spikes", neuron="fused",
                             max_batches=None, progress=True, eps=1e-8)


def _resolve_recipe(recipe) -> FXConversionRecipe:
    if isinstance(recipe, FXConversionRecipe):
        return recipe
    if recipe == "rate_coding":
        raise ValueError("the rate_coding recipe needs parameters: pass RateCodingRecipe(dataloader=...) "
                         "to Converter")
    if recipe in RECIPE_NAMES:
        raise NotImplementedError(f"SpikingJelly's {recipe!r} recipe is not available in spikeforge; "
                                  "RateCodingRecipe (rate coding) is")
    if isinstance(recipe, str):
        raise ValueError(f"unknown ann2snn conversion recipe {recipe!r} (spikeforge has RateCodingRecipe)")
    raise TypeError(f"recipe must be an FXConversionRecipe (e.g. RateCodingRecipe) or a recipe name, "
                    f"got {type(recipe).__name__}")


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


def _tile_avg_pools(gm: fx.GraphModule) -> None:
    """Every plain non-overlapping ``nn.AvgPool2d`` becomes a :class:`TiledAvgPool2d` (same outputs, faster on
    the CPU); pooling has no parameters or buffers, so the state_dict does not change."""
    for name, module in list(gm.named_modules()):
        if name and TiledAvgPool2d.qualifies(module):
            parent_name, _, child = name.rpartition(".")
            setattr(gm.get_submodule(parent_name) if parent_name else gm, child, TiledAvgPool2d.from_pool(module))
