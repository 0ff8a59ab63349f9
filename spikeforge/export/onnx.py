r"""ONNX export of spiking networks: unrolled over a fixed number of steps, or one step with explicit state.

``to_onnx(model, sample_input, path, mode="unrolled" | "step")`` writes an ONNX file whose shapes are those of
``sample_input`` ``[T, N, ...]``:

* ``mode="unrolled"``: input ``x`` ``[T, N, ...]``; outputs ``y`` ``[T, N, ...]`` (the model's output at every
  step) and ``v_1_out … v_L_out``, each neuron layer's membrane after the last step. The T steps are unrolled in
  the graph; every membrane starts at its initial value (below).
* ``mode="step"``: inputs ``x`` ``[N, ...]`` (one step) and the states ``v_1 … v_L``; outputs ``y`` and the new
  states ``v_1_out … v_L_out``. States are numbered in the order the neuron modules run and shaped
  ``[N, *neuron_shape]``; they start at ``v_reset`` (0 for a soft reset; V_th/2 for an ANN→SNN neuron with
  ``half_threshold``). A conversion neuron with ``signed_spikes`` has a second state ``count_i`` (its net spike
  count, starting at 0) right after its ``v_i``. :attr:`OnnxExport.initial_states` holds the start values.

How the neurons get into ONNX. The neuron kernels are ``torch.library`` custom ops (fused CPU / Triton) or a
Python autograd Function (reference); none of them is an ONNX operator. The exporter therefore replaces every
neuron by a plain-tensor step built from its ``module.spec`` — the charge / fire / reset equations of
:mod:`spikeforge.kernels.reference` with the kernels' order of float operations:

    H = V + X                               (no leak: IF, conversion IF)
    H = V + (X − (V − V_r))·d                (leak, decay_input)
    H = V − (V − V_r)·d + X                  (leak, no decay_input)
    S = 1[H ≥ V_th]   (1[H > V_th] when the spec does not fire on a tie)
    V = H·(1 − S) + V_r·S  (hard reset)  or  V = H − V_th·S  (soft reset)

so the file holds ``Add``/``Sub``/``Mul``/``GreaterOrEqual``/``Cast`` nodes and no custom domain. A neuron in the
smooth-surrogate mode (``spiking=False``), SNN-MLP's group LIF, the spiking max-pool and the membrane read-out of
converted networks are refused with an error naming the module.

The model is traced with ``torch.fx`` (see :mod:`spikeforge.export._common`); a forward that branches on tensor
values raises :class:`~spikeforge.export.DynamicControlFlowError` naming the line. ``torch.export.export`` of the
original multi-step model works as it is (the fused kernels are custom ops with fake implementations); the
ONNX path needs the replacement above because ONNX has no such ops.
"""

from __future__ import annotations

import operator
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .. import encoding as _encoding
from ..ann2snn.modules import IFActivation, _SeqBlock
from ..base import MemoryModule
from ..spec import KernelFamily, NeuronKind, NeuronSpec
from ._common import (
    ExportError,
    TracedModel,
    UnsupportedModuleError,
    is_dropout,
    module_label,
    neuron_spec,
)

__all__ = ["to_onnx", "OnnxExport", "step_module", "NeuronStep", "ConversionIFStep"]

MODES = ("unrolled", "step")


# ------------------------------------------------------------------------------------------ neuron steps
class NeuronStep(nn.Module):
    """One time step of a charge-fire-reset neuron (IF / LIF / PLIF / STBP LIF), from its spec alone."""

    def __init__(self, spec: NeuronSpec, label: str):
        super().__init__()
        if spec.family is not KernelFamily.CHARGE_FIRE_RESET:
            raise UnsupportedModuleError(f"neuron {label} of kind {spec.kind.value} is not a charge-fire-reset "
                                         "neuron")
        if spec.smooth:
            raise UnsupportedModuleError(f"neuron {label} emits the smooth surrogate g(H − V_th) "
                                         "(spiking=False); export a spiking neuron")
        if not spec.binary_output:
            raise UnsupportedModuleError(f"neuron {label} has graded output; only binary spikes are exported")
        self.neuron_spec = spec
        self.decay = spec.leak.decay
        self.n_states = 1

    def initial_states(self, shape, dtype=torch.float32) -> list[torch.Tensor]:
        return [torch.full(shape, self.neuron_spec.reset_value, dtype=self.neuron_spec.state_dtype_for(dtype))]

    def forward(self, x: torch.Tensor, v: torch.Tensor):
        spec = self.neuron_spec
        v_r = spec.reset_value
        if not spec.leaky:
            h = v + x
        elif spec.decay_input:
            h = v + (x - (v - v_r)) * self.decay
        else:
            h = v - (v - v_r) * self.decay + x
        fired = h >= spec.v_threshold if spec.fire_on_tie else h > spec.v_threshold
        spike = fired.to(h.dtype)
        if spec.v_reset is None:
            v_next = h - spec.v_threshold * spike
        else:
            v_next = h * (1.0 - spike) + v_r * spike
        return spike.to(x.dtype), v_next


