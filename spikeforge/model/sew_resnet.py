"""SpikingJelly's ``activation_based.model.sew_resnet``: the objects of :mod:`spikeforge.models.sew_resnet`."""

from ..models.sew_resnet import *  # noqa: F403 - SpikingJelly's public names, re-exported
from ..models.sew_resnet import (  # noqa: F401 - module-level names SpikingJelly's module has too
    BasicBlock,
    Bottleneck,
    __all__,
    conv1x1,
    conv3x3,
    model_urls,
    sew_function,
)
