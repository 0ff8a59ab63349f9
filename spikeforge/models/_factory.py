"""``create_model``: build a registered model by name."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..errors import UsageError, UserError
from ._registry import is_model, model_entrypoint, unknown_model_message

__all__ = ["create_model"]


class ModelArgumentError(UserError, TypeError):
    """``create_model`` was given a keyword argument the architecture does not take."""


def create_model(name: str, pretrained=None, *, pretrained_cfg_overlay: Mapping | None = None,
                 **kwargs) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: one of :func:`list_models`; an unknown name raises ``ValueError`` naming the close matches.
        pretrained: ``None``/``False`` for random initialisation, ``True`` for the official weights (downloaded
            once into the torch.hub cache, hash-checked when the hash is recorded), a path to a local checkpoint
            (a bare state_dict or ``{"model": state_dict}``), or a state_dict.
        pretrained_cfg_overlay: fields of the model's :class:`PretrainedCfg` to replace, e.g.
            ``{"url": mirror_url}``.
        **kwargs: constructor arguments overriding the named configuration, e.g. ``num_classes`` (with
            ``pretrained=True`` and another ``num_classes`` the classifier keeps its random initialisation) or
            ``drop_path_rate``. Arguments given as ``None`` are dropped, so the variant's own value applies.
    """
    if not isinstance(name, str) or not is_model(name):
        raise UsageError(unknown_model_message(name))
    entry = model_entrypoint(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if pretrained_cfg_overlay is not None:
        kwargs["pretrained_cfg_overlay"] = pretrained_cfg_overlay
    try:
        return entry(pretrained=pretrained, **kwargs)
    except TypeError as error:
        if "unexpected" not in str(error):
            raise
        raise ModelArgumentError(f"create_model({name!r}): {error} (help(spikeforge.models.{name}) lists the "
                                 f"model's arguments)") from None
