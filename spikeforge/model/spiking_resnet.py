"""SpikingJelly's ``activation_based.model.spiking_resnet``: the objects of :mod:`spikeforge.models.spiking_resnet`."""

from ..models.spiking_resnet import *  # noqa: F403 - SpikingJelly's public names, re-exported
from ..models.spiking_resnet import (  # noqa: F401 - module-level names SpikingJelly's module has too
    BasicBlock,
    Bottleneck,
    __all__,
    conv1x1,
    conv3x3,
    load_torchvision_weights,
    model_urls,
)
