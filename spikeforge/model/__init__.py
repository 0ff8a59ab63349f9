"""SpikingJelly's ``activation_based.model`` import path: ``from spikeforge.model import spiking_resnet``.

The submodules ``spiking_resnet``, ``sew_resnet`` and ``spiking_vgg`` are the zoo's architecture modules
(:mod:`spikeforge.models.spiking_resnet` and so on) under SpikingJelly's names: one implementation, two import paths.
The builders take SpikingJelly's arguments (``spiking_resnet.spiking_resnet18(pretrained=False,
spiking_neuron=neuron.IFNode, surrogate_function=surrogate.ATan(), detach_reset=True)``) and are also zoo entries
(``spikeforge.models.create_model("spiking_resnet18")``).
"""

from . import sew_resnet, spiking_resnet, spiking_vgg

__all__ = ["spiking_resnet", "sew_resnet", "spiking_vgg"]
