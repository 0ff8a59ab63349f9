"""The converted network: :class:`ConvertedSNN` (step modes, static-input fast path) and its static-input graph."""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from .. import functional as SF
from .modules import IFActivation, TimeBroadcast, _SeqBlock, _StaticEntry
from .ops import _is_size_value
from .tracing import _unique_name

__all__ = ["ConvertedSNN"]


class ConvertedSNN(nn.Module):
    """The converted network: a ``torch.fx.GraphModule`` (``.net``) plus step-mode handling.

    * ``step_mode='s'``: ``snn(x)`` with ``x`` ``[N, ...]`` advances one time step; call
      ``functional.reset_net(snn)`` between samples.
    * ``step_mode='m'``: ``snn(x_seq)`` with ``x_seq`` ``[T, N, ...]`` returns ``[T, N, ...]``; the graph runs
      on the merged ``[T*N, ...]`` batch and only the neurons and spiking max-pools walk through time.
    * ``run_static(x, T)``: direct (analog) coding of a static input for ``T`` more steps, ``[T, N, ...]``
      out; nodes that do not depend on any neuron (the first convolution...) are computed once, not T times.

    Summing the outputs over time and dividing by T estimates the ANN's output.
    """

    def __init__(self, net: fx.GraphModule, step_mode: str = "s"):
        super().__init__()
        self.net = net
        self.step_mode = SF.check_step_mode(step_mode)
        self.__dict__["_static_net"] = None

    def _prepare(self, step_mode: str, seq_len: int | None, net: nn.Module | None = None) -> None:
        for block in (net or self.net).modules():
            if not isinstance(block, _SeqBlock):
                continue
            block.step_mode = step_mode
            block.seq_len = seq_len

    def forward(self, x: torch.Tensor):
        if self.step_mode == "s":
            self._prepare("s", None)
            return self.net(x)
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError("x_seq must be a tensor [T, N, ...] in multi-step mode")
        steps, batch = x.shape[:2]
        self._prepare("m", steps)
        out = self.net(x.flatten(0, 1))
        return _tree_map(out, lambda y: y.reshape(steps, batch, *y.shape[1:]))

    def run_static(self, x: torch.Tensor, steps: int):
        """Feed the same input ``x`` ``[N, ...]`` for ``steps`` steps; returns ``[steps, N, ...]``."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        static = self.__dict__.get("_static_net")
        if static is None:
            static = _build_static_net(self.net)
            self.__dict__["_static_net"] = static if static is not None else False
        if static is False:
            previous = self.step_mode
            self.step_mode = "m"
            try:
                return self(x.unsqueeze(0).expand(steps, *x.shape))
            finally:
                self.step_mode = previous
        batch = x.shape[0]
        self._prepare("m", steps, static)
        out = static(x)
        return _tree_map(out, lambda y: y.reshape(steps, batch, *y.shape[1:]))

    def __deepcopy__(self, memo):
        clone = ConvertedSNN(copy.deepcopy(self.net, memo), self.step_mode)
        return clone

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"


def _tree_map(out, fn):
    """``fn`` applied to every tensor of a nested tuple/list/dict output; other leaves unchanged."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (list, tuple)):
        return type(out)(_tree_map(o, fn) for o in out)
    if isinstance(out, dict):
        return {k: _tree_map(v, fn) for k, v in out.items()}
    return out


def _build_static_net(gm: fx.GraphModule) -> fx.GraphModule | None:
    """Copy of ``gm`` whose neuron-independent prefix runs on ``[N, ...]`` and is broadcast over time.

    Returns None when a non-tensor value (a size) computed from the static input reaches the time-dependent
    part, since it would carry N instead of T*N.
    """
    modules = dict(gm.named_modules())
    graph = copy.deepcopy(gm.graph)
    static: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or node.op == "get_attr":
            static.add(node)
        elif node.op == "output":
            continue
        elif node.op == "call_module" and isinstance(modules[node.target], _SeqBlock):
            continue
        elif all(a in static for a in node.all_input_nodes):
            static.add(node)
    broadcast_name = "_time_broadcast"
    root = fx.GraphModule(gm, graph)
    broadcaster = TimeBroadcast()
    root.add_submodule(broadcast_name, broadcaster)
    crossing: dict[fx.Node, fx.Node] = {}
    for node in list(graph.nodes):
        if node in static:
            continue
        if (node.op == "call_module" and isinstance(modules.get(node.target), IFActivation)
                and len(node.args) == 1 and node.args[0] in static and not _is_size_value(node.args[0])):
            # The neuron reads the single static frame at every step: no T-fold copy of its input.
            name = _unique_name(root, f"static_{node.target}")
            root.add_submodule(name, _StaticEntry(modules[node.target]))
            node.target = name
            continue
        for arg in node.all_input_nodes:
            if arg not in static or arg.op == "get_attr":
                continue
            if _is_size_value(arg):
                return None
            if arg not in crossing:
                with graph.inserting_after(arg):
                    crossing[arg] = graph.call_module(broadcast_name, (arg,))
            node.replace_input_with(arg, crossing[arg])
    graph.lint()
    root.graph = graph
    root.recompile()
    return root
