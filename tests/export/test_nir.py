"""NIR export and import: the discretisation, round trips, the conventions NIR does not share, bad input."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from spikeforge import functional, layer, neuron
from spikeforge.ann2snn import fold_conv_bn
from spikeforge.export import (
    DEFAULT_DT,
    NIRFileError,
    UnsupportedModuleError,
    from_nir,
    to_nir,
)
from spikeforge.export.nir import NIRGraphModule

from .helpers import conv_snn, converted_cnn, lif_mlp, run

nir = pytest.importorskip("nir")


def _x(shape, seed, scale=2.0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * scale


def _neurons(graph, cls):
    return [n for n in graph.nodes.values() if isinstance(n, cls)]


# ------------------------------------------------------------------------------------------ discretisation
def test_lif_fields_are_the_forward_euler_step_at_dt():
    dt = 2.5e-4
    net = lif_mlp()  # LIF(tau=2, decay_input) then LIF(tau=3, decay_input=False, V_th=0.5)
    graph = to_nir(net, _x((4, 2, 1, 8, 8), 0), dt=dt)
    first, second = _neurons(graph, nir.LIF)
    # decay_input=True: dt/tau_nir = 1/tau, r = 1 -> v += (1/tau)(v_leak - v + x)
    np.testing.assert_allclose(first.tau, np.full(32, 2.0 * dt), rtol=1e-15)
    np.testing.assert_array_equal(first.r, np.ones(32))
    np.testing.assert_array_equal(first.v_leak, np.zeros(32))
    np.testing.assert_array_equal(first.v_reset, np.zeros(32))
    np.testing.assert_array_equal(first.v_threshold, np.ones(32))
    # decay_input=False: r = tau so that the input enters with gain (dt/tau_nir)·r = 1
    np.testing.assert_allclose(second.tau, np.full(10, 3.0 * dt), rtol=1e-15)
    np.testing.assert_array_equal(second.r, np.full(10, 3.0))
    np.testing.assert_array_equal(second.v_threshold, np.full(10, 0.5))
    assert first.tau.dtype == np.float64
    assert graph.metadata["spikeforge.dt"] == dt
    assert first.metadata["spikeforge.fire"] == ">=" and first.metadata["spikeforge.reset"] == "to_value"


def test_if_fields_and_the_shapes_in_the_graph_types():
    graph = to_nir(conv_snn(), _x((3, 2, 1, 8, 8), 1))
    (if_node,) = _neurons(graph, nir.IF)
    assert if_node.r.shape == (4, 8, 8) and np.all(if_node.r == 1) and np.all(if_node.v_reset == 0)
    types = {k: (list(n.input_type["input"]), list(n.output_type["output"])) for k, n in graph.nodes.items()}
    assert types == {
        "input": ([1, 8, 8], [1, 8, 8]),
        "0": ([1, 8, 8], [4, 8, 8]),
        "1": ([4, 8, 8], [4, 8, 8]),
        "2": ([4, 8, 8], [4, 4, 4]),
        "3": ([4, 4, 4], [6, 2, 2]),
        "4": ([6, 2, 2], [6, 2, 2]),
        "5": ([6, 2, 2], [24]),
        "6": ([24], [5]),
        "7": ([5], [5]),
        "output": ([5], [5]),
    }
    assert graph.input_type == {"input": graph.nodes["input"].input_type["input"]}
    pool = graph.nodes["2"]
    assert isinstance(pool, nir.AvgPool2d)
    for attr in ("kernel_size", "stride", "padding"):  # written as arrays
        assert isinstance(getattr(pool, attr), np.ndarray)
    np.testing.assert_array_equal(pool.kernel_size, [2, 2])


def _nir_euler(x, tau, r, v_leak, v_th, v_reset, dt):
    """NIR's LIF integrated by forward Euler in float64 (independent of spikeforge), strict ``v > v_th``.

    The membrane starts at ``v_reset`` (NIR leaves the initial state open; spikeforge starts at the reset value).
    """
    v = np.full(x.shape[1:], v_reset)
    spikes = []
    for t in range(x.shape[0]):
        v = v + dt / tau * ((v_leak - v) + r * x[t])
        s = (v > v_th).astype(np.float64)
        v = np.where(s > 0, v_reset, v)
        spikes.append(s)
    return np.stack(spikes)


@pytest.mark.parametrize("r, v_leak, v_reset", [(1.0, 0.0, 0.0), (2.5, 0.0, 0.0), (1.0, 0.1, -0.2),
                                                 (0.7, -0.3, 0.4)])
def test_a_foreign_lif_graph_runs_nirs_equations(r, v_leak, v_reset):
    dt, tau, v_th, n = 1e-3, 4e-3, 0.6, 50
    lif = nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.full(n, v_leak),
                  v_threshold=np.full(n, v_th), v_reset=np.full(n, v_reset))
    graph = nir.NIRGraph.from_list(lif)
    module = from_nir(graph, dt=dt)
    x = (torch.rand(40, 3, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 0.2) * 4
    functional.reset_net(module)
    with torch.no_grad():
        got = module(x).numpy()
    want = _nir_euler(x.numpy(), tau, r, v_leak, v_th, v_reset, dt)
    assert 0 < want.mean() < 1
    np.testing.assert_array_equal(got, want)


def test_a_foreign_if_graph_fires_strictly_above_threshold():
    graph = nir.NIRGraph.from_list(nir.IF(r=np.ones(3), v_threshold=np.ones(3), v_reset=np.zeros(3)))
    x = torch.tensor([[[0.5, 1.0, 0.25]], [[0.5, 0.0, 0.75]], [[0.5, 0.5, 0.25]]])  # v: 1.0 exactly at a tie
    strict = run(from_nir(graph), x)
    assert strict[:, 0, 0].tolist() == [0.0, 0.0, 1.0] and strict[:, 0, 1].sum() == 1  # 1.0, then 1.0 + 0.5
    on_tie = run(from_nir(graph, fire_on_tie=True), x)
    assert on_tie[:, 0, 0].tolist() == [0.0, 1.0, 0.0]


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("through_file", [False, True])
def test_lif_mlp_round_trip_gives_identical_spikes(tmp_path, through_file):
    net = lif_mlp()
    x = _x((10, 4, 1, 8, 8), 3)
    graph = to_nir(net, x)
    if through_file:
        nir.write(tmp_path / "mlp.nir", graph)
        graph = tmp_path / "mlp.nir"
    back = from_nir(graph)
    assert isinstance(back, nn.Sequential)
    expected = run(net, x)
    assert 0 < expected.mean() < 1
    assert torch.equal(run(back, x), expected)
    assert [type(m).__name__ for m in back] == ["Flatten", "Linear", "LIFNode", "Linear", "LIFNode"]
    assert back[4].spec == net[4].spec


@pytest.mark.parametrize("pool", ["avg", "sum"])
def test_conv_snn_round_trip_gives_identical_spikes(tmp_path, pool):
    net = conv_snn(pool=pool)
    x = _x((8, 3, 1, 8, 8), 4)
    graph = to_nir(net, x)
    assert isinstance(graph.nodes["2"], nir.AvgPool2d if pool == "avg" else nir.SumPool2d)
    nir.write(tmp_path / "conv.nir", graph)
    back = from_nir(tmp_path / "conv.nir")
    expected = run(net, x)
    assert expected.sum() > 0
    assert torch.equal(run(back, x), expected)


def test_round_trip_without_the_spikeforge_metadata(tmp_path):
    """A graph stripped of our metadata (as another tool might write it) still gives the same spikes."""
    net = lif_mlp()
    x = _x((10, 4, 1, 8, 8), 5)
    graph = to_nir(net, x)
    for node in graph.nodes.values():
        node.metadata = {}
    back = from_nir(graph, fire_on_tie=True)
    assert torch.equal(run(back, x), run(net, x))


def test_plif_is_exported_as_lif_with_its_current_tau():
    net = nn.Sequential(layer.Linear(6, 5), neuron.ParametricLIFNode(init_tau=3.0, step_mode="m"))
    with torch.no_grad():
        net[1].w.add_(0.3)  # trained away from init_tau
    tau = net[1].tau
    graph = to_nir(net, torch.rand(2, 1, 6))
    (lif,) = _neurons(graph, nir.LIF)
    np.testing.assert_allclose(lif.tau, tau * DEFAULT_DT, rtol=1e-12)
    back = from_nir(graph)
    assert isinstance(back[1], neuron.ParametricLIFNode) and abs(back[1].tau - tau) < 1e-5
    x = _x((12, 3, 6), 6, 4.0)
    assert torch.equal(run(back, x), run(net, x))
    for node in graph.nodes.values():
        node.metadata = {}
    plain = from_nir(graph)
    assert type(plain[1]) is neuron.LIFNode and abs(plain[1].tau - tau) < 1e-9


def test_stbp_lif_round_trip_keeps_its_strict_threshold():
    net = nn.Sequential(layer.Linear(6, 5, step_mode="m"), neuron.LIFSpike(tau=0.25, v_th=0.4))
    graph = to_nir(net, torch.rand(2, 1, 6))
    (lif,) = _neurons(graph, nir.LIF)
    assert lif.metadata["spikeforge.fire"] == ">"
    np.testing.assert_allclose(lif.tau * (1 - 0.25), DEFAULT_DT)  # dt/tau_nir = 1 − r
    back = from_nir(graph)
    assert isinstance(back[1], neuron.LIFSpike)
    x = _x((12, 3, 6), 7, 2.0)
    assert torch.equal(run(back, x), run(net, x))


def test_batchnorm_is_folded_into_the_conv_before_it():
    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), layer.BatchNorm2d(4), neuron.LIFNode(),
                        layer.Flatten(), layer.Linear(4 * 4 * 4, 3), neuron.LIFNode())
    functional.set_step_mode(net, "m")
    bn = net[1]
    bn.running_mean.uniform_(-0.3, 0.3)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(1.0, 3.0)
    net.eval()
    graph = to_nir(net, torch.rand(2, 1, 1, 4, 4))
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Conv2d", "LIF", "Flatten", "Affine",
                                                              "LIF", "Output"]
    folded = fold_conv_bn(net[0], bn)
    np.testing.assert_array_equal(graph.nodes["0"].weight, folded.weight.detach().numpy())
    np.testing.assert_array_equal(graph.nodes["0"].bias, folded.bias.detach().numpy())
    reference = nn.Sequential(folded, net[2], net[3], net[4], net[5])
    x = _x((6, 3, 1, 4, 4), 8)
    assert torch.equal(run(from_nir(graph), x), run(reference, x))


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = layer.Linear(8, 8, step_mode="m")
        self.sa = neuron.LIFNode(step_mode="m")
        self.b = layer.Linear(8, 8, step_mode="m")
        self.c = layer.Linear(8, 4, step_mode="m")
        self.sc = neuron.IFNode(step_mode="m")

    def forward(self, x):
        h = self.sa(self.a(x))
        return self.sc(self.c(h + self.b(x)))  # NIR: two edges into c, summed


def test_a_residual_sum_becomes_two_edges_and_imports_as_a_graph():
    net = _Residual()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    x = _x((8, 3, 8), 9)
    graph = to_nir(net, x)
    assert sorted(e for e in graph.edges if e[1] == "c") == [("b", "c"), ("sa", "c")]
    back = from_nir(graph)
    assert isinstance(back, NIRGraphModule)
    expected = run(net, x)
    assert expected.sum() > 0
    assert torch.equal(run(back, x), expected)


def test_converted_ann2snn_net_round_trip_with_allow_soft_reset():
    snn, images = converted_cnn()
    x = images[:4].unsqueeze(0).repeat(8, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="no subtractive reset"):
        to_nir(snn, x)
    graph = to_nir(snn, x, allow_soft_reset=True)
    assert {n.metadata["spikeforge.reset"] for n in _neurons(graph, nir.IF)} == {"subtract"}
    assert len([n for n in graph.nodes.values() if isinstance(n, nir.Scale)]) == 3  # spikes of amplitude λ
    assert torch.equal(run(from_nir(graph), x), run(snn, x))


# ------------------------------------------------------------------------------------------ conventions
def test_soft_reset_needs_allow_soft_reset_and_is_honoured_on_import(tmp_path):
    net = nn.Sequential(layer.Linear(6, 5, step_mode="m"), neuron.LIFNode(v_reset=None, step_mode="m"))
    with pytest.raises(ValueError, match=r"'1' \(spikeforge.neuron.core.LIFNode\) has a soft reset.*NIR has no "
                                         r"subtractive reset.*allow_soft_reset=True"):
        to_nir(net, torch.rand(2, 1, 6))
    graph = to_nir(net, torch.rand(2, 1, 6), allow_soft_reset=True)
    (lif,) = _neurons(graph, nir.LIF)
    assert lif.metadata["spikeforge.reset"] == "subtract" and np.all(lif.v_reset == 0)
    nir.write(tmp_path / "soft.nir", graph)
    back = from_nir(tmp_path / "soft.nir")
    assert back[1].v_reset is None
    x = _x((12, 3, 6), 10, 4.0)
    assert torch.equal(run(back, x), run(net, x))


def test_ties_with_integer_weights():
    """NIR's ``>`` and our ``>=`` differ exactly where the membrane lands on the threshold."""
    net = nn.Sequential(layer.Linear(4, 3, bias=False, step_mode="m"), neuron.IFNode(v_threshold=2.0, step_mode="m"))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0]]))
    x = (torch.rand(16, 8, 4, generator=torch.Generator().manual_seed(11)) > 0.5).float()
    graph = to_nir(net, x)
    ours = run(net, x)
    assert torch.equal(run(from_nir(graph), x), ours)  # the recorded ">=" is honoured
    strict = run(from_nir(graph, fire_on_tie=False), x)  # what NIR's definition (and the peers) compute
    assert strict.sum() < ours.sum()


