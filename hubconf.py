"""torch.hub entry points of the spikeforge model zoo: one per registered model (``list_models()``).

    model = torch.hub.load("/path/to/spikeforge", "snnmlp_t", source="local", pretrained=True)

``pretrained`` is ``True`` (official weights, cached in the torch.hub directory), a local checkpoint path, or
``None`` for random initialisation; other keyword arguments go to the model (``num_classes=10``, ...). Unlike the
reference repository's hub entries (``lif=-1``, LIFs switched off), these build SNN-MLP with the group size
``lif=4`` the released weights were trained with. ``torch.hub.help`` shows each entry's docstring.
"""

dependencies = ["torch", "numpy"]

from spikeforge.models import list_models as _list_models  # noqa: E402
from spikeforge.models import model_entrypoint as _model_entrypoint  # noqa: E402


def _entries() -> dict:
    # torch.hub lists every public callable of this module, so the helpers above are imported under private names.
    entries = {name: _model_entrypoint(name) for name in _list_models()}
    undocumented = [name for name, entry in entries.items() if not (entry.__doc__ or "").strip()]
    if undocumented:
        raise RuntimeError(f"zoo entries without a docstring (torch.hub.help shows it): {', '.join(undocumented)}")
    return entries


globals().update(_entries())
