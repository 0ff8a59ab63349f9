"""BatchNorm folding: on traced graphs (fold_batchnorm) and on plain modules (fold_conv_bn, bn_affine)."""

import math

import pytest
import torch
import torch.nn as nn

from spikeforge.ann2snn import UnsupportedNodeError, bn_affine, fold_batchnorm, fold_conv_bn, trace

from .helpers import Concat, randomise_bn


# ------------------------------------------------------------------------------------------ on a graph
@pytest.mark.parametrize("fuse", [True, False])
def test_batchnorm_folding_is_exact(fuse):
    torch.manual_seed(0)
    models = [
        nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 3, bias=False),
                      nn.BatchNorm2d(4)),
        nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.BatchNorm1d(7)),
        Concat(),
    ]
    inputs = [torch.randn(6, 3, 8, 8), torch.randn(6, 3, 2, 2), torch.randn(6, 2, 8, 8)]
    for model, x in zip(models, inputs):
        model = randomise_bn(model)
        folded = fold_batchnorm(trace(model), fuse=fuse)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
        with torch.no_grad():
            torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_folded_weights_match_formula():
    conv, bn = nn.Conv2d(1, 2, 1), randomise_bn(nn.BatchNorm2d(2))
    folded = fold_batchnorm(trace(nn.Sequential(conv, bn)))
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(folded.get_submodule("0").weight, conv.weight * s.view(-1, 1, 1, 1))
    torch.testing.assert_close(folded.get_submodule("0").bias, (conv.bias - bn.running_mean) * s + bn.bias)


def test_batchnorm_without_running_stats_cannot_be_folded():
    gm = trace(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False)))
    with pytest.raises(UnsupportedNodeError, match="track_running_stats"):
        fold_batchnorm(gm)


# ---------------------------------------------------------------------------------- on plain modules
def _bn64(n: int, affine: bool = True) -> nn.Module:
    bn = nn.BatchNorm1d(n, affine=affine, eps=1e-3).double()
    gen = torch.Generator().manual_seed(n)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(n, generator=gen, dtype=torch.float64) * 2 + 0.1)
        if affine:
            bn.weight.copy_(torch.randn(n, generator=gen, dtype=torch.float64))
            bn.bias.copy_(torch.randn(n, generator=gen, dtype=torch.float64))
    return bn


def test_bn_affine_matches_the_formula():
    bn = _bn64(5)
    scale, shift = bn_affine(bn)
    assert scale.dtype == shift.dtype == torch.float64
    for c in range(5):
        gamma, beta = bn.weight[c].item(), bn.bias[c].item()
        mean, var = bn.running_mean[c].item(), bn.running_var[c].item()
        s = gamma / math.sqrt(var + 1e-3)
        assert scale[c].item() == pytest.approx(s, rel=1e-14, abs=1e-15)
        assert shift[c].item() == pytest.approx(beta - mean * s, rel=1e-14, abs=1e-14)


def test_bn_affine_without_weight_and_bias_is_plain_normalisation():
    bn = _bn64(4, affine=False)
    scale, shift = bn_affine(bn)
    expected_scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(scale, expected_scale, rtol=1e-14, atol=0)
    torch.testing.assert_close(shift, -bn.running_mean * expected_scale, rtol=1e-14, atol=1e-15)
    x = torch.randn(7, 4, dtype=torch.float64)
    torch.testing.assert_close(x * scale + shift, bn.eval()(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer, x", [
    (nn.Conv2d(3, 4, 3, padding=1), torch.randn(2, 3, 5, 5)),
    (nn.Conv2d(4, 6, 3, groups=2, bias=False), torch.randn(2, 4, 6, 6)),
    (nn.Conv1d(2, 5, 3, stride=2), torch.randn(3, 2, 9)),
    (nn.Conv3d(2, 3, 2), torch.randn(1, 2, 4, 4, 4)),
    (nn.Linear(6, 5), torch.randn(4, 6)),
], ids=["conv2d", "conv2d-groups-nobias", "conv1d", "conv3d", "linear"])
@pytest.mark.parametrize("affine", [True, False])
def test_fold_conv_bn_equals_conv_then_eval_bn_in_float64(layer, x, affine):
    torch.manual_seed(0)
    layer = layer.double()
    out_channels = layer.weight.shape[0]
    bn = _bn64(out_channels, affine=affine).train()  # folding uses the running statistics, as eval does
    before = {k: v.clone() for k, v in list(layer.state_dict().items()) + list(bn.state_dict().items())}
    fused = fold_conv_bn(layer, bn)
    x = x.double()
    with torch.no_grad():
        bn_eval = nn.BatchNorm1d(out_channels, affine=affine, eps=bn.eps).double().eval()
        bn_eval.load_state_dict(bn.state_dict())
        y = layer(x)
        expected = bn_eval(y.flatten(2) if y.dim() > 3 else y).view_as(y)
        torch.testing.assert_close(fused(x), expected, rtol=0, atol=1e-12)
    after = {k: v for k, v in list(layer.state_dict().items()) + list(bn.state_dict().items())}
    assert all(torch.equal(before[k], after[k]) for k in before)  # inputs untouched
    assert fused is not layer and fused.bias is not None and fused.weight.dtype == torch.float64


def test_fold_conv_bn_keeps_dtype_and_requires_grad():
    conv = nn.Conv2d(2, 3, 1, bias=False)
    conv.weight.requires_grad_(False)
    fused = fold_conv_bn(conv, randomise_bn(nn.BatchNorm2d(3)))
    assert fused.weight.dtype == fused.bias.dtype == torch.float32
    assert not fused.weight.requires_grad and not fused.bias.requires_grad


def test_fold_conv_bn_refuses_what_it_cannot_fold():
    with pytest.raises(TypeError, match="ConvTranspose2d"):
        fold_conv_bn(nn.ConvTranspose2d(2, 3, 2), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="channels"):
        fold_conv_bn(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="running statistics"):
        fold_conv_bn(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, track_running_stats=False))
