"""Kernel of SNN-MLP's full-precision group LIF (:class:`spikeforge.neuron.GroupLIF`; Li et al., CVPR 2022).

Along axis ``dim`` the positions are cut into groups of ``group_size`` consecutive ones; inside a group the
position index j = 0 .. group_size−1 plays the role of time, and the membrane restarts from zero in every group,
independently for every other index. With o_j the membrane carried into step j and s_j the fire flag::

    u_0 = x_0
    u_j = τ·o_j + x_j,          o_j = (1 − s_{j−1})·u_{j−1}     (hard reset to 0 after a fire)
    s_j = [u_j > V_th]                                          (strict: a tie does not fire)
    y_j = s_j·u_j + (1 − s_j)·V_th  =  max(u_j, V_th)           (graded output, not binary)

The last ``L mod group_size`` positions of a line do not fill a group and pass through unchanged.

Backward has no surrogate: the fire mask s is a constant. With g = dL/dy::

    dy_j/du_j = s_j,   du_j/du_{j−1} = τ·(1 − s_{j−1}),   dL/dV_th = Σ (1 − s)·g,
    dL/dτ = Σ_j g_j·s_j·du_j/dτ,   du_j/dτ = (1 − s_{j−1})·(u_{j−1} + τ·du_{j−1}/dτ),   du_0/dτ = 0

which is exactly the autograd of the forward written with a detached mask. Contract::

    run(x, tau, v_th, spec) -> y       (x of any rank; tau, v_th tensors broadcastable to one step)

There is one kernel, ``reference`` (plain PyTorch, any device): with autograd it runs the differentiable form,
without it the same equations in place (inference). The recurrence runs in at least float32.

:func:`group_lif_tensors` is the same implementation with the spec spelled out as plain arguments
(``tau``/``v_th`` tensors, ``group_size``, ``dim``), written in the TorchScript subset: it is what a scripted
:class:`~spikeforge.neuron.GroupLIF` runs (reached through :func:`spikeforge.functional.group_lif_tensors`).
The reference kernel's ``run`` only reads the spec and calls the same :func:`_group_lif` core, so the equations
exist once.
"""

from __future__ import annotations

import torch

from ..spec import NeuronSpec

# Everything below the reference kernel's ``run`` is written in the TorchScript subset (annotated, no spec, no
# Python-only constructs), so a scripted model compiles the very functions eager mode runs.
#
# Both implementations select with float masks and clamps instead of boolean ``where``: boolean selects are
# several times slower than arithmetic on CPU, and these forms stay exact for every finite or infinite input:
#   y       = max(u, V_th) * s + V_th * (1 - s)      (= u if fired, V_th otherwise)
#   o_{j+1} = min(u, V_th) * (1 - s)                 (= u if not fired, 0 otherwise; min() keeps +inf * 0 away)
# Their autograd matches the reference at ties too: clamp(min=V_th) passes the gradient to u only where u >= V_th,
# which is multiplied by s (u > V_th), and clamp(max=V_th) passes it to u where u <= V_th, i.e. exactly 1 - s.


def _steps_first(x: torch.Tensor, dim: int, n_groups: int, lif: int, compute_dtype: torch.dtype) -> torch.Tensor:
    """The grouped part of ``x`` as a contiguous ``[lif, ...]`` tensor: step ``j`` of every group is ``[j]``.

    Elementwise ops on contiguous steps are several times faster than on the stride-``lif`` views of the
    original layout, which pays for this one copy (it also does the float32 upcast)."""
    grouped = x.narrow(dim, 0, n_groups * lif).unflatten(dim, [n_groups, lif]).movedim(dim + 1, 0)
    return grouped.to(compute_dtype, memory_format=torch.contiguous_format, copy=True)


