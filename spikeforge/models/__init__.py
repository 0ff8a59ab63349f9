"""The spikeforge model zoo.

Every architecture lives in its own module and registers its named variants with :func:`register_model` (see
``_registry.py``); importing this package imports them all. :func:`create_model` builds one by name,
:func:`list_models` lists them::

    from spikeforge.models import create_model, list_models
    list_models()                                   # ['snnmlp_b', 'snnmlp_s', 'snnmlp_t']
    list_models(pretrained=True)                    # those with downloadable official weights
    model = create_model("snnmlp_t", pretrained=True).eval()        # official ImageNet weights
    model = create_model("snnmlp_t", pretrained="snnmlp_t.pt")      # a local checkpoint
    model.pretrained_cfg.mean                                       # how the weights expect their input

Every variant has a :class:`PretrainedCfg` (``_pretrained.py``) and is built by :func:`build_model_with_cfg`
(``_builder.py``); shared blocks are in :mod:`spikeforge.models.layers`. The repository's ``hubconf.py`` exposes
every registered entry to ``torch.hub``.
"""

from . import layers, sew_resnet, spiking_resnet, spiking_vgg  # noqa: F401 - SpikingJelly's zoo names
from ._builder import build_model_with_cfg, resolve_pretrained_cfg
from ._factory import create_model
from ._pretrained import PRETRAINED_CFGS, PretrainedCfg
from ._registry import get_pretrained_cfg, is_model, list_models, model_entrypoint, register_model
from ._weights import WeightsHashError, WeightsMismatchError, load_checkpoint, load_weights
from .metaspikformer import MetaSpikeFormer, MetaSpikeFormerFeatures  # noqa: F401 - registers metaspikformer_*
from .profile import ModelProfile, profile_model
from .snnmlp import SNNMLP, GroupLIF, group_lif, snnmlp_b, snnmlp_s, snnmlp_t
from .stbp import stbp_cifarnet, stbp_mnistnet, stbp_resnet18  # noqa: F401 - registers the STBP models

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "is_model",
    "model_entrypoint",
    "get_pretrained_cfg",
    "PretrainedCfg",
    "PRETRAINED_CFGS",
    "build_model_with_cfg",
    "resolve_pretrained_cfg",
    "load_weights",
    "load_checkpoint",
    "WeightsMismatchError",
    "WeightsHashError",
    "layers",
    "profile_model",
    "ModelProfile",
    "SNNMLP",
    "GroupLIF",
    "group_lif",
    "snnmlp_t",
    "snnmlp_s",
    "snnmlp_b",
    "MetaSpikeFormer",
    "MetaSpikeFormerFeatures",
]
