"""Tracing an ANN with ``torch.fx``, saying where a node sits when it cannot be converted, graph-edit helpers.

:func:`trace` keeps the stack trace of every node, so that :class:`UnsupportedNodeError` can name the source
line an unsupported operation was traced from, next to the node's inputs and users.
"""

from __future__ import annotations

import linecache
import os
import traceback
import types

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import UserError

__all__ = ["UnsupportedNodeError", "ModelTraceError", "trace"]

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_FX_DIR = os.path.dirname(fx.__file__) + os.sep
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class ModelTraceError(UserError, fx.proxy.TraceError):
    """``torch.fx`` cannot trace the ANN; the message names the model's source line and how to fix it."""


class UnsupportedNodeError(UserError, NotImplementedError):
    """Raised when a traced ANN contains an operation with no rate-coded equivalent."""

    def __init__(self, node: fx.Node, reason: str):
        self.node_name = node.name
        self.target = node.target
        super().__init__(f"cannot convert node '{node.name}' ({_describe(node)}) {_place(node)}: {reason}")


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.record_stack_traces = True


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (keeping the stack trace of every node for error messages).

    When ``torch.fx`` cannot trace it (Python control flow on tensor values, ``len()`` of a tensor, a call that
    does not accept a proxy ...) :class:`ModelTraceError` names the line of the model's own code where tracing
    stopped and says how to make it traceable.
    """
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except (fx.proxy.TraceError, TypeError, RuntimeError, ValueError, AttributeError, IndexError,
            NotImplementedError) as error:
        raise ModelTraceError(_trace_failure(model, error)) from error
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _user_frame(error: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of the traceback in the model's own code (outside torch and this package)."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if not f.filename.startswith((_TORCH_DIR, _OWN_DIR)) and not f.filename.startswith("<")]
    return own[-1] if own else None


def _trace_failure(model: nn.Module, error: BaseException) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    frame = _user_frame(error)
    if frame is not None:
        code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
        where = f" at {frame.filename}:{frame.lineno}, in {frame.name}: `{code}`"
    else:
        where = ""
    proxy_problem = isinstance(error, fx.proxy.TraceError) or "Proxy" in reason or "symbolic" in reason
    hint = ("torch.fx runs forward() on symbolic values, so Python control flow on tensor values (if/while on a "
            "tensor, bool(), len() or iterating a tensor, int(x.sum()) ...) cannot be traced. Make that line "
            "independent of the tensor's values (torch.where, shapes or module attributes instead), or keep the "
            "code out of the trace: move it into a module-level function and call torch.fx.wrap('that_function') "
            "once at the top of its module (it is then recorded as one call, not traced into; the converter "
            "then judges that call like any other operation)" if proxy_problem else
            "the model's forward() raised this while being traced with torch.fx; check that it runs on a real "
            "input, then that line")
    return f"cannot trace {type(model).__name__} with torch.fx: {type(error).__name__}: {reason}{where}. {hint}"


# ------------------------------------------------------------------------------------------ diagnostics
def _describe(node: fx.Node) -> str:
    """What a node calls: ``module 'net.1' of type GELU``, ``function torch.sigmoid``, ``method Tensor.mul``."""
    if node.op == "call_module":
        module = node.graph.owning_module.get_submodule(node.target) if node.graph.owning_module else None
        kind = type(module).__name__ if module is not None else "?"
        return f"module '{node.target}' of type {kind}"
    if node.op == "call_function":
        name = getattr(node.target, "__qualname__", None) or getattr(node.target, "__name__", str(node.target))
        if isinstance(node.target, types.BuiltinFunctionType):  # torch.sigmoid, not _VariableFunctionsClass.sigmoid
            name = node.target.__name__
        module = getattr(node.target, "__module__", None) or ""
        return f"function {module + '.' if module else ''}{name}"
    if node.op == "call_method":
        return f"method Tensor.{node.target}"
    return f"{node.op} {node.target}"


def _place(node: fx.Node) -> str:
    """Where a node sits: its inputs, its users and, when traced with a stack, the source line.

    The source line is the innermost frame outside torch (the model's own code); when every frame is in torch
    (an ``nn.Sequential``), the innermost one outside ``torch.fx``, whose own frames some versions record last;
    none when only ``torch.fx`` frames are left (code without a source file, e.g. ``python -c``).
    """
    inputs = [a.name for a in node.all_input_nodes] or ["(graph input)"]
    users = [u.name for u in node.users] or ["(nothing)"]
    where = f"after {', '.join(inputs)}, feeding {', '.join(users)}"
    if node.stack_trace:
        lines = [ln.strip() for ln in node.stack_trace.strip().splitlines() if ln.strip()]
        frames = [ln for ln in lines if ln.startswith("File ")]
        source = [ln for ln in frames if _TORCH_DIR not in ln] or [ln for ln in frames if _FX_DIR not in ln]
        if source:
            where += f"; traced at {source[-1]}"
            index = lines.index(source[-1])
            if index + 1 < len(lines):
                where += f": {lines[index + 1]}"
    return where


# ------------------------------------------------------------------------------------ graph-edit helpers
def _unique_name(gm: fx.GraphModule, base: str) -> str:
    """``base`` (dots replaced) or ``base_1``, ``base_2`` ...: the first name not yet an attribute of ``gm``."""
    base = base.replace(".", "_")
    name, k = base, 1
    while hasattr(gm, name):
        name = f"{base}_{k}"
        k += 1
    return name


def _call_sites(gm: fx.GraphModule) -> dict[str, int]:
    """How many ``call_module`` nodes call each submodule path."""
    sites: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            sites[node.target] = sites.get(node.target, 0) + 1
    return sites


def _block_name(gm: fx.GraphModule, node: fx.Node, prefix: str, sites: dict[str, int]) -> str:
    """Reuse the replaced module's own path (``network.2``) when it is called once, else a fresh name."""
    if node.op == "call_module" and sites.get(node.target) == 1:
        return node.target
    return _unique_name(gm, f"{prefix}_{node.name}")
