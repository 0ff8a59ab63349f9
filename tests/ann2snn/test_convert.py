"""Whole conversions with Converter: rates approach the ANN, graphs with branches, step modes, arguments."""

import pytest
import torch
import torch.nn as nn

import spikeforge.ann2snn as ann2snn
from spikeforge import functional
from spikeforge.ann2snn import ActivationObserver, Converter, IFActivation, SpikingMaxPool
from spikeforge.neuron import IFNode

from .helpers import Concat, MaxPoolNet, Residual, convert, loader, randomise_bn, rate


def _assert_rate_converges(model, x, **kw):
    with torch.no_grad():
        ref = model(x)
        snn = convert(model, x, **kw)
        errors = [(rate(snn, x, t) - ref).abs().max().item() for t in (16, 128, 1024)]
    scale = ref.abs().max().item()
    assert errors[2] < errors[0], errors
    assert errors[2] < 0.05 * scale, (errors, scale)
    return snn


def test_mlp_output_rate_approaches_ann():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 16), nn.ReLU(),
                        nn.Linear(16, 4), nn.ReLU()).eval()
    _assert_rate_converges(mlp, torch.rand(64, 10))


@pytest.mark.parametrize("options", [{}, {"half_threshold": True}, {"channel_wise": True},
                                     {"signed_spikes": True, "readout": "membrane"}])
def test_cnn_output_rate_approaches_ann(options):
    torch.manual_seed(0)
    cnn = randomise_bn(nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                                     nn.Conv2d(6, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                                     nn.Flatten(), nn.Linear(6, 5), nn.ReLU()))
    _assert_rate_converges(cnn, torch.rand(48, 1, 10, 10), **options)


def test_residual_graph_converts_and_runs():
    torch.manual_seed(0)
    model = randomise_bn(Residual())
    snn = _assert_rate_converges(model, torch.rand(32, 2, 6, 6))
    neurons = [m for m in snn.modules() if isinstance(m, IFActivation)]
    assert len(neurons) == 3  # F.relu + two call sites of the shared nn.ReLU


def test_concat_graph_converts_and_runs():
    torch.manual_seed(0)
    _assert_rate_converges(randomise_bn(Concat()), torch.rand(32, 2, 8, 8))


def test_maxpool_graph_converts_and_runs():
    torch.manual_seed(0)
    model = MaxPoolNet().eval()
    x = torch.rand(32, 1, 8, 8)
    snn = _assert_rate_converges(model, x)
    assert sum(isinstance(m, SpikingMaxPool) for m in snn.modules()) == 2
    scales = [m.scale.item() for m in snn.modules() if isinstance(m, IFActivation)]
    assert scales[0] <= 6.0 and scales[1] <= 2.0  # the clip of ReLU6 / Hardtanh(0, 2) caps the threshold


def test_single_step_multi_step_and_static_agree():
    torch.manual_seed(0)
    snn = convert(randomise_bn(Residual()), torch.rand(32, 2, 6, 6), half_threshold=True)
    x = torch.rand(5, 2, 6, 6)
    functional.reset_net(snn)
    single = torch.stack([snn(x) for _ in range(7)])
    functional.reset_net(snn)
    functional.set_step_mode(snn, "m")
    multi = torch.cat([snn(x.expand(3, *x.shape)), snn(x.expand(4, *x.shape))])
    functional.reset_net(snn)
    static = snn.run_static(x, 7)
    torch.testing.assert_close(multi, single)
    torch.testing.assert_close(static, single)


def test_fused_neuron_matches_core_ifnode_between_scalers():
    torch.manual_seed(0)
    model = randomise_bn(Residual())
    x = torch.rand(16, 2, 6, 6)
    fused = convert(model, x, neuron="fused")
    core = convert(model, x, neuron="core")
    assert any(isinstance(m, IFNode) for m in core.modules())
    assert not any(isinstance(m, IFNode) for m in fused.modules())
    torch.testing.assert_close(rate(fused, x, 32), rate(core, x, 32), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs, arg", [
    ({"mode": "median"}, "mode"), ({"mode": 1.5}, "mode"), ({"mode": "150%"}, "mode"),
    ({"momentum": 2.0}, "momentum"), ({"readout": "voltage"}, "readout"), ({"dataloader": None}, "dataloader"),
])
def test_bad_arguments_name_the_argument(kwargs, arg):
    kwargs = {"dataloader": [torch.randn(2, 3)], **kwargs}
    with pytest.raises(ValueError, match=arg):
        Converter(**kwargs)


def test_thresholds_are_the_activation_observer_statistics():
    # The converter calibrates with ActivationObserver: the same observer after the same layer gives the scale.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3), nn.ReLU()).eval()
    x = torch.rand(96, 5)
    snn = Converter(loader(x), mode="99%", momentum=0.1, progress=False)(model)
    scales = [m.scale for m in snn.modules() if isinstance(m, IFActivation)]
    observers = [ActivationObserver("99%", momentum=0.1), ActivationObserver("99%", momentum=0.1)]
    with torch.no_grad():
        for xb, _ in loader(x):
            observers[1](model[3](model[2](observers[0](model[1](model[0](xb))))))
    assert len(scales) == 2
    for scale, observer in zip(scales, observers):
        assert torch.equal(scale, observer.stat.reshape(()))


def test_the_ann_is_left_untouched():
    model = randomise_bn(Residual())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convert(model, torch.rand(8, 2, 6, 6))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_public_names():
    assert sorted(ann2snn.__all__) == sorted([
        "Converter", "ConvertedSNN", "UnsupportedNodeError", "fold_batchnorm", "trace", "evaluate",
        "plot_accuracy_vs_T", "VoltageScaler", "ConversionIFNode", "IFActivation", "SpikingMaxPool", "TiledAvgPool2d",
        "MembraneReadout", "ChannelAffine", "fold_conv_bn", "bn_affine", "ActivationObserver", "RateCodingRecipe",
        "FXConversionRecipe", "ConversionRecipe",
    ])
    assert all(hasattr(ann2snn, name) for name in ann2snn.__all__)
