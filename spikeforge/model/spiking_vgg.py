"""SpikingJelly's ``activation_based.model.spiking_vgg``: the objects of :mod:`spikeforge.models.spiking_vgg`."""

from ..models.spiking_vgg import *  # noqa: F403 - SpikingJelly's public names, re-exported
from ..models.spiking_vgg import __all__, cfgs, model_urls  # noqa: F401 - names SpikingJelly's module has too
