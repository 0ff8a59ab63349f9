"""SNN-MLP: the group LIF and the model against the reference vectors, hand-computed cases and the spec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from spikeforge.models import SNNMLP, GroupLIF, create_model, group_lif, profile_model

SHARED = Path(__file__).resolve().parents[3] / "shared"
VECTORS = SHARED / "specs" / "vectors" / "snnmlp_public.pt"
TINY_KEYS = SHARED / "specs" / "checkpoints" / "snnmlp_tiny.txt"


@pytest.fixture(scope="module")
def vectors():
    if not VECTORS.is_file():
        pytest.skip(f"reference vectors not found at {VECTORS} (the shared specs directory is missing)")
    return torch.load(VECTORS, weights_only=True)


def _grad_or_zero(t: torch.Tensor) -> torch.Tensor:
    # A LIF whose whole axis passes through is not in the graph; the reference reports an exact 0 gradient.
    return torch.zeros_like(t) if t.grad is None else t.grad


# ---------------------------------------------------------------------------------------------------------------
# group LIF, hand-computed


def _lif_line(values, tau, v_th, lif, dim, grad=None):
    """Run one line of values through group_lif along H (dim=2) or W (dim=3); returns y, dx, dtau, dvth."""
    line = torch.tensor(values, dtype=torch.float32)
    shape = (1, 1, len(values), 1) if dim == 2 else (1, 1, 1, len(values))
    x = line.reshape(shape).requires_grad_()
    tau_t = torch.tensor([tau], requires_grad=True)
    vth_t = torch.tensor([v_th], requires_grad=True)
    y = group_lif(x, tau_t, vth_t, lif, dim)
    g = torch.ones_like(line) if grad is None else torch.tensor(grad, dtype=torch.float32)
    (y * g.reshape(shape)).sum().backward()
    return y.flatten(), x.grad.flatten(), _grad_or_zero(tau_t), _grad_or_zero(vth_t)


@pytest.mark.parametrize("dim", [2, 3])
def test_group_lif_hand_computed_ties_and_tail(dim):
    # lif=4, tau=0.5, Vth=1 on [1, .5, 2, .25 | 3, -1]; all values dyadic so every step is exact.
    #   j0: u=1.0   tie, no fire (strict >) -> y=Vth=1,   carry 1
    #   j1: u=.5*1+.5=1.0  tie again        -> y=1,       carry 1
    #   j2: u=.5*1+2=2.5   fires            -> y=2.5,     carry 0 (hard reset)
    #   j3: u=0+.25        no fire          -> y=1
    #   tail (6 mod 4 = 2 positions): copied.
    # Backward with g=[1..6], fire mask s=[0,0,1,0]:
    #   dL/du3 = 0, dL/du2 = g2 = 3, dL/du1 = tau*(1-s1)*3 = 1.5, dL/du0 = .5*1.5 = .75; tail: 5, 6
    #   dVth = g0+g1+g3 = 7;  du/dtau = [0, u0=1, u1+tau*1=1.5, 0] -> dtau = g2*1.5 = 4.5
    y, dx, dtau, dvth = _lif_line([1.0, 0.5, 2.0, 0.25, 3.0, -1.0], 0.5, 1.0, 4, dim, grad=[1, 2, 3, 4, 5, 6])
    assert y.tolist() == [1.0, 1.0, 2.5, 1.0, 3.0, -1.0]
    assert dx.tolist() == [0.75, 1.5, 3.0, 0.0, 5.0, 6.0]
    assert dvth.item() == 7.0
    assert dtau.item() == 4.5


def test_group_lif_fire_resets_and_groups_restart():
    # lif=2, tau=0.5, Vth=0: [1, 1 | -1, 0.5 | -2]
    #   group 0: u0=1 fires (y=1, carry 0); u1 = 0 + 1 = 1 fires -> y=1
    #   group 1 restarts: u0=-1 (y=0, carry -1); u1 = .5*-1 + .5 = 0, tie -> y=Vth=0
    #   tail: -2 copied
    y, dx, dtau, dvth = _lif_line([1.0, 1.0, -1.0, 0.5, -2.0], 0.5, 0.0, 2, 2)
    assert y.tolist() == [1.0, 1.0, 0.0, 0.0, -2.0]
    # fired [1,1,0,0]: dx0 = 1 (reset cuts the path from u1), dx1 = 1, group 1 emits Vth -> no input gradient
    assert dx.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert dvth.item() == 2.0  # the two non-firing grouped positions
    assert dtau.item() == 0.0  # u1 in group 0 fired but o_1 = 0 after the reset; group 1 never fires


def test_group_lif_short_axis_passes_through():
    y, dx, dtau, dvth = _lif_line([0.375, -0.75, 2.0], 0.25, 0.1, 4, 3, grad=[1.0, 2.0, 3.0])
    assert y.tolist() == [0.375, -0.75, 2.0]
    assert dx.tolist() == [1.0, 2.0, 3.0]
    assert dtau.item() == 0.0 and dvth.item() == 0.0


def test_group_lif_infinite_inputs():
    # lif=2, tau=0.5, Vth=0: [+inf, 1 | -inf, 0.5]
    #   +inf fires (y=inf) and resets, so the next step sees u = 0*tau + 1 = 1 -> fires, y=1
    #   -inf does not fire (y=Vth=0) and carries -inf: u = 0.5*-inf + 0.5 = -inf -> y=0
    for grad_enabled in (True, False):
        with torch.set_grad_enabled(grad_enabled):
            y = group_lif(torch.tensor([[[[float("inf"), 1.0, float("-inf"), 0.5]]]]), 0.5, 0.0, 2, 3)
        assert y.flatten().tolist() == [float("inf"), 1.0, 0.0, 0.0]


@pytest.mark.parametrize("lif", [1, 2, 3, 4, 5])
def test_group_lif_inference_and_training_paths_agree(lif):
    # Without autograd an in-place implementation runs; it must give bit-identical outputs, ties included.
    gen = torch.Generator().manual_seed(lif)
    x = torch.randint(-8, 9, (2, 3, 11, 13), generator=gen).float() / 8  # dyadic: many exact ties
    for dim in (2, 3):
        tau = torch.tensor([0.5], requires_grad=True)
        vth = torch.tensor([0.25], requires_grad=True)
        trained = group_lif(x, tau, vth, lif, dim)
        assert trained.requires_grad
        with torch.inference_mode():
            inferred = group_lif(x, tau, vth, lif, dim)
        assert torch.equal(trained.detach(), inferred)
        assert torch.equal(group_lif(x.double(), 0.5, 0.25, lif, dim), inferred.double())


def test_group_lif_lines_are_independent():
    # Along H each (n, c, w) column is its own line: compare a batch against running its columns one at a time.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 9, 5, generator=gen)
    batched = group_lif(x, 0.4, 0.2, 4, 2)
    for n in range(2):
        for c in range(3):
            for w in range(5):
                column = x[n, c, :, w].reshape(1, 1, 9, 1)
                assert torch.equal(group_lif(column, 0.4, 0.2, 4, 2).flatten(), batched[n, c, :, w])
    # and scanning W is scanning H of the transposed tensor
    assert torch.equal(group_lif(x, 0.4, 0.2, 4, 3), group_lif(x.transpose(2, 3), 0.4, 0.2, 4, 2).transpose(2, 3))


def test_group_lif_gradcheck_float64():
    gen = torch.Generator().manual_seed(5)
    x = (0.6 * torch.randn(2, 2, 7, 6, generator=gen, dtype=torch.float64)).requires_grad_()
    tau = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    vth = torch.tensor([0.05], dtype=torch.float64, requires_grad=True)
    # the fixed seed keeps every membrane far from the threshold, where finite differences are valid
    for dim in (2, 3):
        assert torch.autograd.gradcheck(lambda a, t, v, d=dim: group_lif(a, t, v, 3, d), (x, tau, vth))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_group_lif_low_precision_runs_in_float32(dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 10, 9, generator=gen).to(dtype)
    for dim in (2, 3):
        y = group_lif(x, torch.tensor([0.25]), torch.tensor([0.1]), 4, dim)
        assert y.dtype == dtype
        expected = group_lif(x.float(), torch.tensor([0.25]), torch.tensor([0.1]), 4, dim).to(dtype)
        assert torch.equal(y, expected)
    # gradients reach float32 parameters from a low-precision input
    lif = GroupLIF(4, dim=2)
    x.requires_grad_()
    lif(x).float().sum().backward()
    assert x.grad.dtype == dtype and lif.tau.grad is not None and lif.Vth.grad is not None


def test_group_lif_identity_and_argument_errors():
    x = torch.randn(1, 2, 8, 8)
    assert GroupLIF(-1, dim=2)(x) is x
    with pytest.raises(ValueError, match="lif"):
        group_lif(x, 0.25, 0.1, 0, 2)
    with pytest.raises(ValueError, match="dim"):
        GroupLIF(4, dim=1)
    with pytest.raises(ValueError, match="dim"):
        group_lif(x, 0.25, 0.1, 4, 4)
    fixed = GroupLIF(4, fix_tau=True, fix_vth=True, init_tau=0.5, init_vth=0.2)
    assert list(fixed.state_dict()) == []
    assert torch.equal(fixed(x), group_lif(x, 0.5, 0.2, 4, 2))


# ---------------------------------------------------------------------------------------------------------------
# group LIF and model against the reference vectors


def test_single_lif_cases_match_reference(vectors):
    for i, case in enumerate(vectors["lif_unit_cases"]):
        lif = GroupLIF(case["lif"], init_tau=case["tau"], init_vth=case["Vth"], dim=case["dim"])
        x = case["input"].clone().requires_grad_()
        y = lif(x)
        (y * case["grad_output"]).sum().backward()
        torch.testing.assert_close(y, case["output"], atol=1e-6, rtol=0, msg=f"case {i} output")
        torch.testing.assert_close(x.grad, case["grad_input"], atol=1e-6, rtol=0, msg=f"case {i} grad_input")
        torch.testing.assert_close(_grad_or_zero(lif.tau), case["grad_tau"], atol=1e-5, rtol=0,
                                   msg=f"case {i} grad_tau")
        torch.testing.assert_close(_grad_or_zero(lif.Vth), case["grad_Vth"], atol=1e-5, rtol=0,
                                   msg=f"case {i} grad_Vth")


def test_single_lif_tie_case_uses_strict_comparison(vectors):
    case = vectors["lif_unit_cases"][0]
    assert case["exact_ties"] > 0
    ties = case["input"][:, :, [0, 4], :] == case["Vth"]  # planted at the group starts
    assert ties.sum().item() == case["exact_ties"]
    y = group_lif(case["input"], case["tau"], case["Vth"], case["lif"], case["dim"])
    # a tie does not fire: it emits Vth and carries its full membrane into the next row
    assert torch.all(y[:, :, [0, 4], :][ties] == case["Vth"])
    torch.testing.assert_close(y, case["output"], atol=1e-6, rtol=0)
    # the tail row (9 = 2*4 + 1) is a copy of the input
    assert torch.equal(y[:, :, 8, :], case["input"][:, :, 8, :])


def _reference_model(vectors) -> SNNMLP:
    model = SNNMLP(**vectors["config"]).eval()
    model.load_state_dict(vectors["state_dict"])
    return model


def test_model_logits_and_stages_match_reference(vectors):
    model = _reference_model(vectors)
    stages = {}
    for name in vectors["stage_outputs"]:
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: stages.__setitem__(name, o))
    logits = model(vectors["input"])
    torch.testing.assert_close(logits, vectors["output"], atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # the in-place inference implementation of the LIF
        torch.testing.assert_close(model(vectors["input"]), vectors["output"], atol=1e-5, rtol=1e-5)
    for name, expected in vectors["stage_outputs"].items():
        torch.testing.assert_close(stages[name], expected, atol=1e-4, rtol=1e-4, msg=name)

    loss = (logits * vectors["grad"]["grad_weight"]).sum()
    loss.backward()
    params = dict(model.named_parameters())
    for name, expected in vectors["grad"]["lif_param_grads"].items():
        torch.testing.assert_close(_grad_or_zero(params[name]), expected, atol=1e-4, rtol=1e-4, msg=name)
    torch.testing.assert_close(params["head.weight"].grad, vectors["grad"]["head_weight_grad"], atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(params["patch_embed.proj.weight"].grad,
                               vectors["grad"]["patch_embed_proj_weight_grad"], atol=1e-4, rtol=1e-4)


def test_reference_config_parameter_count(vectors):
    model = SNNMLP(**vectors["config"])
    assert sum(p.numel() for p in model.parameters()) == vectors["info"]["n_params"]
    assert list(model.state_dict()) == list(vectors["state_dict"])


def test_activation_checkpointing_matches(vectors):
    model = _reference_model(vectors)
    config = dict(vectors["config"], use_checkpoint=True)
    checkpointed = SNNMLP(**config).eval()
    checkpointed.load_state_dict(vectors["state_dict"])
    x = vectors["input"]
    (model(x) * vectors["grad"]["grad_weight"]).sum().backward()
    (checkpointed(x) * vectors["grad"]["grad_weight"]).sum().backward()
    for (name, p), q in zip(model.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(_grad_or_zero(q), _grad_or_zero(p), atol=1e-6, rtol=1e-6, msg=name)


def test_model_bfloat16_forward(vectors):
    model = _reference_model(vectors)
    expected = model(vectors["input"])
    low = model.to(torch.bfloat16)(vectors["input"].to(torch.bfloat16))
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    # bf16 keeps ~3 significant digits; a few threshold flips are allowed, gross errors are not
    assert (low.float() - expected).abs().max() < 0.1 * expected.abs().max() + 0.05


# ---------------------------------------------------------------------------------------------------------------
# released configurations


def test_tiny_state_dict_matches_reference_listing():
    if not TINY_KEYS.is_file():
        pytest.skip(f"reference key listing not found at {TINY_KEYS} (the shared specs directory is missing)")
    expected = []
    for line in TINY_KEYS.read_text().splitlines():
        if line.strip():
            match = re.fullmatch(r"(\S+) \(([\d, ]*)\)\s*", line)
            assert match, f"unparsed line {line!r}"
            shape = tuple(int(s) for s in match.group(2).replace(" ", "").split(",") if s)
            expected.append((match.group(1), shape))
    with torch.device("meta"):
        model = create_model("snnmlp_t")
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert len(expected) == 353


@pytest.mark.parametrize("name, params, gmacs", [
    ("snnmlp_t", 28_335_736, 4.363),
    ("snnmlp_s", 49_703_080, 8.533),
    ("snnmlp_b", 87_897_288, 15.154),
])
def test_released_parameter_counts_and_macs(name, params, gmacs):
    result = profile_model(name, img_size=224)
    assert result.params == params
    assert round(result.macs / 1e9, 3) == gmacs
    assert set(result.macs_by_op) <= {"convolution", "addmm", "mm"}


def test_released_configurations_use_lif4_and_training_init():
    with torch.device("meta"):
        model = create_model("snnmlp_s")
    lifs = [m for m in model.modules() if isinstance(m, GroupLIF)]
    assert len(lifs) == 2 * 24 and all(m.lif == 4 for m in lifs)
    small = create_model("snnmlp_t", embed_dim=8, depths=(1, 1, 1, 1), num_classes=3)
    assert small.layers[0].blocks[0].lif_module.lif1.tau.item() == 0.25
    assert small.layers[0].blocks[0].lif_module.lif2.Vth.item() == pytest.approx(0.1)
    assert small(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_norm_layer_replaces_all_but_the_lif_module_norms():
    def batch_norm(channels):
        return torch.nn.BatchNorm2d(channels)

    model = SNNMLP(embed_dim=8, depths=(1, 1, 1, 1), num_classes=3, norm_layer=batch_norm)
    kinds = {name: type(m).__name__ for name, m in model.named_modules() if name.endswith("norm") or "norm" in name}
    assert kinds["patch_embed.norm"] == kinds["norm"] == kinds["layers.0.downsample.norm"] == "BatchNorm2d"
    assert kinds["layers.1.blocks.0.norm1"] == kinds["layers.1.blocks.0.norm2"] == "BatchNorm2d"
    assert kinds["layers.1.blocks.0.lif_module.norm3"] == "GroupNorm"
    assert "patch_embed.norm" not in dict(SNNMLP(embed_dim=8, depths=(1, 1), patch_norm=False).named_modules())
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_snnmlp_argument_errors():
    with pytest.raises(TypeError, match="norm_layer"):
        SNNMLP(norm_layer="layernorm")
    with pytest.raises(TypeError, match="window_size"):
        SNNMLP(window_size=7)
    with pytest.raises(ValueError, match="depths"):
        SNNMLP(depths=[])
    model = SNNMLP(embed_dim=8, depths=(1, 1, 1, 1), num_classes=3)
    with pytest.raises(ValueError, match="even"):
        model(torch.randn(1, 3, 36, 36))  # stage 0 is 9x9
