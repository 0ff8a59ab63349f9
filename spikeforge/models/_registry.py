"""The zoo registry: model names -> entry points, filled as the architecture modules are imported.

An architecture module decorates each of its named variants with :func:`register_model`; the function's name is
the model name. ``spikeforge/models/__init__.py`` imports every architecture module, so importing
``spikeforge.models`` registers the whole zoo. This module imports no architecture (architecture modules import
it), so there is no cycle.

An entry point is a function ``entry(pretrained=None, **kwargs) -> nn.Module`` with a docstring (that is what
``torch.hub.help`` shows).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable

from torch import nn

from ._pretrained import PRETRAINED_CFGS, PretrainedCfg

__all__ = ["register_model", "list_models", "is_model", "model_entrypoint", "get_pretrained_cfg"]

_entrypoints: dict[str, Callable[..., nn.Module]] = {}


def register_model(entry: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator adding ``entry`` to the zoo under its function name; a second entry with a taken name is refused.

    Registering the very same function again is a no-op.
    """
    name = entry.__name__
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"a model name must be a public Python identifier, got {name!r}")
    previous = _entrypoints.get(name)
    if previous is not None and previous is not entry:
        raise ValueError(f"a model named {name!r} is already registered (by {previous.__module__}); "
                         f"{entry.__module__} must choose another name")
    _entrypoints[name] = entry
    return entry


def list_models(pattern: str | Iterable[str] | None = None, pretrained: bool = False) -> list[str]:
    """Sorted names of the registered models.

    Args:
        pattern: a shell-style pattern (``"snnmlp_*"``) or several (a name matching any is kept); ``None`` keeps
            all.
        pretrained: keep only the models whose official weights can be downloaded (``pretrained=True`` works).
    """
    names = sorted(_entrypoints)
    if pattern is not None:
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if pretrained:
        names = [n for n in names if n in PRETRAINED_CFGS and PRETRAINED_CFGS[n].has_weights]
    return names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _entrypoints


def unknown_model_message(name: str) -> str:
    """``"unknown model name ...; did you mean ...?"``, naming the close matches, or every model if none is."""
    names = sorted(_entrypoints)
    close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.6)
    if close:
        return f"unknown model name {name!r}; did you mean {', '.join(close)}? (list_models() gives all)"
    return f"unknown model name {name!r}; available: {', '.join(names)}"


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The entry point registered as ``name``; ``ValueError`` naming the close matches if there is none."""
    try:
        return _entrypoints[name]
    except (KeyError, TypeError):
        raise ValueError(unknown_model_message(name)) from None


def get_pretrained_cfg(name: str) -> PretrainedCfg | None:
    """The pretrained configuration of model ``name``, or ``None`` if it has none; ``ValueError`` if unknown."""
    model_entrypoint(name)
    return PRETRAINED_CFGS.get(name)
