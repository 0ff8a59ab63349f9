"""The zoo registry: registration, listing and filters, lookups, close-match errors, no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

import spikeforge.models as zoo
from spikeforge.models import _registry
from spikeforge.models._pretrained import PRETRAINED_CFGS, PretrainedCfg


@pytest.fixture
def scratch_registry(monkeypatch):
    """The real registry's entries and configurations, in copies this test may change."""
    monkeypatch.setattr(_registry, "_entrypoints", dict(_registry._entrypoints))
    cfgs = dict(PRETRAINED_CFGS)
    monkeypatch.setattr(_registry, "PRETRAINED_CFGS", cfgs)
    return cfgs


def _entry(name):
    def entry(pretrained=None, **kwargs):
        """A stand-in model."""
        return nn.Identity()

    entry.__name__ = entry.__qualname__ = name
    return entry


def test_register_model_uses_the_function_name_and_refuses_duplicates(scratch_registry):
    toy = _registry.register_model(_entry("toy_net"))
    assert zoo.is_model("toy_net") and zoo.model_entrypoint("toy_net") is toy
    assert _registry.register_model(toy) is toy  # the same function again: nothing changes
    with pytest.raises(ValueError, match=r"'toy_net' is already registered \(by [\w.]*test_zoo_registry\)"):
        _registry.register_model(_entry("toy_net"))
    assert zoo.model_entrypoint("toy_net") is toy
    with pytest.raises(ValueError, match="public Python identifier"):
        _registry.register_model(_entry("_hidden"))
    assert isinstance(zoo.create_model("toy_net"), nn.Identity)


def test_duplicate_is_refused_in_the_real_registry_too():
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model(_entry("snnmlp_b"))
    assert zoo.model_entrypoint("snnmlp_b") is zoo.snnmlp_b


def test_list_models_pattern_filter(scratch_registry):
    builtin = set(zoo.list_models())
    for name in ("toy_a1", "toy_a2", "toy_b1"):
        _registry.register_model(_entry(name))
    assert zoo.list_models("toy_a*") == ["toy_a1", "toy_a2"]
    assert zoo.list_models(["toy_b*", "snnmlp_t"]) == ["snnmlp_t", "toy_b1"]  # any of several patterns
    assert zoo.list_models("toy_*1") == ["toy_a1", "toy_b1"]
    assert zoo.list_models("TOY_*") == []  # case-sensitive, as names are
    assert zoo.list_models() == sorted(zoo.list_models())
    assert set(zoo.list_models()) == builtin | {"toy_a1", "toy_a2", "toy_b1"}


def test_list_models_pretrained_filter(scratch_registry):
    released = zoo.list_models(pretrained=True)
    assert {"snnmlp_b", "snnmlp_s", "snnmlp_t"} <= set(released)
    _registry.register_model(_entry("toy_released"))
    _registry.register_model(_entry("toy_unreleased"))
    _registry.register_model(_entry("toy_no_cfg"))
    scratch_registry["toy_released"] = PretrainedCfg("toy_released", url="https://example.org/toy_released.pt")
    scratch_registry["toy_unreleased"] = PretrainedCfg("toy_unreleased", url=None)  # eval config, no weights
    assert zoo.list_models("toy_*") == ["toy_no_cfg", "toy_released", "toy_unreleased"]
    assert zoo.list_models("toy_*", pretrained=True) == ["toy_released"]
    assert zoo.list_models(pretrained=True) == sorted([*released, "toy_released"])
    assert _registry.get_pretrained_cfg("toy_no_cfg") is None
    assert _registry.get_pretrained_cfg("toy_unreleased").has_weights is False


def test_lookups_of_unknown_names_name_close_matches():
    assert not zoo.is_model("snnmlp_x")
    for lookup in (zoo.model_entrypoint, zoo.get_pretrained_cfg, zoo.create_model):
        with pytest.raises(ValueError, match=r"unknown model name 'snnmlp_tt'; did you mean snnmlp_t\b"):
            lookup("snnmlp_tt")
    with pytest.raises(ValueError, match=r"unknown model name 'snmlp_b'; did you mean snnmlp_b, "):
        zoo.create_model("snmlp_b")
    # nothing close: every name is listed instead
    with pytest.raises(ValueError, match=r"unknown model name 'vgg16'; available: (\w+, )*snnmlp_b, snnmlp_s, "):
        zoo.model_entrypoint("vgg16")
    with pytest.raises(ValueError, match="unknown model name"):
        zoo.model_entrypoint(["not", "a", "name"])


def test_every_registered_model_has_its_pretrained_cfg_and_back():
    names = zoo.list_models()
    assert {"snnmlp_b", "snnmlp_s", "snnmlp_t"} <= set(names)
    assert set(PRETRAINED_CFGS) == set(names)
    for name in names:
        cfg = zoo.get_pretrained_cfg(name)
        assert isinstance(cfg, PretrainedCfg) and cfg.architecture == name
        assert (zoo.model_entrypoint(name).__doc__ or "").strip()


def test_modules_import_on_their_own_without_cycles():
    # Importing an architecture module first (it pulls in the package, which imports it again) registers it once.
    code = ("import spikeforge.models.snnmlp as m, spikeforge.models as z\n"
            "print(z.list_models(), z.model_entrypoint('snnmlp_t') is m.snnmlp_t)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    listed, same = result.stdout.strip().rsplit(" ", 1)
    assert same == "True" and listed == str(zoo.list_models())


def test_no_late_imports_and_no_imports_from_the_package_init():
    package = Path(zoo.__file__).parent
    submodules = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir() if p.is_dir()}
    init = ast.parse((package / "__init__.py").read_text())
    body = init.body[1:] if isinstance(init.body[0], ast.Expr) else init.body  # after the docstring
    kinds = [isinstance(node, (ast.Import, ast.ImportFrom)) for node in body]
    assert kinds == sorted(kinds, reverse=True), "__init__.py imports everything first (no late imports)"
    for path in package.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            # "from . import x" must name a submodule, never something defined by __init__ (an import cycle)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
                names = {alias.name for alias in node.names}
                assert names <= submodules, f"{path.name} imports {names - submodules} from the package __init__"
