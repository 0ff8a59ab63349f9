"""spikeforge.models.layers: DropPath, Mlp, PatchEmbed, PatchMerging against hand computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikeforge.models import layers
from spikeforge.models.layers import DropPath, Mlp, PatchEmbed, PatchMerging, drop_path


def test_drop_path_is_identity_in_eval_and_at_zero():
    x = torch.randn(4, 3, 5, 5)
    module = DropPath(0.5).eval()
    assert module(x) is x
    assert DropPath(0.0).train()(x) is x
    assert drop_path(x, 0.5, training=False) is x
    assert repr(DropPath(0.25)) == "DropPath(p=0.25)"
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="probability"):
            DropPath(bad)
        with pytest.raises(ValueError, match="probability"):
            drop_path(x, bad, training=True)


def test_drop_path_scaling_in_train_by_hand():
    # p = 0.25 keeps a sample with probability 3/4 and scales it by 4/3. With a fixed generator the keep mask is
    # the Bernoulli(3/4) draw of one value per sample, in sample order.
    p, n = 0.25, 64
    x = torch.randn(n, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    y = drop_path(x, p, training=True, generator=torch.Generator().manual_seed(1))
    keep = torch.empty(n).bernoulli_(0.75, generator=torch.Generator().manual_seed(1))
    for i in range(n):
        expected = x[i] * (4 / 3) if keep[i] == 1 else torch.zeros_like(x[i])
        torch.testing.assert_close(y[i], expected, rtol=1e-6, atol=0)
    assert 0 < keep.sum() < n  # both outcomes occur with this seed
    # the same generator state gives the same result; the module draws from the global generator
    assert torch.equal(y, drop_path(x, p, training=True, generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(2)
    from_module = DropPath(p).train()(x)
    torch.manual_seed(2)
    assert torch.equal(from_module, drop_path(x, p, training=True))


def test_drop_path_keeps_the_expectation_and_the_gradient_path():
    x = torch.ones(20000, 1)
    y = drop_path(x, 0.4, training=True, generator=torch.Generator().manual_seed(3))
    assert set(y.flatten().tolist()) == {0.0, torch.tensor(1 / 0.6).item()}  # float32 1/0.6
    assert y.mean().item() == pytest.approx(1.0, abs=0.03)  # about 5 standard errors
    w = torch.ones(3, 2, requires_grad=True)
    out = drop_path(w, 0.5, training=True, generator=torch.Generator().manual_seed(4))
    out.sum().backward()
    torch.testing.assert_close(w.grad, out.detach())  # d(w * m)/dw = m, and w = 1


def test_mlp_is_two_pointwise_convolutions_with_gelu():
    torch.manual_seed(0)
    mlp = Mlp(6, 12, drop=0.5).eval()  # dropout is inactive in eval
    x = torch.randn(2, 6, 4, 5)
    w1, b1 = mlp.fc1.weight[:, :, 0, 0], mlp.fc1.bias
    w2, b2 = mlp.fc2.weight[:, :, 0, 0], mlp.fc2.bias
    hidden = torch.nn.functional.gelu(torch.einsum("oc,nchw->nohw", w1, x) + b1.view(1, -1, 1, 1))
    expected = torch.einsum("oc,nchw->nohw", w2, hidden) + b2.view(1, -1, 1, 1)
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)
    assert list(mlp.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    wide = Mlp(6, out_features=3, act_layer=nn.ReLU, bias=False)
    assert wide.fc1.out_channels == 6 and wide.fc2.out_channels == 3 and isinstance(wide.act, nn.ReLU)
    assert wide.fc1.bias is None and wide(x).shape == (2, 3, 4, 5)


def test_mlp_dropout_in_training():
    torch.manual_seed(1)
    mlp = Mlp(4, 8, drop=0.5).train()
    x = torch.randn(3, 4, 6, 6)
    trained = mlp(x)
    evaluated = mlp.eval()(x)
    # the last dropout zeroes about half of the outputs and doubles the rest of its input
    zeros = (trained == 0).float().mean().item()
    assert 0.35 < zeros < 0.65 and (evaluated != 0).all()
    assert torch.equal(mlp(x), evaluated)  # eval is deterministic


def test_patch_embed_and_patch_merging_by_hand():
    torch.manual_seed(2)
    embed = PatchEmbed(patch_size=2, in_chans=1, embed_dim=3)
    assert embed.norm is None
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = embed(x)
    assert out.shape == (1, 3, 2, 2)
    # the top-left patch is x[0, 0, :2, :2]
    expected = (embed.proj.weight[:, 0] * x[0, 0, :2, :2]).sum((1, 2)) + embed.proj.bias
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    normed = PatchEmbed(2, 1, 3, norm_layer=layers.group_norm1)
    assert isinstance(normed.norm, nn.GroupNorm) and normed.norm.num_groups == 1
    assert list(normed.state_dict()) == ["proj.weight", "proj.bias", "norm.weight", "norm.bias"]

    merge = PatchMerging(1, norm_layer=lambda c: nn.Identity())
    with torch.no_grad():
        merge.reduction.weight.copy_(torch.eye(4)[:2].view(2, 4, 1, 1))  # keep sub-grids 0 and 1
    grid = torch.arange(16.0).view(1, 1, 4, 4)
    out = merge(grid)
    assert out.shape == (1, 2, 2, 2)
    assert out[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]  # (even h, even w)
    assert out[0, 1].tolist() == [[4.0, 6.0], [12.0, 14.0]]  # (odd h, even w)
    with pytest.raises(ValueError, match="even"):
        merge(torch.zeros(1, 1, 3, 4))
    assert layers.to_2tuple(7) == (7, 7) and layers.to_2tuple([3, 5]) == (3, 5)


def test_snnmlp_uses_the_shared_layers():
    from spikeforge.models import snnmlp

    assert snnmlp.DropPath is DropPath and snnmlp.Mlp is Mlp and snnmlp.PatchEmbed is PatchEmbed
    model = snnmlp.SNNMLP(embed_dim=8, depths=(1, 1, 1, 1), num_classes=3, drop_path_rate=0.3)
    kinds = {type(m) for m in model.modules()}
    assert {DropPath, Mlp, PatchEmbed, PatchMerging} <= kinds
