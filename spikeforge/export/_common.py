"""What the NIR and ONNX exporters share: the errors, the graph of a model and its per-step shapes.

A model is exported as a *per-step* graph. It is deep-copied, put in eval mode and in single-step mode, its
time containers (``SeqToANNContainer``, ``MultiStepContainer``, ``tdLayer``) are replaced by plain
``nn.Sequential`` s, and ``torch.fx`` traces it with every neuron and every layer kept as one leaf. Each node
of that graph then acts on one time step ``[N, ...]``; the exporters only have to say what a neuron does per
step (its :class:`~spikeforge.spec.NeuronSpec`) and what each stateless leaf is. The sample input ``[T, N, ...]``
fixes T and the shapes: one step of it is run through the graph to record every node's shape.
"""

from __future__ import annotations

import copy
import os
import traceback

import torch
import torch.fx as fx
import torch.nn as nn

from .. import functional as SF
from .. import layer as _layer
from ..ann2snn.modules import IFActivation, _SeqBlock
from ..ann2snn.result import ConvertedSNN
from ..base import MemoryModule
from ..spec import NeuronSpec

__all__ = ["ExportError", "UnsupportedModuleError", "DynamicControlFlowError", "NIRFileError", "TracedModel",
           "trace", "prepare_model", "neuron_spec", "module_label"]


class ExportError(RuntimeError):
    """A model (or a file) that cannot be exported (or imported); the message says which part and why."""


class UnsupportedModuleError(ExportError, TypeError):
    """A module, function or NIR node the exporter has no translation for (named with its path and type)."""


class DynamicControlFlowError(ExportError):
    """The model's forward branches or loops on tensor values (or sizes), so it has no static graph."""


class NIRFileError(ExportError, ValueError):
    """A file or object that is not a NIR graph."""


_STATELESS_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, _layer.Dropout)


def neuron_spec(module: nn.Module) -> NeuronSpec | None:
    """``module.spec`` when ``module`` is a spikeforge neuron (anything exposing a NeuronSpec), else None."""
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return None
    try:
        spec = getattr(module, "spec", None)
    except Exception:  # a property that cannot be evaluated is not a neuron description
        return None
    return spec if isinstance(spec, NeuronSpec) else None


def module_label(path: str, module: nn.Module) -> str:
    """``'features.3' (spikeforge.layer.Conv2d)``: how errors name a module."""
    cls = type(module)
    return f"'{path or '<model>'}' ({cls.__module__}.{cls.__qualname__})"


def is_dropout(module: nn.Module) -> bool:
    return isinstance(module, _STATELESS_DROPOUT)


# ------------------------------------------------------------------------------------------- preparation
def _plain_batchnorm(bn: nn.Module) -> nn.Module:
    """An ``nn.BatchNorm1d/2d`` with the eval-mode output of a threshold-dependent BatchNorm (tdBN)."""
    scale = 1.0
    if isinstance(bn, _layer.tdBatchNorm):
        scale = bn.alpha * bn.v_th  # STBP's tdBN multiplies its weight by alpha * V_th
        cls = nn.BatchNorm2d
    else:
        cls = nn.BatchNorm2d if isinstance(bn, _layer.ThresholdDependentBatchNorm2d) else nn.BatchNorm1d
    plain = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    state = {k: v.detach().clone() for k, v in bn.state_dict().items()}
    if bn.affine:
        state["weight"] = state["weight"] * scale
    plain.load_state_dict(state)
    return plain.eval()


def _unwrap_containers(module: nn.Module) -> nn.Module:
    """Replace the time containers by the per-step modules they hold (in place, recursively)."""
    for name, child in list(module.named_children()):
        if isinstance(child, (_layer.SeqToANNContainer, _layer.MultiStepContainer)):
            replacement = nn.Sequential(*child.children())
        elif isinstance(child, _layer.tdLayer):
            parts = [child.layer] + ([child.bn] if child.bn is not None else [])
            replacement = nn.Sequential(*parts)
        elif isinstance(child, (_layer.tdBatchNorm, _layer.ThresholdDependentBatchNorm1d,
                                _layer.ThresholdDependentBatchNorm2d)):
            replacement = _plain_batchnorm(child)
        else:
            replacement = child
        if replacement is not child:
            setattr(module, name, replacement)
        _unwrap_containers(replacement)
    return module


def prepare_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval and single-step mode with its state reset and its containers unwrapped."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    if isinstance(model, ConvertedSNN):
        model = model.net
    if isinstance(model, (_layer.SeqToANNContainer, _layer.MultiStepContainer)):
        model = nn.Sequential(*model.children())
    model = _unwrap_containers(model).cpu().eval()
    SF.reset_net(model)
    SF.set_step_mode(model, "s")
    return model


# ------------------------------------------------------------------------------------------------ tracing
class _LeafTracer(fx.Tracer):
    """Keeps every neuron and every layer as one call; traces into containers and user modules."""

    def __init__(self, neurons: set[int]):
        super().__init__()
        self.neurons = neurons  # ids of the neuron modules, found before tracing (their specs read parameters)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict, fx.GraphModule)):
            return False
        if id(m) in self.neurons or isinstance(m, (IFActivation, _SeqBlock, MemoryModule)):
            return True
        if next(m.children(), None) is None:
            return True
        return m.__module__.startswith("torch.nn")


