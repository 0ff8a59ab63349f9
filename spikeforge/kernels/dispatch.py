"""The one place that decides which kernel runs a neuron pass.

Kernels are registered per *family* (:class:`spikeforge.spec.KernelFamily`: the kernel contract a neuron kind
runs on) under a backend name; :func:`select_kernel` picks one for a spec and a device:

1. the ``backend`` argument of the neuron / functional call, if given;
2. else the environment variable ``SPIKEFORGE_BACKEND``;
3. else ``'auto'``: the first available kernel in the family's preference list for the device (fused first,
   reference last).

One backend vocabulary for every neuron: ``'auto'``, ``'reference'`` (plain PyTorch, the oracle), ``'cpu'``
(numba), ``'triton'`` (CUDA). SpikingJelly's names are accepted: ``'torch'`` and ``'cupy'`` mean ``'auto'``
(every spikeforge kernel computes the same equations, so the fastest available one is used). A backend the
family has no kernel for, or one not available on the device, falls back to the reference (logged once).
"""

from __future__ import annotations

import logging
import os
from typing import Protocol, runtime_checkable

import torch

from ..spec import KernelFamily, NeuronSpec

logger = logging.getLogger("spikeforge.kernels")

ENV_VAR = "SPIKEFORGE_BACKEND"
BACKENDS = ("auto", "reference", "cpu", "triton")
_ALIASES = {"torch": "auto", "cupy": "auto", "": "auto", None: "auto"}


@runtime_checkable
class NeuronKernel(Protocol):
    """What every kernel has. The charge-fire-reset family adds ``forward``/``backward`` (see DEVELOPERS.md):

    ``forward(x_seq [T, M], v0 [M], decay: float, spec, store_v_seq, need_decay_grad)
    -> (spike_seq, v_last, v_seq | None, saved)`` and ``backward(saved, grad_spike, grad_v_last, grad_v_seq,
    decay, spec, need_decay_grad) -> (grad_x, grad_v0, grad_decay | None)``. The conversion-IF and group-LIF
    families have their own ``run`` contracts (:mod:`.conversion`, :mod:`.group`).
    """

    name: str

    def is_available(self, device: torch.device) -> bool: ...


_REGISTRY: dict[KernelFamily, dict[str, NeuronKernel]] = {family: {} for family in KernelFamily}
# Preference order per family and device type; names that are not registered (or not available) are skipped.
_PREFERENCE: dict[KernelFamily, dict[str, list[str]]] = {
    KernelFamily.CHARGE_FIRE_RESET: {"cpu": ["cpu", "reference"], "cuda": ["triton", "reference"]},
    KernelFamily.CONVERSION_IF: {"cpu": ["cpu", "reference"], "cuda": ["reference"]},
    KernelFamily.GROUP_LIF: {"cpu": ["reference"], "cuda": ["reference"]},
}
_fallback_logged: set[tuple[str, str, str]] = set()


def register_kernel(name: str, kernel: NeuronKernel,
                    family: KernelFamily = KernelFamily.CHARGE_FIRE_RESET) -> None:
    """Make ``kernel`` selectable under backend ``name`` for neurons of ``family``."""
    if name not in BACKENDS[1:]:
        raise ValueError(f"kernel name must be one of {BACKENDS[1:]}, got {name!r}")
    if not isinstance(kernel, NeuronKernel):
        raise TypeError(f"{kernel!r} does not implement the NeuronKernel protocol (name, is_available)")
    _REGISTRY[KernelFamily(family)][name] = kernel


def get_kernel(name: str, family: KernelFamily = KernelFamily.CHARGE_FIRE_RESET) -> NeuronKernel:
    """The kernel registered as ``name`` for ``family`` (KeyError naming the registered ones otherwise)."""
    kernels = _REGISTRY[KernelFamily(family)]
    if name not in kernels:
        raise KeyError(f"no {family.value} kernel named {name!r}; registered: {sorted(kernels)}")
    return kernels[name]


def registered_kernels(family: KernelFamily = KernelFamily.CHARGE_FIRE_RESET) -> dict[str, NeuronKernel]:
    return dict(_REGISTRY[KernelFamily(family)])


def available_backends() -> list[str]:
    """Every accepted ``backend`` value (SpikingJelly's ``'torch'`` / ``'cupy'`` too, which mean ``'auto'``)."""
    return [*BACKENDS, "torch", "cupy"]


def check_backend(backend: str | None, name: str = "backend") -> str | None:
    """Validate a ``backend`` argument at construction time (None = decide per call)."""
    if backend is None or _ALIASES.get(backend, backend) in BACKENDS:
        return backend
    raise ValueError(f"{name}={backend!r} is not a known neuron backend; choose from {list(BACKENDS)} "
                     "(or SpikingJelly's 'torch' / 'cupy', which mean 'auto')")


def select_kernel(device: torch.device, backend: str | None, spec: NeuronSpec) -> NeuronKernel:
    """The kernel for a neuron described by ``spec`` on ``device``.

    A spec with a smooth surrogate (``spiking=False``) always gets the reference kernel: the fused kernels
    implement the Heaviside firing only. So does a spec with a ``CUSTOM`` surrogate (a module outside the
    kernels' table, :class:`spikeforge.spec.SurrogateKind`), logged once.
    """
    family = spec.family
    kernels = _REGISTRY[family]
    reference = kernels["reference"]
    if spec.smooth:
        return reference
    if spec.custom_surrogate:
        if (family.value, "custom", "surrogate") not in _fallback_logged:
            _fallback_logged.add((family.value, "custom", "surrogate"))
            logger.info("spikeforge: a surrogate outside the fused kernels' table runs on the reference kernel "
                        "(its own autograd derivative)")
        return reference
    requested = backend if backend is not None else os.environ.get(ENV_VAR)
    requested = _ALIASES.get(requested, requested)
    device = torch.device(device)
    if requested != "auto":
        if requested not in BACKENDS:
            source = "backend" if backend is not None else ENV_VAR
            raise ValueError(f"{source}={requested!r} is not a known neuron backend; choose from {list(BACKENDS)} "
                             "(or SpikingJelly's 'torch' / 'cupy', which mean 'auto')")
        kernel = kernels.get(requested)
        if kernel is None:
            _log_fallback(family, requested, "has no kernel for this neuron family")
            return reference
        if kernel.is_available(device):
            return kernel
        _log_fallback(family, requested, f"is not available on device {device}")
        return reference
    for name in _PREFERENCE[family].get(device.type, ["reference"]):
        kernel = kernels.get(name)
        if kernel is None:
            continue
        if kernel.is_available(device):
            return kernel
        if kernel is not reference:
            reason = getattr(kernel, "unavailable_reason", lambda device: None)(device) or "is not available"
            _log_fallback(family, name, f"{reason} on device {device.type}")
    return reference


def _log_fallback(family: KernelFamily, name: str, reason: str) -> None:
    if (family.value, name, reason) not in _fallback_logged:
        _fallback_logged.add((family.value, name, reason))
        logger.warning("spikeforge: neuron backend %r %s (%s); using the reference kernel", name, reason,
                       family.value)