# ------------------------------------------------------------------------------------------- bad input
def test_an_unsupported_module_is_named_with_path_and_type():
    net = nn.Sequential(layer.Conv2d(1, 2, 3, step_mode="m"), neuron.IFNode(step_mode="m"),
                        layer.MaxPool2d(2, step_mode="m"))
    with pytest.raises(UnsupportedModuleError, match=r"'2' \(spikeforge.layer.MaxPool2d\) has no NIR form"):
        to_nir(net, torch.rand(2, 1, 1, 6, 6))


def test_an_unsupported_function_is_named():
    class Gelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = layer.Linear(4, 4)

        def forward(self, x):
            return torch.nn.functional.gelu(self.fc(x))

    with pytest.raises(UnsupportedModuleError, match=r"function 'gelu'"):
        to_nir(Gelu(), torch.rand(2, 1, 4))


def test_files_and_objects_that_are_not_nir(tmp_path):
    text = tmp_path / "model.nir"
    text.write_text("not a graph")
    with pytest.raises(NIRFileError, match="is not a NIR file"):
        from_nir(text)
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("weights", data=np.ones(3))
    with pytest.raises(NIRFileError, match="is not a NIR file"):
        from_nir(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError):
        from_nir(tmp_path / "missing.nir")
    with pytest.raises(NIRFileError, match="needs a nir.NIRGraph"):
        from_nir({"nodes": {}})


