"""ONNX export: onnxruntime reproduces the PyTorch spikes and membranes, in both modes."""

import logging

import numpy as np
import pytest
import torch
import torch.nn as nn

from spikeforge import encoding, functional, layer, neuron
from spikeforge.export import DynamicControlFlowError, UnsupportedModuleError, to_onnx

from .helpers import conv_snn, converted_cnn, lif_fc_mnist, lif_mlp, membranes, run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx.export(dynamo=True) needs it


@pytest.fixture(autouse=True)
def _quiet_exporter():
    logging.disable(logging.WARNING)  # the exporter logs one line per missing torchvision op
    yield
    logging.disable(logging.NOTSET)


def _ort_run(info, x_seq: torch.Tensor):
    """(outputs [T, N, ...], final states) of an exported file on ``x_seq``."""
    session = ort.InferenceSession(info.path, providers=["CPUExecutionProvider"])
    if info.mode == "unrolled":
        y, *states = session.run(None, {"x": x_seq.numpy()})
        return y, states
    states, outputs = list(info.initial_states), []
    for t in range(x_seq.shape[0]):
        y, *states = session.run(None, {"x": x_seq[t].numpy(), **dict(zip(info.state_names, states))})
        outputs.append(y)
    return np.stack(outputs), states


def _check(net, x_seq, path, mode):
    expected = run(net, x_seq).numpy()
    expected_v = [v.numpy() for v in membranes(net)]
    info = to_onnx(net, x_seq, path, mode=mode)
    onnx.checker.check_model(info.path, full_check=True)
    model = onnx.load(info.path)
    assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}  # standard operators only
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    y, states = _ort_run(info, x_seq)
    assert expected.sum() > 0, "the test network must spike"
    np.testing.assert_array_equal(y, expected)
    assert len(states) == len(expected_v) == len(info.state_names)
    for got, want in zip(states, expected_v):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    return info, model