class ConversionIFStep(nn.Module):
    """One time step of the ANN→SNN IF neuron (soft reset, threshold θ per layer or per channel)."""

    def __init__(self, spec: NeuronSpec, threshold: torch.Tensor):
        super().__init__()
        self.neuron_spec = spec
        self.register_buffer("theta", threshold.detach().clone().float())
        self.signed = spec.conversion.signed_spikes
        self.emit = spec.conversion.emit_threshold
        self.n_states = 2 if self.signed else 1

    def initial_states(self, shape, dtype=torch.float32) -> list[torch.Tensor]:
        v0 = (self.neuron_spec.conversion.initial_membrane_fraction * self.theta).to(dtype)
        states = [torch.empty(shape, dtype=dtype).copy_(v0.expand(shape))]
        if self.signed:
            states.append(torch.zeros(shape, dtype=dtype))
        return states

    def forward(self, x: torch.Tensor, v: torch.Tensor, *count):
        v = v + x
        spike = (v >= self.theta).to(x.dtype)
        if self.signed:
            negative = ((v < 0) & (count[0] > 0)).to(x.dtype)
            spike = spike - negative
            count = (count[0] + spike,)
        v = v - spike * self.theta
        out = spike * self.theta if self.emit else spike
        return (out, v, *count)


class IFActivationStep(nn.Module):
    """A converted ReLU (``IFActivation``): optional input scaler, one neuron step, optional output scaler."""

    def __init__(self, block: IFActivation, inner: nn.Module):
        super().__init__()
        self.scale_in = block.scale_in
        self.scale_out = block.scale_out
        self.inner = inner
        self.n_states = inner.n_states

    def initial_states(self, shape, dtype=torch.float32) -> list[torch.Tensor]:
        return self.inner.initial_states(shape, dtype)

    def forward(self, x, *states):
        if self.scale_in is not None:
            x = self.scale_in(x)
        out = self.inner(x, *states)
        y = out[0] if self.scale_out is None else self.scale_out(out[0])
        return (y, *out[1:])


def step_module(module: nn.Module, label: str = "") -> nn.Module:
    """The plain-tensor one-step replacement of a neuron module (or a converted-ReLU block)."""
    label = label or module_label("", module)
    if isinstance(module, IFActivation):
        return IFActivationStep(module, step_module(module.neuron, f"{label}.neuron"))
    spec = neuron_spec(module)
    if spec is None:
        raise UnsupportedModuleError(f"{label} is not a spikeforge neuron")
    if spec.kind is NeuronKind.CONVERSION_IF:
        return ConversionIFStep(spec, module.v_threshold)
    if spec.family is not KernelFamily.CHARGE_FIRE_RESET:
        raise UnsupportedModuleError(f"neuron {label} of kind {spec.kind.value} has no ONNX step "
                                     "(supported: IF, LIF, PLIF, STBP LIF, the ANN→SNN IF neuron)")
    return NeuronStep(spec, label)


