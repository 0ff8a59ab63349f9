"""SNN-MLP's full-precision group LIF (equations: :mod:`spikeforge.kernels.group`)."""

from __future__ import annotations

import torch
from torch import nn

from .. import functional as F
from ..spec import GroupOptions, NeuronSpec, check_retention, check_threshold, group_lif_spec


class GroupLIF(nn.Module):
    """Learnable full-precision group LIF scanning one spatial axis (the SNN-MLP reference's ``LIFSpike``).

    ``tau`` (the retention factor per position) and ``Vth`` (capital V, as in the reference checkpoints) are
    shape-[1] parameters unless fixed, in which case they are plain floats and absent from the state_dict.

    Args:
        lif: group size; ``-1`` disables the neuron (identity).
        fix_tau, fix_vth: keep ``tau`` / ``Vth`` constant instead of learning them.
        init_tau, init_vth: initial values (training used 0.25 and 0.1).
        dim: 2 scans H ("vertical"), 3 scans W ("horizontal").
        backend: the neuron backend name (only ``'reference'`` exists for this family).

    Under ``torch.jit.script`` the module calls :func:`spikeforge.functional.group_lif_tensors` (the reference
    kernel with ``lif``, ``dim``, ``tau`` and ``Vth`` as arguments; TorchScript cannot hold the spec); eager,
    ``torch.export`` and ``torch.compile`` select the kernel through the spec.
    """

    # the spec is Python data; a scripted module reads lif, dim, tau and Vth instead
    __jit_unused_properties__ = ["spec"]
    __jit_ignored_attributes__ = ["_kernel_spec"]

    def __init__(self, lif: int = 4, fix_tau: bool = False, fix_vth: bool = False, init_tau: float = 0.25,
                 init_vth: float = 0.1, dim: int = 2, backend: str | None = None):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 (scan H) or 3 (scan W), got {dim!r}")
        GroupOptions(lif, dim)  # validates the group size
        self.lif = lif
        self.dim = dim
        init_tau, init_vth = check_retention(init_tau, "init_tau"), check_threshold(init_vth, "init_vth")
        self.tau = init_tau if fix_tau else nn.Parameter(torch.tensor([init_tau]))
        self.Vth = init_vth if fix_vth else nn.Parameter(torch.tensor([init_vth]))
        self.backend = F.check_backend(backend)
        self._kernel_spec = group_lif_spec(init_tau, init_vth, lif, dim, not fix_tau, not fix_vth)

    @property
    def spec(self) -> NeuronSpec:
        """The description with the current τ and V_th (learnt values may leave their initial ranges)."""
        tau, vth = (float(p.detach().reshape(-1)[0]) if isinstance(p, torch.Tensor) else p
                    for p in (self.tau, self.Vth))
        leak = self._kernel_spec.leak.__class__(self._kernel_spec.leak.law, tau)
        return self._kernel_spec.replace(leak=leak, v_threshold=vth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"GroupLIF expects x of shape [N, C, H, W], got {list(x.shape)}")
        if torch.jit.is_scripting():
            # TorchScript cannot carry the spec: the same kernel with tau, V_th, group size and axis as arguments
            return F.group_lif_tensors(x, torch.as_tensor(self.tau), torch.as_tensor(self.Vth), self.lif, self.dim)
        return self._run_kernel(x)

    @torch.jit.unused
    def _run_kernel(self, x: torch.Tensor) -> torch.Tensor:
        # eager, torch.export and torch.compile: the kernel is selected through the spec and the backend
        return F.group_lif(x, self.tau, self.Vth, self._kernel_spec, self.backend)

    def extra_repr(self) -> str:
        axis = "H" if self.dim == 2 else "W"
        return f"lif={self.lif}, scan={axis}"


__all__ = ["GroupLIF"]
