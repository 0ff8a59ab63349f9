"""LAMB with the semantics of timm's ``timm.optim.Lamb`` (the NVIDIA FusedLAMB variant), in plain PyTorch.

Meta-SpikeFormer's reference recipe trains with ``timm.optim.Lamb(param_groups, trust_clip=True, lr=...)``;
this class reproduces that optimizer without importing timm. One step, for every parameter group with
``lr``, ``betas = (b1, b2)``, ``eps``, ``weight_decay = wd`` and step count ``t`` (counted per group):

1. global gradient clipping (before anything else, over *all* parameters of all groups):
   ``c = max(||g||_2 / max_grad_norm, 1)`` with ``||g||_2`` the 2-norm of all gradients together; every
   gradient is used as ``g / c`` (``p.grad`` itself is not modified); ``max_grad_norm=None`` disables it;
2. moments: ``m = b1 m + b3 g`` with ``b3 = 1 - b1`` (``grad_averaging=True``) or ``1``; ``v = b2 v + (1-b2) g^2``;
3. Adam direction with bias correction (``bias_correction=True``):
   ``u = (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps)``;
4. L2 term: ``u = u + wd * p`` when ``wd != 0``;
5. trust ratio, only when ``wd != 0`` or ``always_adapt``: ``r = ||p|| / ||u||`` (``1`` when either norm is
   0), clipped to ``min(r, 1)`` with ``trust_clip=True`` (LAMBC); ``u = r u``;
6. ``p = p - lr * u``.

So parameters in a group with ``weight_decay=0`` (biases, norms: the 1-D parameters the recipes exclude from
decay) take a plain bias-corrected Adam step with no layer-wise adaptation. The defaults are timm's
(``lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, max_grad_norm=1.0, trust_clip=False``).
timm's later additions (``caution``, ``decoupled_decay``) are not part of the reference recipe and are not
implemented.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["Lamb", "param_groups_weight_decay"]


class Lamb(torch.optim.Optimizer):
    """LAMB / LAMBC as timm's ``Lamb`` (see the module docstring for the exact update).

    Args:
        params: parameters or parameter groups (groups may set their own ``weight_decay``, ``lr`` ...).
        lr, betas, eps, weight_decay: as in Adam; ``weight_decay`` is an L2 term added to the update.
        bias_correction: divide the moments by ``1 - beta^t``.
        grad_averaging: the first moment averages with ``1 - beta1`` (else it sums the gradient).
        max_grad_norm: clip the global gradient norm to this value inside the step (``None``: no clipping).
        trust_clip: clip the trust ratio at 1 (LAMBC; the Meta-SpikeFormer recipe sets it).
        always_adapt: apply the trust ratio to groups without weight decay too.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, bias_correction: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 grad_averaging: bool = True, max_grad_norm: float | None = 1.0, trust_clip: bool = False,
                 always_adapt: bool = False):
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Lamb: {name} must be a finite number >= 0, got {value!r}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lamb: betas must lie in [0, 1), got {betas!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"Lamb: max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay, grad_averaging=grad_averaging, max_grad_norm=max_grad_norm,
                        trust_clip=trust_clip, always_adapt=always_adapt)
        super().__init__(params, defaults)

    def _clip_divisor(self) -> torch.Tensor | None:
        """``max(||all gradients||_2 / max_grad_norm, 1)``, or ``None`` without clipping / gradients."""
        limit = self.defaults["max_grad_norm"]
        if limit is None:
            return None
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return None
        if any(g.is_sparse for g in grads):
            raise RuntimeError("Lamb does not support sparse gradients")
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g).double() for g in grads]))
        return torch.clamp(total / limit, min=1.0)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        divisor = self._clip_divisor()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            beta3 = 1.0 - beta1 if group["grad_averaging"] else 1.0
            group["step"] = group.get("step", 0) + 1  # one count per group, as timm keeps it
            active = [p for p in group["params"] if p.grad is not None]
            if not active:
                continue
            t = group["step"]
            if group["bias_correction"]:
                correction1, correction2 = 1.0 - beta1**t, 1.0 - beta2**t
            else:
                correction1, correction2 = 1.0, 1.0
            decay = group["weight_decay"]
            adapt = decay != 0 or group["always_adapt"]
            for p in active:
                grad = p.grad if divisor is None else (p.grad / divisor).to(p.grad.dtype)
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=beta3)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                update = (m / correction1) / (v.sqrt() / math.sqrt(correction2) + group["eps"])
                if decay != 0:
                    update.add_(p, alpha=decay)
                if adapt:
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    if group["trust_clip"]:
                        ratio = torch.clamp(ratio, max=1.0)
                    update.mul_(ratio)
                p.add_(update, alpha=-group["lr"])
        return loss


def param_groups_weight_decay(model: nn.Module, weight_decay: float, no_weight_decay: Iterable[str] = (),
                              extra: dict | None = None) -> list[dict]:
    """Two parameter groups: ``weight_decay`` for the parameters with 2 or more dimensions, 0 for the 1-D ones
    (biases, norm weights, scalars) and the names in ``no_weight_decay`` (as the MAE/DeiT recipes split them).

    Parameters that do not require gradients are left out; empty groups are dropped. ``extra`` is merged into
    both groups (e.g. ``{"lr_scale": 1.0}``).
    """
    skip = set(no_weight_decay)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    groups = [dict(params=decay, weight_decay=weight_decay, **(extra or {})),
              dict(params=no_decay, weight_decay=0.0, **(extra or {}))]
    return [g for g in groups if g["params"]]
