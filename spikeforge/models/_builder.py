"""The one way a zoo variant is built: construct, attach its :class:`PretrainedCfg`, load weights if asked."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from torch import nn

from ._pretrained import PRETRAINED_CFGS, PretrainedCfg
from ._weights import load_weights

__all__ = ["build_model_with_cfg", "resolve_pretrained_cfg"]

_logger = logging.getLogger(__name__)


def resolve_pretrained_cfg(variant: str, pretrained_cfg: PretrainedCfg | Mapping | None = None,
                           pretrained_cfg_overlay: Mapping | None = None) -> PretrainedCfg:
    """The configuration a build of ``variant`` uses: ``pretrained_cfg`` if given (a :class:`PretrainedCfg`, or a
    mapping of its fields), else the registered one, with the fields in ``pretrained_cfg_overlay`` replaced."""
    if pretrained_cfg is None:
        if variant not in PRETRAINED_CFGS:
            raise KeyError(f"no pretrained configuration for {variant!r}: add one to spikeforge/models/_pretrained.py "
                           "or pass pretrained_cfg=")
        cfg = PRETRAINED_CFGS[variant]
    elif isinstance(pretrained_cfg, PretrainedCfg):
        cfg = pretrained_cfg
    elif isinstance(pretrained_cfg, Mapping):
        cfg = PretrainedCfg(**{"architecture": variant, **pretrained_cfg})
    else:
        raise TypeError("pretrained_cfg must be a PretrainedCfg, a mapping or None, "
                        f"got {type(pretrained_cfg).__name__}")
    if pretrained_cfg_overlay:
        cfg = cfg.replace(**pretrained_cfg_overlay)
    return cfg


def build_model_with_cfg(model_cls: Callable[..., nn.Module], variant: str, pretrained=None, *,
                         pretrained_cfg: PretrainedCfg | Mapping | None = None,
                         pretrained_cfg_overlay: Mapping | None = None, progress: bool = True,
                         **kwargs) -> nn.Module:
    """Build ``model_cls(**kwargs)`` as the zoo variant ``variant``.

    The model gets ``model.pretrained_cfg``: the variant's :class:`PretrainedCfg` (it describes the released
    weights, so it keeps their ``num_classes`` even when the model was built with another).

    Args:
        model_cls: the architecture (any callable returning a module).
        variant: the registered name; selects the pretrained configuration.
        pretrained: ``None``/``False``: keep the initialisation. ``True``: the official weights, downloaded once
            into ``<torch.hub dir>/checkpoints`` and checked against the configuration's sha256 when one is
            recorded. A path: a local checkpoint file. A mapping: a state_dict. Files are read with
            ``torch.load(weights_only=True)``; a checkpoint whose names or shapes differ from the model's is
            refused with :class:`WeightsMismatchError` listing the missing, unexpected and reshaped entries.
            When the official weights go into a model built with another ``num_classes``, a classifier (the
            configuration's ``classifier`` module) that does not fit is left out and keeps its random
            initialisation, as for fine-tuning; everything else, and any local file, must match the model.
        pretrained_cfg: replaces the registered configuration (a :class:`PretrainedCfg` or a mapping of fields).
        pretrained_cfg_overlay: fields to change in it, e.g. ``{"url": ..., "sha256": ...}`` for a mirror.
        progress: show a progress bar while downloading.
        **kwargs: constructor arguments of ``model_cls``.
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay)
    model = model_cls(**kwargs)
    model.pretrained_cfg = cfg
    if pretrained is None or pretrained is False:
        return model
    new_head = ()
    num_classes = getattr(model, "num_classes", cfg.num_classes)
    if pretrained is True and cfg.classifier and num_classes != cfg.num_classes:
        new_head = (cfg.classifier,)
        _logger.info("%s: num_classes=%s differs from the pretrained %s; '%s' keeps its initialisation unless the "
                     "official file's classifier fits", variant, num_classes, cfg.num_classes, cfg.classifier)
    return load_weights(model, pretrained, url=cfg.url, sha256=cfg.sha256, file_name=cfg.file_name,
                        progress=progress, skip_mismatched=new_head)