def test_recurrent_and_unsupported_nir_graphs_are_refused():
    lif = nir.LIF(tau=np.full(3, 2e-4), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3))
    rec = nir.Linear(weight=np.eye(3))
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "lif": lif, "rec": rec,
                                "output": nir.Output(np.array([3]))},
                         edges=[("input", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])
    with pytest.raises(UnsupportedModuleError, match=r"recurrent.*'lif'"):
        from_nir(graph)
    cuba = nir.CubaLIF(tau_syn=np.full(3, 1e-3), tau_mem=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3),
                       v_threshold=np.ones(3))
    with pytest.raises(UnsupportedModuleError, match=r"NIR node 'cubalif' of type CubaLIF"):
        from_nir(nir.NIRGraph.from_list(cuba))


def test_a_graph_read_at_a_much_larger_dt_is_refused_with_the_reason():
    graph = to_nir(lif_mlp(), torch.rand(2, 1, 1, 8, 8))  # tau = 2 steps of 1e-4 s
    with pytest.raises(UnsupportedModuleError, match="pass the dt the graph was written with"):
        from_nir(graph, dt=1e-3)
    with pytest.raises(ValueError, match="dt must be"):
        to_nir(lif_mlp(), torch.rand(2, 1, 1, 8, 8), dt=0.0)