def _user_frame(exc: BaseException) -> str:
    """``file:line: code`` of the innermost frame of ``exc`` that is the model's code (not torch's, not ours)."""
    torch_dir = os.path.dirname(torch.__file__)
    here = os.path.dirname(__file__)
    best = None
    for frame in traceback.extract_tb(exc.__traceback__):
        name = frame.filename
        if name.startswith(torch_dir) or name.startswith(here) or name.startswith("<"):
            continue
        best = frame
    if best is None:
        return "the model's forward"
    return f"{best.filename}:{best.lineno}: {(best.line or '').strip()}"


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx`` graph of a prepared model; data-dependent control flow raises :class:`DynamicControlFlowError`."""
    tracer = _LeafTracer({id(m) for m in model.modules() if neuron_spec(m) is not None})
    try:
        graph = tracer.trace(model)
    except (fx.proxy.TraceError, TypeError, RuntimeError) as exc:
        text = str(exc)
        dynamic = (isinstance(exc, fx.proxy.TraceError) or "Proxy" in text or "symbolically traced" in text)
        if not dynamic:
            raise
        raise DynamicControlFlowError(
            f"the model cannot be exported: its forward has data-dependent control flow at {_user_frame(exc)} "
            f"({type(exc).__name__}: {text.splitlines()[0] if text else ''}). An exported graph is static: "
            "branch on tensor values or loop over the time dimension outside the model (the exporters unroll "
            "time themselves), or compute the branch condition from Python numbers") from exc
    name = model.__class__.__name__
    return fx.GraphModule(tracer.root, graph, name)


# --------------------------------------------------------------------------------------------- the model
class TracedModel:
    """A prepared model's per-step graph with the example value of every node for one step of the sample."""

    def __init__(self, model: nn.Module, sample_input: torch.Tensor, fold_batchnorm: bool = False):
        if not isinstance(sample_input, torch.Tensor):
            raise TypeError(f"sample_input must be a tensor [T, N, ...], got {type(sample_input).__name__}")
        if sample_input.dim() < 2:
            raise ValueError("sample_input must be a tensor [T, N, ...] (time first, then batch), got shape "
                             f"{tuple(sample_input.shape)}")
        if not sample_input.is_floating_point():
            raise TypeError(f"sample_input must be a floating-point tensor, got dtype {sample_input.dtype}")
        self.sample_input = sample_input.detach().cpu()
        self.steps = int(sample_input.shape[0])
        prepared = prepare_model(model)
        self.gm = trace(prepared)
        if fold_batchnorm:
            from ..ann2snn.fold import fold_batchnorm as _fold

            self.gm = _fold(self.gm)
        self.modules = dict(self.gm.named_modules())
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ExportError(f"the model must take exactly one input tensor, its forward takes {len(placeholders)} "
                              f"({', '.join(p.name for p in placeholders)})")
        self.input_node = placeholders[0]
        outputs = [n for n in self.gm.graph.nodes if n.op == "output"]
        self.output_node = outputs[0]
        if not isinstance(self.output_node.args[0], fx.Node):
            raise ExportError("the model must return one tensor; its forward returns "
                              f"{type(self.output_node.args[0]).__name__}")
        self.values = self._propagate(self.sample_input[0])

    def module(self, node: fx.Node) -> nn.Module:
        return self.modules[node.target]

    def _propagate(self, x_step: torch.Tensor) -> dict[fx.Node, object]:
        values: dict[fx.Node, object] = {}

        class _Recorder(fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                values[n] = out
                return out

        with torch.no_grad():
            try:
                _Recorder(self.gm).run(x_step)
            except ExportError:
                raise
            except Exception as exc:
                raise ExportError(f"running one step of sample_input {tuple(self.sample_input.shape)} through the "
                                  f"model's per-step graph failed: {type(exc).__name__}: {exc}") from exc
        SF.reset_net(self.gm)
        return values

    def shape(self, node) -> tuple[int, ...]:
        """The full shape ``[N, ...]`` of a node's value for one step."""
        value = self.values[node]
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"node {node.name!r} does not produce a tensor")
        return tuple(value.shape)

    def sample_shape(self, node) -> tuple[int, ...]:
        """The per-sample shape (no T, no N) of a node's value."""
        return self.shape(node)[1:]

    def stateful_nodes(self) -> list[fx.Node]:
        """The neuron calls (and converted-ReLU blocks) in the order they run; each module may run only once."""
        seen: dict[str, fx.Node] = {}
        found = []
        for node in self.gm.graph.nodes:
            if node.op != "call_module":
                continue
            m = self.module(node)
            if neuron_spec(m) is None and not isinstance(m, IFActivation):
                continue
            if node.target in seen:
                raise ExportError(f"neuron {module_label(node.target, m)} is called more than once per step; "
                                  "give each call site its own neuron module (each keeps its own membrane)")
            seen[node.target] = node
            found.append(node)
        return found
