"""ann2snn in SpikingJelly 2.0's recipe style next to spikeforge's keyword style.

``Converter(recipe=RateCodingRecipe(dataloader=..., mode=...)).convert(ann)`` (and SpikingJelly's positional
``Converter(recipe, device)``) must build the same network as ``Converter(dataloader=..., mode=...)(ann)``: same
thresholds, same outputs (CI). A hand-computed calibration checks the recipe's momentum and mode arguments; custom
recipes run SpikingJelly's hooks in order. With SpikingJelly 2.0 installed, its own
``Converter(RateCodingRecipe(...)).convert(ann)`` gives the same scales and the same outputs over T steps.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch import fx

from spikeforge import ann2snn, functional, neuron
from spikeforge.ann2snn import Converter, FXConversionRecipe, RateCodingRecipe


class Net(nn.Module):
    """Conv-BN-ReLU, a residual addition, avg-pool, Linear-ReLU, Linear: every kind of node the recipe meets."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(6 * 4 * 4, 12)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(12, 4)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.conv2(x) + x)
        x = self.pool(x).flatten(1)
        return self.fc2(self.relu3(self.fc1(x)))


def _ann():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.3, 0.3)
        net.bn1.running_var.uniform_(0.5, 1.5)
        net.bn1.weight.uniform_(0.5, 1.5)
    return net.eval()


def _data(n=96, batch=32):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 2, 8, 8, generator=gen)
    return x, [(x[i:i + batch], torch.zeros(batch, dtype=torch.long)) for i in range(0, n, batch)]


def _scales(snn):
    return [m.scale.detach().clone() for m in snn.modules() if isinstance(m, ann2snn.IFActivation)]


def _rates(snn, x, steps=24):
    functional.reset_net(snn)
    with torch.no_grad():
        return snn.run_static(x, steps).mean(0)


