"""The one place that decides which kernel runs a multi-step neuron pass.

A kernel is an object with ``name``, ``is_available(device)``, ``forward(...)`` and ``backward(...)`` with the
signatures of :class:`spikeforge.kernels.reference.ReferenceKernel`. Kernels register themselves with
:func:`register_kernel`; :func:`select_kernel` picks one:

1. the ``backend`` argument of the neuron / functional call, if given;
2. else the environment variable ``SPIKEFORGE_BACKEND``;
3. else ``'auto'``: the first available kernel in the device's preference list (fused first, reference last).

SpikingJelly's backend names are accepted: ``'torch'`` and ``'cupy'`` mean ``'auto'`` (every spikeforge kernel
computes the same equations, so the fastest available one is used).
"""

from __future__ import annotations

import logging
import os

import torch

from .reference import ReferenceKernel

logger = logging.getLogger("spikeforge.kernels")

ENV_VAR = "SPIKEFORGE_BACKEND"
_ALIASES = {"torch": "auto", "cupy": "auto", "": "auto", None: "auto"}

_KERNELS: dict[str, object] = {"reference": ReferenceKernel}
# Preference order per device type; names that are not registered (or not available) are skipped.
_PREFERENCE: dict[str, list[str]] = {"cpu": ["cpu", "reference"], "cuda": ["triton", "reference"]}
_fallback_logged: set[tuple[str, str]] = set()


def register_kernel(name: str, kernel: object) -> None:
    """Make ``kernel`` selectable under ``name`` (used by the fused CPU and Triton modules)."""
    _KERNELS[name] = kernel


def available_backends() -> list[str]:
    return ["auto", *_KERNELS]


def select_kernel(device: torch.device, backend: str | None = None, spec=None):
    """The kernel object for ``device``, honouring the ``backend`` argument and ``SPIKEFORGE_BACKEND``.

    A ``spec`` with ``smooth=True`` (a surrogate with ``spiking=False``) always gets the reference kernel: the
    fused kernels implement the Heaviside firing only.
    """
    if spec is not None and spec.smooth:
        return ReferenceKernel
    requested = backend if backend is not None else os.environ.get(ENV_VAR)
    requested = _ALIASES.get(requested, requested)
    if requested != "auto":
        kernel = _KERNELS.get(requested)
        if kernel is None:
            source = "backend" if backend is not None else ENV_VAR
            raise ValueError(f"{source}={requested!r} is not a known neuron backend; choose from "
                             f"{available_backends()} (or SpikingJelly's 'torch' / 'cupy', which mean 'auto')")
        if kernel.is_available(device):
            return kernel
        _log_fallback(requested, f"not available on device {device}")
        return ReferenceKernel
    for name in _PREFERENCE.get(device.type, ["reference"]):
        kernel = _KERNELS.get(name)
        if kernel is None:
            continue
        if kernel.is_available(device):
            return kernel
        if kernel is not ReferenceKernel:
            reason = getattr(kernel, "unavailable_reason", lambda device: None)(device) or "is not available"
            _log_fallback(name, f"{reason} on device {device.type}")
    return ReferenceKernel


def _log_fallback(name: str, reason: str) -> None:
    if (name, reason) not in _fallback_logged:
        _fallback_logged.add((name, reason))
        logger.warning("spikeforge: neuron backend %r %s; using the reference kernel", name, reason)
