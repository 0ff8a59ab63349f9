"""The converted network: :class:`ConvertedSNN` (step modes, static-input fast path) and its static-input graph."""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.fx as fx
import torch.nn as nn

from .. import functional as SF
from .modules import IFActivation, TimeBroadcast, _SeqBlock, _StaticEntry
from .ops import _is_size_value
from .tracing import _unique_name

__all__ = ["ConvertedSNN"]


class StaticPrefix(NamedTuple):
    """What :meth:`ConvertedSNN.run_prefix` computed: the batch size and the values the suffix reads."""

    batch: int
    values: tuple


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
        static = self._static_graph()
        if static is None:
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

    def _static_graph(self) -> fx.GraphModule | None:
        """The static-input graph (:func:`_build_static_net`), built once; None when the network has none."""
        static = self.__dict__.get("_static_net")
        if static is None:
            static = _build_static_net(self.net)
            self.__dict__["_static_net"] = static if static is not None else False
        return static or None

    def static_split(self) -> tuple[fx.GraphModule, fx.GraphModule] | None:
        """``(prefix, suffix)`` of the static-input graph, or None when it has none: ``prefix(x)`` computes the
        neuron-independent values once (a tuple), ``suffix(*values)`` runs the time-dependent rest.
        :func:`~spikeforge.ann2snn.evaluate` calls the prefix once per batch (:meth:`run_prefix`) and the suffix
        once per chunk of steps (:meth:`run_suffix`), so the first convolution is not recomputed at every step."""
        split = self.__dict__.get("_static_split")
        if split is None:
            static = self._static_graph()
            split = (_split_static(static) if static is not None else None) or False
            self.__dict__["_static_split"] = split
        return split or None

    def run_prefix(self, x: torch.Tensor) -> StaticPrefix:
        """The prefix of :meth:`static_split` on ``x`` ``[N, ...]``, for :meth:`run_suffix`."""
        values = self.static_split()[0](x)
        return StaticPrefix(x.shape[0], values if isinstance(values, tuple) else (values,))

    def run_suffix(self, prefix: StaticPrefix, steps: int):
        """``steps`` more steps of the suffix of :meth:`static_split`; returns ``[steps, N, ...]``."""
        suffix = self.static_split()[1]
        self._prepare("m", steps, suffix)
        out = suffix(*prefix.values)
        return _tree_map(out, lambda y: y.reshape(steps, prefix.batch, *y.shape[1:]))

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


def _static_nodes(graph: fx.Graph, modules: dict, walks_time) -> set[fx.Node]:
    """The nodes that do not depend on time: the input, attributes, and every node whose inputs are all such
    nodes, except calls of the ``walks_time`` module types (the neurons and the other stateful blocks)."""
    static: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            static.add(node)
        elif node.op == "output" or (node.op == "call_module" and isinstance(modules[node.target], walks_time)):
            continue
        elif all(a in static for a in node.all_input_nodes):
            static.add(node)
    return static


def _build_static_net(gm: fx.GraphModule) -> fx.GraphModule | None:
    """Copy of ``gm`` whose neuron-independent prefix runs on ``[N, ...]`` and is broadcast over time.

    Returns None when a non-tensor value (a size) computed from the static input reaches the time-dependent
    part, since it would carry N instead of T*N.
    """
    modules = dict(gm.named_modules())
    graph = copy.deepcopy(gm.graph)
    static = _static_nodes(graph, modules, _SeqBlock)
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


def _split_static(gm: fx.GraphModule) -> tuple[fx.GraphModule, fx.GraphModule] | None:
    """Cut the static-input graph where time-invariant values meet the time-dependent part.

    Static nodes are those of :func:`_static_nodes`, with :class:`_StaticEntry` (and :class:`TimeBroadcast`, a
    ``_SeqBlock``) counted as time-walking. The prefix graph returns the static nodes that the rest reads; the
    suffix graph takes them as its inputs (and copies the attributes it reads). Returns None when nothing but the
    input crosses (there is no work to hoist) or when a crossing value is not a tensor.
    """
    static = _static_nodes(gm.graph, dict(gm.named_modules()), (_SeqBlock, _StaticEntry))
    boundary = []
    for node in gm.graph.nodes:
        if node in static:
            continue
        for arg in node.all_input_nodes:
            if arg in static and arg.op != "get_attr" and arg not in boundary:
                boundary.append(arg)
    if not boundary or all(n.op == "placeholder" for n in boundary) or any(_is_size_value(n) for n in boundary):
        return None
    prefix_graph, env = fx.Graph(), {}
    for node in gm.graph.nodes:
        if node in static:
            env[node] = prefix_graph.node_copy(node, lambda n: env[n])
    prefix_graph.output(tuple(env[n] for n in boundary))
    suffix_graph, env = fx.Graph(), {}
    for i, node in enumerate(boundary):
        env[node] = suffix_graph.placeholder(f"static_{i}")
    for node in gm.graph.nodes:
        read_by_suffix = node.op == "get_attr" and any(u not in static for u in node.users)
        if node not in static or read_by_suffix:
            env[node] = suffix_graph.node_copy(node, lambda n: env[n])
    return fx.GraphModule(gm, prefix_graph), fx.GraphModule(gm, suffix_graph)
