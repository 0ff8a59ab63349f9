"""SpikingJelly 2.0's recipe call style: ``Converter(recipe=RateCodingRecipe(dataloader=..., mode=...)).convert(ann)``.

SpikingJelly 2.0 describes a conversion by a *recipe* object handed to ``Converter`` (``FXConverter``); its
``RateCodingRecipe`` is the classic rate-coding conversion that spikeforge's :class:`~.converter.Converter` runs
with keyword arguments (``Converter(dataloader=..., mode=...)``, the call style of SpikingJelly 0.0.0.0.14's
tutorial). Both styles stay and give the same network: a :class:`RateCodingRecipe` only holds options, which
:class:`~.converter.Converter` maps onto its own (:meth:`RateCodingRecipe.converter_options`).

SpikingJelly's arguments and what they become here:

* ``dataloader``, ``mode`` (``'Max'``/``'max'``, ``'99.9%'``, a float in (0, 1]), ``momentum``, ``fuse_flag``,
  ``channel_wise``, ``half_threshold`` and ``eps``: the converter's options of the same names;
* ``channel_dim``: only 1 (channels first), the one spikeforge calibrates; other values are refused;
* ``pre_spike_maxpool`` (calibrate after a max-pool that follows a ReLU and put the neurons behind the pool):
  refused when True; spikeforge keeps the pool and turns it into a spiking max-pool instead;
* ``neuron_factory(scale) -> neuron``: the neuron placed between ``VoltageScaler(1/λ)`` and ``VoltageScaler(λ)``
  (layer-wise only); it must have ``v_threshold == 1`` (SpikingJelly rescales by ``v_threshold/λ``).

spikeforge's further options (``readout``, ``neuron``, ``signed_spikes``, ``max_batches``, ``progress``, ...)
can be given to :class:`RateCodingRecipe` as keyword arguments. The percentile rule is spikeforge's (the
``ceil(q·n)``-th smallest value), which can differ slightly from SpikingJelly's interpolated quantile.

Custom recipes: a subclass of :class:`FXConversionRecipe` overriding SpikingJelly's hooks (``validate``,
``before_trace``, ``after_trace``, ``insert_observers``, ``calibrate``, ``replace``, ``finalize``) is run hook by
hook on the ``torch.fx`` trace of the ANN, as SpikingJelly's ``FXConverter`` runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch.nn as nn
from torch import fx

__all__ = ["FXConversionRecipe", "ConversionRecipe", "RateCodingRecipe", "RECIPE_NAMES"]

#: SpikingJelly 2.0's recipe names that ``Converter`` accepts as strings; none is runnable without parameters here.
RECIPE_NAMES = ("rate_coding", "transformer_td_equivalent", "sta_transformer")


class FXConversionRecipe:
    """Base of a conversion recipe (SpikingJelly 2.0's hooks; each default leaves its input unchanged).

    ``Converter(recipe=r).convert(ann)`` calls, under ``torch.no_grad()``: ``r.validate(converter)``,
    ``ann = r.before_trace(converter, ann)``, traces ``ann`` with ``torch.fx``, then passes the graph module
    through ``after_trace``, ``insert_observers``, ``calibrate``, ``replace`` and ``finalize`` and returns the
    last result. ``converter.device`` is the device to work on.
    """

    def validate(self, converter) -> None:
        return None

    def before_trace(self, converter, ann: nn.Module) -> nn.Module:
        return ann

    def after_trace(self, converter, fx_model: fx.GraphModule) -> fx.GraphModule:
        return fx_model

    def insert_observers(self, converter, fx_model: fx.GraphModule) -> fx.GraphModule:
        return fx_model

    def calibrate(self, converter, fx_model: fx.GraphModule) -> fx.GraphModule:
        return fx_model

    def replace(self, converter, fx_model: fx.GraphModule) -> fx.GraphModule:
        return fx_model

    def finalize(self, converter, fx_model: fx.GraphModule) -> nn.Module:
        return fx_model


ConversionRecipe = FXConversionRecipe


class RateCodingRecipe(FXConversionRecipe):
    """Rate-coding conversion options in SpikingJelly 2.0's spelling (``RateCodingRecipe`` of its ``ann2snn``).

    Args:
        dataloader: calibration batches (tensors, ``(input, target)`` pairs or dicts with 'input').
        mode: ``'Max'`` (any case), a percentile such as ``'99.9%'``, or a float in (0, 1] (that fraction of the
            max).
        momentum: per-batch statistics are averaged as ``s = (1 − m)·s + m·s_batch`` after the first batch.
        fuse_flag: fold BatchNorm into the preceding convolution.
        channel_wise: one scale per channel instead of one per layer.
        channel_dim: the channel dimension of the activations; only 1.
        pre_spike_maxpool: SpikingJelly's channel-wise max-pool placement; only False.
        half_threshold: start every membrane at half its threshold.
        eps: lower bound of a calibrated scale.
        neuron_factory: ``neuron_factory(scale)`` returns the threshold-1 neuron of one converted ReLU
            (layer-wise only); default: spikeforge's converter neuron.
        **options: spikeforge's further :class:`~spikeforge.ann2snn.Converter` options (``readout``, ``neuron``,
            ``signed_spikes``, ``max_batches``, ``progress``).
    """

    def __init__(self, dataloader: Iterable, mode="Max", momentum: float = 0.1, fuse_flag: bool = True,
                 channel_wise: bool = False, channel_dim: int = 1, pre_spike_maxpool: bool = False,
                 half_threshold: bool = False, eps: float = 1e-6,
                 neuron_factory: Callable[[float], nn.Module] | None = None, **options):
        if isinstance(channel_dim, bool) or channel_dim != 1:
            raise NotImplementedError(f"RateCodingRecipe(channel_dim={channel_dim!r}): spikeforge calibrates "
                                      "channels on dim 1 only")
        if pre_spike_maxpool:
            raise NotImplementedError("RateCodingRecipe(pre_spike_maxpool=True) is not supported: spikeforge "
                                      "keeps a max-pool after a ReLU and converts it to a spiking max-pool")
        if neuron_factory is not None and (channel_wise or half_threshold):
            raise NotImplementedError("RateCodingRecipe(neuron_factory=...) works with layer-wise scales and "
                                      "without half_threshold")
        if neuron_factory is not None and not callable(neuron_factory):
            raise TypeError(f"neuron_factory must be callable, got {type(neuron_factory).__name__}")
        unknown = set(options) - _SPIKEFORGE_OPTIONS
        if unknown:
            raise TypeError(f"RateCodingRecipe got unexpected keyword argument(s) {', '.join(sorted(unknown))} "
                            f"(spikeforge options: {', '.join(sorted(_SPIKEFORGE_OPTIONS))})")
        self.dataloader = dataloader
        self.mode = mode
        self.momentum = momentum
        self.fuse_flag = fuse_flag
        self.channel_wise = channel_wise
        self.channel_dim = channel_dim
        self.pre_spike_maxpool = pre_spike_maxpool
        self.half_threshold = half_threshold
        self.eps = eps
        self.neuron_factory = neuron_factory
        self.options = dict(options)

    def converter_options(self) -> dict:
        """The keyword arguments of :class:`~spikeforge.ann2snn.Converter` that run this recipe."""
        options = dict(dataloader=self.dataloader, mode=self.mode, momentum=self.momentum, fuse_flag=self.fuse_flag,
                       channel_wise=self.channel_wise, half_threshold=self.half_threshold, eps=self.eps)
        options.update(self.options)
        if self.neuron_factory is not None:
            options["neuron"] = "core"
        return options

    def __repr__(self) -> str:
        return (f"RateCodingRecipe(mode={self.mode!r}, momentum={self.momentum}, fuse_flag={self.fuse_flag}, "
                f"channel_wise={self.channel_wise}, half_threshold={self.half_threshold}, eps={self.eps})")


_SPIKEFORGE_OPTIONS = {"readout", "neuron", "signed_spikes", "max_batches", "progress", "device"}
