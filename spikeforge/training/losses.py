"""Classification losses for spiking networks. A loss is any callable ``(output, labels) -> scalar tensor``.

``output`` is what the model (or the engine's ``forward``) returns for a batch: ``[B, C]`` (firing rates,
logits, mean membrane) or, with ``time_dim`` set, a sequence such as ``[T, B, C]`` that is averaged over time
first. Each loss computes in float32 whatever the output dtype (AMP).

* :class:`MSERateLoss` — mean squared error between the firing rate and the one-hot label (SpikingJelly's
  recipe for ``lif_fc_mnist`` / ``conv_fashion_mnist``);
* :class:`CrossEntropyRateLoss` — cross-entropy on the firing rate (times ``scale``);
* :class:`CrossEntropyLoss` — cross-entropy on logits or the mean output membrane.

Extending: any callable works. A loss that needs the batch's inputs as well (for example distillation from a
teacher network) sets the attribute ``uses_inputs = True``; the engine then calls
``loss(output, labels, inputs=inputs)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["Loss", "MSERateLoss", "CrossEntropyRateLoss", "CrossEntropyLoss", "LOSSES", "make_loss", "call_loss"]

Loss = Callable[..., torch.Tensor]


def _over_time(output: torch.Tensor, time_dim: int | None) -> torch.Tensor:
    output = output.float()
    return output if time_dim is None else output.mean(time_dim)


class MSERateLoss:
    """``mse(rate, one_hot(labels))``, mean over batch and classes; ``num_classes`` defaults to ``rate.shape[-1]``."""

    uses_inputs = False

    def __init__(self, num_classes: int | None = None, time_dim: int | None = None):
        self.num_classes = num_classes
        self.time_dim = time_dim

    def __call__(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rate = _over_time(output, self.time_dim)
        target = F.one_hot(labels, self.num_classes or rate.shape[-1]).float()
        return F.mse_loss(rate, target)

    def __repr__(self) -> str:
        return f"MSERateLoss(num_classes={self.num_classes}, time_dim={self.time_dim})"


class CrossEntropyLoss:
    """``cross_entropy(output, labels)`` on logits, or on the membrane averaged over ``time_dim``."""

    uses_inputs = False

    def __init__(self, time_dim: int | None = None, label_smoothing: float = 0.0, scale: float = 1.0):
        self.time_dim = time_dim
        self.label_smoothing = label_smoothing
        self.scale = scale

    def __call__(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = _over_time(output, self.time_dim)
        if self.scale != 1.0:
            logits = logits * self.scale
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(time_dim={self.time_dim}, label_smoothing={self.label_smoothing}, "
                f"scale={self.scale})")


class CrossEntropyRateLoss(CrossEntropyLoss):
    """Cross-entropy on the firing rate times ``scale`` (rates lie in [0, 1]; a scale > 1 sharpens the softmax).

    Given spikes ``[T, B, C]`` and ``time_dim=0`` the rate is their mean over time.
    """


LOSSES: dict[str, Callable[..., Loss]] = {
    "mse_rate": MSERateLoss,
    "ce_rate": CrossEntropyRateLoss,
    "ce": CrossEntropyLoss,
}


def make_loss(name: str, **kwargs) -> Loss:
    """A loss from :data:`LOSSES` by name (``'mse_rate'``, ``'ce_rate'``, ``'ce'``)."""
    try:
        return LOSSES[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None


def call_loss(loss: Loss, output: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """How the engine calls a loss: ``loss(output, labels)``, plus ``inputs=`` when it declares ``uses_inputs``."""
    if getattr(loss, "uses_inputs", False):
        return loss(output, labels, inputs=inputs)
    return loss(output, labels)
