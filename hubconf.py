"""torch.hub entry points of the spikeforge model zoo.

    model = torch.hub.load("/path/to/spikeforge", "snnmlp_t", source="local", pretrained=True)

``pretrained`` is ``True`` (official weights, cached in the torch.hub directory), a local checkpoint path, or
``None`` for random initialisation. Unlike the reference repository's hub entries (``lif=-1``, LIFs switched
off), these build SNN-MLP with the group size ``lif=4`` the released weights were trained with.
"""

dependencies = ["torch", "numpy"]

from spikeforge.models.snnmlp import snnmlp_b, snnmlp_s, snnmlp_t  # noqa: E402, F401
