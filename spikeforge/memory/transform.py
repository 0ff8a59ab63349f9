"""Find the layers whose input is binary spikes (from the neuron description) and make them save it as bits.

:func:`binary_inputs` reads the model's sequential containers (``nn.Sequential`` and SpikingJelly-style
``SeqToANNContainer`` / ``MultiStepContainer``, STBP's ``tdLayer``) in execution order and follows what every
leaf produces:

* a neuron (a module with a :class:`~spikeforge.spec.NeuronSpec` ``spec``) produces binary spikes when
  ``spec.binary_output`` is True and its surrogate is not in the smooth (``spiking=False``) mode;
* shape-only and max-type layers keep that: ``Flatten``, ``Unflatten``, ``Identity``, ``MaxPool1d/2d/3d``;
* spikeforge's ``Dropout`` / ``Dropout2d`` turn {0, 1} into {0, c} with c = 1/(1 − p) (one mask per sequence,
  so c is read from that mask when the tensor is saved);
* anything else (Conv, Linear, BatchNorm, average pooling, an unknown module) produces graded values.

:func:`bit_spikes` then changes the class of every Conv / Linear / MaxPool found to take binary input (all of its
uses) to a subclass that saves that input as bits (:mod:`spikeforge.memory.bits`). Parameters, buffers,
``state_dict`` keys and numerics stay as they were; layers whose input is not known to be binary keep the
ordinary path. :func:`remove_bit_spikes` undoes it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as torch_F

from .. import functional as F
from .. import layer as sf_layer
from ..spec import NeuronSpec
from .bits import BitPackedMaxPool, saved_as_bits

__all__ = ["binary_inputs", "spike_sources", "bit_spikes", "remove_bit_spikes", "is_binary_neuron", "BINARY", "UNKNOWN"]

BINARY = "binary"
UNKNOWN = None

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
             nn.Linear)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Identity)
_SEQUENTIAL_FORWARDS = (nn.Sequential.forward, sf_layer.SeqToANNContainer.forward,
                        sf_layer.MultiStepContainer.forward)


def is_binary_neuron(module: nn.Module) -> bool:
    """The module is a neuron whose description says its output is {0, 1} spikes."""
    spec = getattr(module, "spec", None)
    return isinstance(spec, NeuronSpec) and bool(spec.binary_output) and not spec.smooth


def _sequential_children(module: nn.Module) -> list[nn.Module] | None:
    """The children in execution order when ``module`` runs them one after the other, else None."""
    if isinstance(module, nn.Sequential) and type(module).forward in _SEQUENTIAL_FORWARDS:
        return list(module)
    if isinstance(module, sf_layer.tdLayer):
        return [module.layer] + ([module.bn] if module.bn is not None else [])
    return None


class _Source:
    """What a tensor on the sequential path is known to hold: binary spikes, optionally times a dropout scale."""

    __slots__ = ("neuron", "dropout")

    def __init__(self, neuron: nn.Module, dropout: nn.Module | None = None):
        self.neuron = neuron
        self.dropout = dropout

    def key(self):
        return id(self.neuron), (id(self.dropout) if self.dropout is not None else None)


def _walk(children, state, found: dict, seen: set) -> _Source | None:
    for child in children:
        state = _visit(child, state, found, seen)
    return state


def _visit(module: nn.Module, state, found: dict, seen: set):
    seen.add(id(module))
    inner = _sequential_children(module)
    if inner is not None:
        return _walk(inner, state, found, seen)
    if isinstance(getattr(module, "spec", None), NeuronSpec):
        return _Source(module) if is_binary_neuron(module) else UNKNOWN
    if isinstance(module, _WEIGHTED):
        found.setdefault(id(module), (module, []))[1].append(state)
        return UNKNOWN
    if isinstance(module, _MAX_POOLS):
        found.setdefault(id(module), (module, []))[1].append(state)
        return state
    if isinstance(module, _SHAPE_ONLY):
        return state
    if isinstance(module, sf_layer.Dropout):  # Dropout2d too
        if state is None or state.dropout is not None:
            return UNKNOWN
        return _Source(state.neuron, dropout=module)
    # opaque: whatever it produces is not known; its insides are analysed on their own
    for child in module.children():
        if id(child) not in seen:
            _visit(child, UNKNOWN, found, seen)
    return UNKNOWN


def spike_sources(model: nn.Module) -> dict[nn.Module, tuple[nn.Module, nn.Module | None]]:
    """``{module: (neuron, dropout)}`` for the Conv / Linear / MaxPool modules of ``model`` whose input is the
    binary spikes of ``neuron`` at every use (``dropout``: the spikeforge ``Dropout`` in between, or None)."""
    found: dict[int, tuple[nn.Module, list]] = {}
    _visit(model, UNKNOWN, found, set())
    result = {}
    for module, states in found.values():
        if all(s is not None for s in states) and len({s.key() for s in states}) == 1:
            result[module] = (states[0].neuron, states[0].dropout)
    return result


def binary_inputs(model: nn.Module) -> dict[nn.Module, nn.Module | None]:
    """The Conv / Linear / MaxPool modules of ``model`` whose input is binary spikes at every use.

    Returns ``{module: dropout}``, where ``dropout`` is the spikeforge ``Dropout`` between the neuron and the
    module (its mask scales the spikes), or None.
    """
    return {module: dropout for module, (_, dropout) in spike_sources(model).items()}


def _scale_of(dropout: nn.Module | None):
    """The nonzero value c of a {0, c} tensor behind ``dropout`` (None: plain spikes, c = 1)."""
    if dropout is None:
        return None

    def scale():
        mask = getattr(dropout, "mask", None)
        if not dropout.training or dropout.p == 0.0 or mask is None:
            return None
        return mask.detach().amax()

    return scale


class _BitSavedInput:
    """Mixin for Conv / Linear: the binary input is saved for backward as bits."""

    _bit_dropout: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.is_floating_point()):
            return super().forward(x)
        with saved_as_bits(x, _scale_of(self._bit_dropout)):
            return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input saved as bits"


_POOL_FNS = {nn.MaxPool1d: (torch_F.max_pool1d, 1), nn.MaxPool2d: (torch_F.max_pool2d, 2),
             nn.MaxPool3d: (torch_F.max_pool3d, 3)}


class _BitSavedMaxPool:
    """Mixin for MaxPool: backward keeps the binary input as bits and finds the argmax again."""

    _bit_dropout: nn.Module | None = None

    def _pool_base(self):
        for base, fn in _POOL_FNS.items():
            if isinstance(self, base):
                return base, fn
        raise TypeError(type(self).__name__)

    def _bit_pool(self, x: torch.Tensor) -> torch.Tensor:
        base, (pool_fn, dims) = self._pool_base()
        if (self.return_indices or not (torch.is_grad_enabled() and x.requires_grad) or x.dim() != dims + 2
                or not x.is_floating_point()):
            return base.forward(self, x)
        kwargs = dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                      dilation=self.dilation, ceil_mode=self.ceil_mode)
        scale_fn = _scale_of(self._bit_dropout)
        return BitPackedMaxPool.apply(x, pool_fn, kwargs, scale_fn() if scale_fn is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "step_mode", "s") == "m":
            return F.seq_to_ann_forward(x, self._bit_pool)
        return self._bit_pool(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input saved as bits"


_SUBCLASSES: dict[type, type] = {}


def _bit_class(cls: type) -> type:
    sub = _SUBCLASSES.get(cls)
    if sub is None:
        mixin = _BitSavedMaxPool if issubclass(cls, _MAX_POOLS) else _BitSavedInput
        sub = type(cls.__name__, (mixin, cls), {"__module__": cls.__module__, "_bit_base": cls,
                                                "__doc__": cls.__doc__})
        _SUBCLASSES[cls] = sub
    return sub


def bit_spikes(model: nn.Module) -> list[nn.Module]:
    """Make every Conv / Linear / MaxPool of ``model`` whose input is binary spikes save it as bits; in place.

    Returns the modules changed. Gradients are unchanged (the backward passes get the same values); the other
    layers keep the ordinary path. The change is a subclass swap: parameters, ``state_dict`` and the module tree
    are untouched (``remove_bit_spikes`` restores the classes).
    """
    changed = []
    for module, dropout in binary_inputs(model).items():
        if getattr(type(module), "_bit_base", None) is None:
            module.__class__ = _bit_class(type(module))
        module.__dict__["_bit_dropout"] = dropout  # a reference, not a sub-module
        changed.append(module)
    return changed


def remove_bit_spikes(model: nn.Module) -> None:
    """Undo :func:`bit_spikes` on every module of ``model``."""
    for module in model.modules():
        base = getattr(type(module), "_bit_base", None)
        if base is not None:
            module.__class__ = base
            module.__dict__.pop("_bit_dropout", None)