def test_metadata_records_the_spec():
    graph = to_nir(lif_mlp(), torch.rand(2, 1, 1, 8, 8))
    lif = _neurons(graph, nir.LIF)[1]
    spec = json.loads(lif.metadata["spikeforge.spec"])
    assert spec["kind"] == "lif" and spec["decay_input"] is False and spec["leak"]["value"] == 3.0


class _Assorted(nn.Module):
    """Lone BatchNorm, sum pooling by LPPool2d(1), adaptive average pooling, torch.flatten and Dropout."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.sn1 = neuron.LIFNode()
        self.pool = nn.LPPool2d(1, 2)
        self.drop = nn.Dropout(0.5)
        self.gap = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(12, 4)
        self.sn2 = neuron.LIFNode()

    def forward(self, x):
        x = self.sn1(self.conv(self.bn(x)))
        x = self.gap(self.drop(self.pool(x)))
        return self.sn2(self.fc(torch.flatten(x, 1)))


def test_assorted_layers_export_and_import():
    torch.manual_seed(1)
    net = _Assorted().eval()
    net.bn.running_var.fill_(0.5)
    net.bn.running_mean.fill_(0.1)
    with torch.no_grad():
        net.conv.weight.mul_(4.0)
        net.fc.weight.mul_(6.0)
    graph = to_nir(net, torch.rand(2, 1, 1, 8, 8))
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert kinds == ["Input", "Conv2d", "Conv2d", "LIF", "SumPool2d", "AvgPool2d", "Flatten", "Affine", "LIF",
                     "Output"]
    assert graph.nodes["bn_affine"].groups == 1 and graph.nodes["bn_affine"].weight.shape == (1, 1, 1, 1)
    back = from_nir(graph)
    x = _x((10, 4, 1, 8, 8), 12)
    functional.set_step_mode(net, "s")
    functional.reset_net(net)
    with torch.no_grad():
        expected = torch.stack([net(x[t]) for t in range(x.shape[0])])
    got = run(back, x)
    assert expected.sum() > 0
    assert (got != expected).float().mean() < 0.01  # BatchNorm as a 1×1 conv rounds differently


def test_conv1d_round_trip():
    net = nn.Sequential(layer.Conv1d(2, 3, 3, stride=2, padding=1, step_mode="m"), neuron.LIFNode(step_mode="m"),
                        layer.Flatten(step_mode="m"), layer.Linear(3 * 5, 4, step_mode="m"),
                        neuron.LIFNode(step_mode="m"))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)
    x = _x((8, 3, 2, 10), 13)
    graph = to_nir(net, x)
    assert list(graph.nodes["0"].output_type["output"]) == [3, 5]
    expected = run(net, x)
    assert expected.sum() > 0
    assert torch.equal(run(from_nir(graph), x), expected)
