"""The spikeforge model zoo.

Every architecture lives in its own module and registers its named configurations with
:func:`register_model`; :func:`create_model` builds one by name and :func:`list_models` lists them::

    from spikeforge.models import create_model, list_models
    list_models()                                   # ['snnmlp_b', 'snnmlp_s', 'snnmlp_t']
    model = create_model("snnmlp_t", pretrained=True).eval()        # official ImageNet weights
    model = create_model("snnmlp_t", pretrained="snnmlp_t.pt")      # a local checkpoint

A registered entry is a function ``entry(pretrained=None, **kwargs) -> nn.Module``; its docstring is what
``torch.hub.help`` shows, and the repository's ``hubconf.py`` re-exports the entries.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(entry: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator adding ``entry`` to the zoo under its function name."""
    name = entry.__name__
    if name in _REGISTRY and _REGISTRY[name] is not entry:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = entry
    return entry


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style ``pattern`` ("snnmlp_*")."""
    names = sorted(_REGISTRY)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def create_model(name: str, pretrained=None, **kwargs) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: one of :func:`list_models`.
        pretrained: ``None``/``False`` for random initialisation, ``True`` for the official weights (downloaded
            once into the torch.hub cache), or a path to a local checkpoint (a bare state_dict or
            ``{"model": state_dict}``).
        **kwargs: constructor arguments overriding the named configuration (e.g. ``num_classes``).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name](pretrained=pretrained, **kwargs)


from ._weights import WeightsMismatchError, load_checkpoint, load_weights  # noqa: E402
from .profile import ModelProfile, profile_model  # noqa: E402
from .snnmlp import SNNMLP, GroupLIF, group_lif, snnmlp_b, snnmlp_s, snnmlp_t  # noqa: E402

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "load_weights",
    "load_checkpoint",
    "WeightsMismatchError",
    "profile_model",
    "ModelProfile",
    "SNNMLP",
    "GroupLIF",
    "group_lif",
    "snnmlp_t",
    "snnmlp_s",
    "snnmlp_b",
]