@pytest.mark.parametrize("mode", ["unrolled", "step"])
def test_conv_snn_matches_pytorch(tmp_path, mode):
    x = torch.rand(6, 3, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2
    info, model = _check(conv_snn(), x, tmp_path / "conv.onnx", mode)
    assert info.state_names == ["v_1", "v_2", "v_3"]
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    if mode == "step":
        assert shapes == {"x": [3, 1, 8, 8], "v_1": [3, 4, 8, 8], "v_2": [3, 6, 2, 2], "v_3": [3, 5]}
        assert all(np.all(s == 0) for s in info.initial_states)  # v_reset = 0
    else:
        assert shapes == {"x": [6, 3, 1, 8, 8]}


@pytest.mark.parametrize("mode", ["unrolled", "step"])
def test_lif_fc_mnist_net_matches_pytorch(tmp_path, mode):
    gen = torch.Generator().manual_seed(4)
    x = (torch.rand(12, 4, 1, 28, 28, generator=gen) > 0.7).float()  # Poisson-like spikes
    _check(lif_fc_mnist(), x, tmp_path / "fc.onnx", mode)


@pytest.mark.parametrize("mode", ["unrolled", "step"])
def test_converted_ann2snn_net_matches_pytorch(tmp_path, mode):
    snn, images = converted_cnn()
    kinds = {m.spec.kind.value for m in snn.modules() if isinstance(m, neuron.ConversionIFNode)}
    assert kinds == {"conversion_if"}
    x = images[:5].unsqueeze(0).repeat(10, 1, 1, 1, 1)  # direct coding: the image at every step
    _check(snn, x, tmp_path / "snn.onnx", mode)


def test_lif_mlp_soft_reset_and_hard_reset_states(tmp_path):
    net = lif_mlp()
    net[2] = neuron.LIFNode(tau=2.0, v_reset=None, step_mode="m")  # soft reset: its state starts at 0
    net[4] = neuron.LIFNode(tau=3.0, decay_input=False, v_threshold=0.5, v_reset=-0.25, step_mode="m")
    x = torch.rand(5, 2, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2
    info, _ = _check(net, x, tmp_path / "mlp.onnx", "step")
    assert np.all(info.initial_states[0] == 0.0) and np.all(info.initial_states[1] == -0.25)


def test_single_step_model_exports_the_same_graph(tmp_path):
    net = lif_mlp()
    x = torch.rand(4, 2, 1, 8, 8, generator=torch.Generator().manual_seed(6)) * 2
    expected = run(net, x).numpy()
    functional.set_step_mode(net, "s")
    info = to_onnx(net, x, tmp_path / "s.onnx", mode="unrolled")
    np.testing.assert_array_equal(_ort_run(info, x)[0], expected)


def test_the_model_is_left_untouched(tmp_path):
    net = lif_mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    to_onnx(net, torch.rand(2, 1, 1, 8, 8), tmp_path / "m.onnx", mode="step")
    assert all(m.step_mode == "m" for m in net.modules() if hasattr(m, "step_mode"))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_torch_export_of_a_multi_step_model_keeps_the_fused_op():
    net = lif_mlp()
    x = torch.rand(5, 3, 1, 8, 8, generator=torch.Generator().manual_seed(7)) * 2
    functional.reset_net(net)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the membrane is assigned as a plain attribute during export
        program = torch.export.export(net, (x,))
    functional.reset_net(net)
    with torch.no_grad():
        expected = net(x)
    functional.reset_net(net)
    got = program.module()(x)
    assert torch.equal(got, expected)
    from spikeforge.kernels.cpu import numba_installed

    if numba_installed():  # the fused CPU kernel: one custom op per neuron layer, not T small ops
        targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
        assert sum("spikeforge.neuron_multi_step" in t for t in targets) == 2, targets


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = layer.Linear(4, 4)
        self.sn = neuron.LIFNode()

    def forward(self, x):
        y = self.fc(x)
        if y.sum() > 0:  # data-dependent: no static graph
            y = -y
        return self.sn(y)


def test_data_dependent_control_flow_is_a_clear_error(tmp_path):
    with pytest.raises(DynamicControlFlowError, match=r"data-dependent control flow at .*test_onnx.py:\d+: "
                                                      r"if y.sum\(\) > 0"):
        to_onnx(_Branchy(), torch.rand(3, 2, 4), tmp_path / "b.onnx")


def test_a_stateful_non_neuron_module_is_named(tmp_path):
    net = nn.Sequential(encoding.PoissonEncoder(), layer.Linear(4, 3), neuron.LIFNode())
    with pytest.raises(UnsupportedModuleError, match=r"'0' \(spikeforge.encoding.PoissonEncoder\)"):
        to_onnx(net, torch.rand(3, 2, 4), tmp_path / "p.onnx")


def test_a_converted_spiking_max_pool_is_named(tmp_path):
    from ann2snn.helpers import MaxPoolNet, convert

    torch.manual_seed(0)
    x = torch.rand(16, 1, 8, 8)
    snn = convert(MaxPoolNet().eval(), x)
    with pytest.raises(UnsupportedModuleError, match=r"'pool' \(spikeforge.ann2snn.modules.SpikingMaxPool\) keeps"):
        to_onnx(snn, x[:2].unsqueeze(0).repeat(3, 1, 1, 1, 1), tmp_path / "m.onnx")


def test_smooth_surrogate_neuron_is_refused(tmp_path):
    from spikeforge import surrogate

    net = nn.Sequential(layer.Linear(4, 3), neuron.LIFNode(surrogate_function=surrogate.Sigmoid(spiking=False)))
    with pytest.raises(UnsupportedModuleError, match=r"'1' \(spikeforge.neuron.core.LIFNode\).*smooth"):
        to_onnx(net, torch.rand(3, 2, 4), tmp_path / "s.onnx")


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be"):
        to_onnx(lif_mlp(), torch.rand(2, 1, 1, 8, 8), "x.onnx", mode="loop")
    with pytest.raises(ValueError, match=r"\[T, N, \.\.\.\]"):
        to_onnx(lif_mlp(), torch.rand(64), "x.onnx")