@pytest.mark.parametrize("options", [
    dict(mode="Max"),
    dict(mode=0.5, momentum=0.3),
    dict(mode="99.9%"),
    dict(mode="max", channel_wise=True, half_threshold=True),
    dict(mode="max", fuse_flag=False),
], ids=["max", "fraction-momentum", "percentile", "channelwise-half", "no-fuse"])
def test_recipe_and_keyword_styles_build_the_same_network(options):
    x, loader = _data()
    ann = _ann()
    # eps=1e-6 is RateCodingRecipe's default (SpikingJelly's); Converter's own is 1e-8. It bounds the scale of a
    # channel that never fired during calibration (the channel-wise case has such channels here).
    keyword = Converter(dataloader=loader, progress=False, eps=1e-6, **options)(ann)
    recipe = Converter(recipe=RateCodingRecipe(dataloader=loader, progress=False, **options)).convert(ann)
    positional = Converter(RateCodingRecipe(loader, progress=False, **options), "cpu").convert(ann)
    expected = _rates(keyword, x[:16])
    for snn in (recipe, positional):
        for a, b in zip(_scales(snn), _scales(keyword), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(_rates(snn, x[:16]), expected)
    assert len(_scales(keyword)) == 3


def test_spikingjelly_positional_orders():
    # 0.0.0.0.14: Converter(dataloader, device=None, mode='Max', momentum=0.1, fuse_flag=True); 2.0: (recipe, device)
    x, loader = _data()
    ann = _ann()
    keyword = Converter(dataloader=loader, mode=0.5, momentum=0.2, fuse_flag=False, progress=False)(ann)
    old_style = Converter(loader, "cpu", 0.5, 0.2, False, progress=False)(ann)
    new_style = Converter(RateCodingRecipe(loader, 0.5, 0.2, False, eps=1e-8, progress=False), "cpu").convert(ann)
    expected = _rates(keyword, x[:8])
    for snn in (old_style, new_style):
        assert [s.item() for s in _scales(snn)] == [s.item() for s in _scales(keyword)]
        assert torch.equal(_rates(snn, x[:8]), expected)
    assert any(isinstance(m, ann2snn.ChannelAffine) for m in old_style.modules())  # fuse_flag=False kept BN


def test_recipe_calibration_by_hand():
    # one Linear(1 -> 1, weight 1, bias 0) + ReLU: the recorded statistic is each batch's max
    ann = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
    with torch.no_grad():
        ann[0].weight.fill_(1.0)
        ann[0].bias.zero_()
    batches = [torch.tensor([[0.5], [2.0]]), torch.tensor([[1.0], [0.25]]), torch.tensor([[4.0], [3.0]])]
    # SpikingJelly's rule: the first batch sets s, then s = (1 - m) s + m s_batch
    m = 0.25
    s = 2.0
    s = (1 - m) * s + m * 1.0
    s = (1 - m) * s + m * 4.0
    snn = Converter(recipe=RateCodingRecipe(dataloader=batches, mode="Max", momentum=m, progress=False)).convert(ann)
    assert _scales(snn)[0].item() == pytest.approx(s, rel=1e-6)
    half = Converter(recipe=RateCodingRecipe(dataloader=batches, mode=0.5, momentum=m, progress=False)).convert(ann)
    assert _scales(half)[0].item() == pytest.approx(s / 2, rel=1e-6)
    # the neuron then fires at rate clip(z / s, 0, 1): z = s/2 gives one spike every other step, amplitude s
    out = _rates(snn, torch.tensor([[s / 2]]), steps=8)
    assert out.item() == pytest.approx(s / 2, rel=1e-5)


def test_neuron_factory_places_the_given_neuron_between_the_scalers():
    x, loader = _data()
    ann = _ann()
    made = []

    def factory(scale):
        made.append(scale)
        return neuron.IFNode(v_reset=None)

    snn = Converter(recipe=RateCodingRecipe(loader, neuron_factory=factory, progress=False)).convert(ann)
    core = Converter(dataloader=loader, neuron="core", progress=False)(ann)
    assert made == [pytest.approx(s.item()) for s in _scales(core)]
    assert sum(isinstance(m, neuron.IFNode) for m in snn.modules()) == 3
    torch.testing.assert_close(_rates(snn, x[:16]), _rates(core, x[:16]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="v_threshold=1"):
        Converter(recipe=RateCodingRecipe(loader, neuron_factory=lambda s: neuron.IFNode(v_threshold=2.0),
                                          progress=False)).convert(ann)


def test_recipe_errors_name_the_argument():
    _, loader = _data()
    with pytest.raises(ValueError, match="needs parameters"):
        Converter("rate_coding")
    with pytest.raises(NotImplementedError, match="transformer_td_equivalent"):
        Converter("transformer_td_equivalent")
    with pytest.raises(ValueError, match="unknown ann2snn conversion recipe"):
        Converter(recipe="nonsense")
    with pytest.raises(ValueError, match="mode"):
        Converter(recipe=RateCodingRecipe(loader), mode="99%")
    with pytest.raises(NotImplementedError, match="channel_dim"):
        RateCodingRecipe(loader, channel_dim=2)
    with pytest.raises(NotImplementedError, match="pre_spike_maxpool"):
        RateCodingRecipe(loader, channel_wise=True, pre_spike_maxpool=True)
    with pytest.raises(TypeError, match="unexpected keyword"):
        RateCodingRecipe(loader, modee="max")
    with pytest.raises(ValueError, match="mode"):
        Converter(recipe=RateCodingRecipe(loader, mode="median"))
    with pytest.raises(TypeError, match="recipe"):
        Converter(recipe=42)


def test_custom_recipe_runs_spikingjelly_s_hooks_in_order():
    calls = []

    class Identity(FXConversionRecipe):  # replaces every ReLU by the identity in its replace hook
        def validate(self, converter):
            calls.append("validate")

        def before_trace(self, converter, ann):
            calls.append("before_trace")
            return ann

        def after_trace(self, converter, gm):
            calls.append(("after_trace", isinstance(gm, fx.GraphModule), str(converter.device)))
            return gm

        def insert_observers(self, converter, gm):
            calls.append("insert_observers")
            return gm

        def calibrate(self, converter, gm):
            calls.append(("calibrate", torch.is_grad_enabled()))
            return gm

        def replace(self, converter, gm):
            calls.append("replace")
            for node in gm.graph.nodes:
                if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.ReLU):
                    node.replace_all_uses_with(node.args[0])
                    gm.graph.erase_node(node)
            gm.recompile()
            return gm

        def finalize(self, converter, gm):
            calls.append("finalize")
            return gm

    ann = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    out = Converter(recipe=Identity()).convert(ann)
    assert calls == ["validate", "before_trace", ("after_trace", True, "cpu"), "insert_observers",
                     ("calibrate", False), "replace", "finalize"]
    x = torch.randn(4, 3)
    torch.testing.assert_close(out(x), ann[0](x))
    assert any(isinstance(m, nn.ReLU) for m in ann.modules())  # the ANN itself is untouched


# ------------------------------------------------------------------------------------------------- SpikingJelly 2.0
@pytest.mark.parametrize("options, neuron_kind", [
    (dict(mode="Max"), "fused"),
    (dict(mode="Max"), "core"),  # spikeforge.neuron.IFNode between the scalers: SpikingJelly's layout
    (dict(mode=0.5, momentum=0.3), "fused"),
    (dict(mode=0.5, momentum=0.3), "core"),
    (dict(mode="Max", channel_wise=True), "fused"),
    (dict(mode="Max", channel_wise=True), "core"),
    (dict(mode="Max", channel_wise=True, half_threshold=True), "fused"),  # SpikingJelly's HalfThresholdIFNode
], ids=["max-fused", "max-core", "fraction-momentum-fused", "fraction-momentum-core", "channelwise-fused",
        "channelwise-core", "channelwise-half-fused"])
def test_same_scales_and_outputs_as_spikingjelly(options, neuron_kind):
    sj = pytest.importorskip("spikingjelly.activation_based.ann2snn")
    from spikingjelly.activation_based import functional as sj_functional

    x, loader = _data()
    ann = _ann()
    theirs = sj.Converter(sj.RateCodingRecipe(dataloader=loader, **options)).convert(ann)
    ours = Converter(recipe=RateCodingRecipe(dataloader=loader, neuron=neuron_kind, progress=False,
                                             **options)).convert(ann)
    # SpikingJelly keeps lambda in the scaler after each neuron (scaler1)
    sj_scales = [m.scale.detach() for name, m in theirs.named_modules() if name.endswith("scaler1")]
    for a, b in zip(_scales(ours), sj_scales, strict=True):
        torch.testing.assert_close(a.flatten(), b.flatten().float(), rtol=1e-6, atol=0)
    steps, probe = 24, x[:16]
    sj_functional.reset_net(theirs)
    with torch.no_grad():
        sj_rate = torch.stack([theirs(probe) for _ in range(steps)]).mean(0)
    # the same spikes up to float rounding where a membrane lands exactly on its threshold
    torch.testing.assert_close(_rates(ours, probe, steps), sj_rate, rtol=0, atol=1e-5)
