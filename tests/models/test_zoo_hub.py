"""hubconf.py: its entry points are exactly the registry's, documented, and load through torch.hub."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from spikeforge.models import _registry, list_models, model_entrypoint

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(embed_dim=8, depths=(1, 1, 1, 1), num_classes=10)


def _load_hubconf():
    # torch.hub.list/help only accept GitHub repositories, so import hubconf.py the way they do and apply their rule:
    # an entry point is a public callable of the module.
    spec = importlib.util.spec_from_file_location("spikeforge_hubconf_test", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hub_list(module) -> list[str]:
    return sorted(f for f in dir(module) if callable(getattr(module, f)) and not f.startswith("_"))


def test_hub_entries_equal_the_registry():
    hubconf = _load_hubconf()
    assert _hub_list(hubconf) == list_models()
    for name in list_models():
        entry = getattr(hubconf, name)
        assert entry is model_entrypoint(name)
        assert entry.__doc__.strip()  # what torch.hub.help returns
        assert "pretrained" in entry.__doc__


def test_hubconf_follows_new_registrations_and_refuses_undocumented_ones(monkeypatch):
    monkeypatch.setattr(_registry, "_entrypoints", dict(_registry._entrypoints))

    def toy_hub_net(pretrained=None, **kwargs):
        """A documented stand-in."""
        return nn.Identity()

    _registry.register_model(toy_hub_net)
    assert "toy_hub_net" in _hub_list(_load_hubconf())

    def toy_silent_net(pretrained=None, **kwargs):
        return nn.Identity()

    _registry.register_model(toy_silent_net)
    with pytest.raises(RuntimeError, match="without a docstring.*toy_silent_net"):
        _load_hubconf()


def test_torch_hub_load_passes_keywords_through(tmp_path):
    model = torch.hub.load(str(REPO), "snnmlp_s", source="local", pretrained_cfg_overlay={"crop_pct": 1.0}, **SMALL)
    assert model.pretrained_cfg.architecture == "snnmlp_s" and model.pretrained_cfg.crop_pct == 1.0
    assert model.head.out_features == 10