# ------------------------------------------------------------------------------------------- the graphs
@dataclass
class OnnxExport:
    """What :func:`to_onnx` wrote: the file, its input/output names and the initial states (step mode)."""

    path: str
    mode: str
    time_steps: int
    input_names: list[str]
    output_names: list[str]
    state_names: list[str]
    initial_states: list[np.ndarray] = field(repr=False)

    def initial_feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``{input name: array}`` for the first call: ``x`` and, in step mode, the initial states."""
        feeds = {self.input_names[0]: np.asarray(x)}
        if self.mode == "step":
            feeds.update(zip(self.state_names, self.initial_states))
        return feeds


class _Unrolled(nn.Module):
    """Runs the step graph over a fixed number of steps (a Python loop, unrolled by the exporter)."""

    def __init__(self, step: fx.GraphModule, initial_states: list[torch.Tensor]):
        super().__init__()
        self.step = step
        self.n_states = len(initial_states)
        for i, state in enumerate(initial_states):
            self.register_buffer(f"state_{i}", state.clone())

    def forward(self, x_seq: torch.Tensor):
        states = [getattr(self, f"state_{i}") for i in range(self.n_states)]
        outputs = []
        for t in range(x_seq.shape[0]):
            result = self.step(x_seq[t], *states)
            outputs.append(result[0])
            states = list(result[1:])
        return (torch.stack(outputs), *states)


def _check_leaves(traced: TracedModel) -> None:
    for node in traced.gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = traced.module(node)
        if neuron_spec(m) is not None or isinstance(m, IFActivation) or is_dropout(m):
            continue
        if isinstance(m, _encoding.StatelessEncoder):
            raise UnsupportedModuleError(
                f"{module_label(node.target, m)} is an encoder: encode the input outside the exported graph and "
                "pass the encoded [T, N, ...] sequence as sample_input")
        if isinstance(m, (_SeqBlock, MemoryModule)):
            raise UnsupportedModuleError(
                f"{module_label(node.target, m)} keeps state between steps but is not a neuron: the ONNX exporter "
                "carries only neuron membranes (supported stateful modules: IF/LIF/PLIF/STBP LIF neurons, "
                "ConversionIFNode, IFActivation)")


def build_step_graph(traced: TracedModel) -> tuple[fx.GraphModule, list[str], list[torch.Tensor]]:
    """``(step module (x, *states) -> (y, *states'), state names, initial states)`` of a traced model."""
    _check_leaves(traced)
    gm = traced.gm
    stateful = traced.stateful_nodes()
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    env[traced.input_node] = graph.placeholder("x")
    state_names: list[str] = []
    initial: list[torch.Tensor] = []
    steps: dict[fx.Node, tuple[str, list[fx.Node]]] = {}
    for i, node in enumerate(stateful, start=1):
        m = traced.module(node)
        step = step_module(m, module_label(node.target, m))
        shape = traced.shape(node.args[0])
        names = [f"v_{i}"] + ([f"count_{i}"] if step.n_states == 2 else [])
        placeholders = [graph.placeholder(n) for n in names]
        attr = f"_onnx_step_{i}"
        gm.add_submodule(attr, step)
        steps[node] = (attr, placeholders)
        state_names += names
        initial += step.initial_states(shape, traced.values[node.args[0]].dtype)
    new_states: list[fx.Node] = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            graph.output((env[node.args[0]], *new_states))
            continue
        if node in steps:
            if len(node.args) != 1 or node.kwargs:
                raise ExportError(f"neuron {node.target!r} must be called with one tensor")
            attr, placeholders = steps[node]
            call = graph.call_module(attr, (env[node.args[0]], *placeholders))
            env[node] = graph.call_function(operator.getitem, (call, 0))
            for k in range(len(placeholders)):
                new_states.append(graph.call_function(operator.getitem, (call, k + 1)))
            continue
        if node.op == "call_module" and is_dropout(traced.module(node)):
            env[node] = env[node.args[0]]  # eval mode: the identity
            continue
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.lint()
    step_gm = fx.GraphModule(gm, graph, "SpikingStep")
    return step_gm, state_names, initial


def _export(module: nn.Module, args: tuple, path: str, input_names, output_names, opset_version: int | None):
    import inspect

    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise ExportError(f"to_onnx needs torch >= 2.5 (torch.onnx.export(dynamo=True)); this is torch "
                          f"{torch.__version__}")
    kwargs = dict(input_names=input_names, output_names=output_names, dynamo=True, external_data=False,
                  verbose=False)
    if opset_version is not None:
        kwargs["opset_version"] = opset_version
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module, args, path, **kwargs)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export of the per-step graph failed: {type(exc).__name__}: {exc}") from exc
    return program


def to_onnx(model: nn.Module, sample_input: torch.Tensor, path: str | os.PathLike, mode: str = "unrolled",
            opset_version: int | None = None, check: bool = True) -> OnnxExport:
    """Write ``model`` as an ONNX file with the shapes of ``sample_input`` ``[T, N, ...]`` (see the module docs).

    Args:
        model: a spiking network (``nn.Sequential`` of spikeforge / torch layers and neurons, a module whose
            forward ``torch.fx`` can trace, or an ANN→SNN :class:`~spikeforge.ann2snn.ConvertedSNN`), in either
            step mode; it is copied, never modified.
        sample_input: ``[T, N, ...]``; T is the number of unrolled steps (``mode="unrolled"``), N and the rest
            are the fixed shapes of the file.
        path: where to write the ``.onnx`` file.
        mode: ``"unrolled"`` (input ``x_seq``, outputs ``y_seq`` and the final membranes) or ``"step"`` (inputs
            ``x_t, v_1 … v_L``, outputs ``y_t, v_1' … v_L'``).
        check: run ``onnx.checker.check_model`` on the written file.

    Returns:
        :class:`OnnxExport` with the input/output names and the initial states.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'unrolled' or 'step', got {mode!r}")
    traced = TracedModel(model, sample_input)
    step_gm, state_names, initial = build_step_graph(traced)
    path = os.fspath(path)
    out_states = [f"{name}_out" for name in state_names]
    x = traced.sample_input.float() if traced.sample_input.dtype != torch.float64 else traced.sample_input
    if mode == "step":
        module = step_gm.eval()
        args = (x[0], *initial)
        input_names = ["x", *state_names]
    else:
        module = _Unrolled(step_gm, initial).eval()
        args = (x,)
        input_names = ["x"]
    output_names = ["y", *out_states]
    _export(module, args, path, input_names, output_names, opset_version)
    if check:
        import onnx

        onnx.checker.check_model(path)
    return OnnxExport(path=path, mode=mode, time_steps=traced.steps, input_names=input_names,
                      output_names=output_names, state_names=state_names,
                      initial_states=[s.numpy() for s in initial])
