"""Tracing and diagnostics: stack traces on nodes, UnsupportedNodeError naming the node and where it sits."""

import torch
import torch.fx as fx
import torch.nn as nn

import spikeforge.ann2snn as ann2snn
from spikeforge.ann2snn import UnsupportedNodeError, trace
from spikeforge.ann2snn.tracing import _describe, _place


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.sigmoid(self.fc(x)).relu()


def test_trace_keeps_the_class_name_and_stack_traces():
    gm = trace(_Sigmoid())
    assert isinstance(gm, fx.GraphModule) and type(gm).__name__ == "_Sigmoid"
    sigmoid = next(n for n in gm.graph.nodes if n.target is torch.sigmoid)
    assert "test_trace.py" in sigmoid.stack_trace
    x = torch.randn(4, 3)
    torch.testing.assert_close(gm(x), torch.sigmoid(gm.fc(x)).relu())


def test_describe_names_what_a_node_calls():
    gm = trace(nn.Sequential(nn.Linear(3, 3), nn.GELU()))
    nodes = {n.name: n for n in gm.graph.nodes}
    assert _describe(nodes["_1"]) == "module '1' of type GELU"
    gm = trace(_Sigmoid())
    nodes = {n.name: n for n in gm.graph.nodes}
    assert _describe(nodes["sigmoid"]) == "function torch.sigmoid"
    assert _describe(nodes["relu"]) == "method Tensor.relu"
    assert _describe(nodes["x"]) == "placeholder x"


def test_unsupported_node_error_says_where_the_node_sits():
    gm = trace(_Sigmoid())
    node = next(n for n in gm.graph.nodes if n.name == "sigmoid")
    assert _place(node).startswith("after fc, feeding relu; traced at File ")
    assert "test_trace.py" in _place(node) and _place(node).endswith(": return torch.sigmoid(self.fc(x)).relu()")
    error = UnsupportedNodeError(node, "no spiking form")
    assert isinstance(error, NotImplementedError)
    assert error.node_name == "sigmoid" and error.target is torch.sigmoid
    message = str(error)
    assert message.startswith("cannot convert node 'sigmoid' (function torch.sigmoid) after fc, feeding relu;")
    assert message.endswith(": no spiking form")


def test_public_trace_is_the_function_not_the_module():
    # the module is tracing.py, so spikeforge.ann2snn.trace is unambiguously the function
    assert ann2snn.trace is trace and callable(trace) and trace.__module__ == "spikeforge.ann2snn.tracing"


def test_a_graph_of_torch_modules_points_at_the_container_not_at_fx():
    gm = trace(nn.Sequential(nn.Linear(3, 3), nn.GELU()))
    node = next(n for n in gm.graph.nodes if n.name == "_1")
    where = _place(node)
    assert "container.py" in where and "torch/fx" not in where.replace("\\", "/")
