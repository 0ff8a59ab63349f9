"""Optimizers the reference recipes need and torch does not ship: :class:`Lamb` (timm's LAMB / LAMBC) and the
weight-decay parameter split (:func:`param_groups_weight_decay`)."""

from .lamb import Lamb, param_groups_weight_decay

__all__ = ["Lamb", "param_groups_weight_decay"]