def _group_lif_autograd(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, lif: int, dim: int, n_groups: int,
                        compute_dtype: torch.dtype) -> torch.Tensor:
    length, grouped_len = x.shape[dim], n_groups * lif
    steps = _steps_first(x, dim, n_groups, lif, compute_dtype)
    outputs: list[torch.Tensor] = []
    carried: torch.Tensor | None = None  # o_j: the membrane handed to step j, already zeroed where j-1 fired
    for j in range(lif):
        u = steps[j] if carried is None else torch.addcmul(steps[j], carried, tau)
        rest = torch.le(u.detach(), v_th.detach()).to(compute_dtype)  # 1 - s_j, a constant for autograd
        outputs.append(u.clamp(min=v_th) * (1.0 - rest) + v_th * rest)
        if j < lif - 1:
            carried = u.clamp(max=v_th) * rest
    y = torch.stack(outputs).movedim(0, dim + 1).flatten(dim, dim + 1).to(x.dtype)
    if grouped_len == length:
        return y
    return torch.cat([y, x.narrow(dim, grouped_len, length - grouped_len)], dim)


def _group_lif_inplace(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, lif: int, dim: int, n_groups: int,
                       compute_dtype: torch.dtype) -> torch.Tensor:
    # Inference: update the contiguous steps in place, then scatter them back next to the untouched tails.
    steps = _steps_first(x, dim, n_groups, lif, compute_dtype)
    rest, carried = torch.empty_like(steps[0]), torch.empty_like(steps[0])
    for j in range(lif):
        u = steps[j]
        if j > 0:
            u.addcmul_(carried, tau)
        if j < lif - 1:
            torch.le(u, v_th, out=rest)
            torch.clamp(u, max=v_th, out=carried).mul_(rest)
        u.clamp_(min=v_th)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    grouped_len, length = n_groups * lif, x.shape[dim]
    out.narrow(dim, 0, grouped_len).unflatten(dim, [n_groups, lif]).movedim(dim + 1, 0).copy_(steps)
    if grouped_len < length:
        out.narrow(dim, grouped_len, length - grouped_len).copy_(x.narrow(dim, grouped_len, length - grouped_len))
    return out


def _group_lif(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, lif: int, dim: int,
               compute_dtype: torch.dtype) -> torch.Tensor:
    """The one implementation behind :meth:`GroupLIFReferenceKernel.run` and :func:`group_lif_tensors`."""
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for an input of rank {x.dim()}")
    dim = dim % x.dim()
    n_groups = x.shape[dim] // lif if lif > 0 else 0
    if n_groups == 0:
        return x
    tau = tau.to(device=x.device, dtype=compute_dtype)
    v_th = v_th.to(device=x.device, dtype=compute_dtype)
    if torch.is_grad_enabled() and (x.requires_grad or tau.requires_grad or v_th.requires_grad):
        return _group_lif_autograd(x, tau, v_th, lif, dim, n_groups, compute_dtype)
    return _group_lif_inplace(x, tau, v_th, lif, dim, n_groups, compute_dtype)


def group_lif_tensors(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, lif: int, dim: int) -> torch.Tensor:
    """The group LIF with its spec as plain arguments (TorchScript-compatible; ``lif=-1`` is the identity).

    The membrane precision is the family's state dtype rule, ``StateDtype.FLOAT32_OR_64`` (float64 stays float64,
    every other floating input runs in float32), written here as a type promotion because a scripted function
    cannot read the spec.
    """
    return _group_lif(x, tau, v_th, lif, dim, torch.promote_types(x.dtype, torch.float32))


class GroupLIFReferenceKernel:
    """Plain PyTorch; only the ``group_size`` steps of a group are a Python loop."""

    name = "reference"

    @staticmethod
    def is_available(device: torch.device) -> bool:
        return True

    @staticmethod
    def run(x: torch.Tensor, tau, v_th, spec: NeuronSpec) -> torch.Tensor:
        compute_dtype = spec.state_dtype_for(x.dtype)
        return _group_lif(x, torch.as_tensor(tau), torch.as_tensor(v_th), spec.group.group_size, spec.group.dim,
                          compute_dtype)


__all__ = ["GroupLIFReferenceKernel", "group_lif_tensors"]
