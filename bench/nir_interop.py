"""NIR interoperability: spikeforge ↔ Norse 1.1 and snnTorch 1.0 on the same networks and inputs.

1. spikeforge exports an LIF MLP and a conv SNN (``spikeforge.export.to_nir``); Norse (``norse.torch.from_nir``) and
   snnTorch (``snntorch.import_nir.import_from_nir``) import the graph; all three run the same input and the
   output spikes are compared.
2. Norse and snnTorch export their own networks; ``spikeforge.export.from_nir`` imports them and is compared with
   the exporting library's own forward pass.

Every comparison prints the number of output spikes that differ out of all output entries. Two input regimes:
``float`` (random float weights and inputs: a membrane practically never lands exactly on the threshold) and
``integer`` (integer weights and binary spike inputs: it often does, which separates the ``>`` of NIR and the peers
from spikeforge's ``>=``). Next to each peer, ``spikeforge strict`` is spikeforge's own import with NIR's ``>``
(``from_nir(graph, fire_on_tie=False)``): where it agrees with the peer, the whole difference is the tie rule.

Run it from the repository root in the peers' environment (spikeforge comes from this checkout):

    ../peer-venv/bin/pip install norse==1.1.0 nir nirtorch
    ../peer-venv/bin/python bench/nir_interop.py            # add --json for machine-readable output
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge import functional, layer, neuron  # noqa: E402
from spikeforge.export import from_nir, to_nir  # noqa: E402

T, N = 16, 8
DT = 1e-4


# ----------------------------------------------------------------------------------------------- models
def _fill(net: nn.Module, regime: str, gain: float, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if regime == "integer":
                p.copy_(torch.randint(-1, 2, p.shape, generator=gen).float())
            else:
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * gain / max(1, p[0].numel()) ** 0.5)
    return net


def sf_mlp(regime: str, decay_input: bool = True) -> nn.Sequential:
    net = nn.Sequential(layer.Flatten(), layer.Linear(64, 32), neuron.LIFNode(tau=2.0, decay_input=decay_input),
                        layer.Linear(32, 10), neuron.LIFNode(tau=2.0, decay_input=decay_input))
    functional.set_step_mode(net, "m")
    return _fill(net, regime, 3.0, 1)


def sf_if_mlp(regime: str) -> nn.Sequential:
    net = nn.Sequential(layer.Flatten(), layer.Linear(64, 32), neuron.IFNode(), layer.Linear(32, 10),
                        neuron.IFNode())
    functional.set_step_mode(net, "m")
    return _fill(net, regime, 2.0, 7)


def sf_conv(regime: str, pool: str) -> nn.Sequential:
    pooling = layer.AvgPool2d(2) if pool == "avg" else layer.AvgPool2d(2, divisor_override=1)
    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), neuron.LIFNode(tau=2.0), pooling,
                        layer.Conv2d(4, 6, 3), neuron.LIFNode(tau=2.0), layer.Flatten(),
                        layer.Linear(6 * 2 * 2, 5), neuron.LIFNode(tau=2.0))
    functional.set_step_mode(net, "m")
    return _fill(net, regime, 3.0, 2)


def inputs(regime: str, shape) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((T, N, *shape), generator=gen)
    return (x > 0.6).float() if regime == "integer" else x * 2


# ------------------------------------------------------------------------------------ running the peers
def _reset_snntorch(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_mem") and callable(m.reset_mem):
            m.reset_mem()


def run_stepwise(module: nn.Module, x_seq: torch.Tensor, batched: bool) -> torch.Tensor:
    """Step a NIR-imported peer module (``out, state = m(x, state)``) through T steps."""

    def one(x_seq_n):
        _reset_snntorch(module)
        state, outs = None, []
        for t in range(x_seq_n.shape[0]):
            out = module(x_seq_n[t]) if state is None else module(x_seq_n[t], state)
            if isinstance(out, tuple):
                out, state = out[0], out[1]
            outs.append(out.detach())
        return torch.stack(outs)

    with torch.no_grad():
        if batched:
            return one(x_seq)
        return torch.stack([one(x_seq[:, n]) for n in range(x_seq.shape[1])], dim=1)


def peer_import(name: str, graph, dt: float):
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "norse":
            import norse.torch as norse

            return norse.from_nir(graph, dt=dt)
        from snntorch.import_nir import import_from_nir

        return import_from_nir(graph)


def run_peer(module, x_seq):
    """(spikes, how): batched input first; the peers' Flatten flattens the batch, so fall back to one sample."""
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        try:
            return run_stepwise(module, x_seq, batched=True), "batched"
        except RuntimeError:
            return run_stepwise(module, x_seq, batched=False), "one sample at a time (batched input fails)"


def mismatch(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"shape {list(a.shape)} vs {list(b.shape)}"
    return f"{int((a != b).sum())}/{a.numel()}"


def sf_run(net, x):
    functional.reset_net(net)
    with torch.no_grad():
        return net(x)


# ---------------------------------------------------------------------------------------- experiments
def export_to_peers(results: list[dict]) -> None:
    cases = [("LIF MLP", lambda r: sf_mlp(r), (1, 8, 8)),
             ("LIF MLP decay_input=False (r = tau)", lambda r: sf_mlp(r, decay_input=False), (1, 8, 8)),
             ("IF MLP", sf_if_mlp, (1, 8, 8)),
             ("conv SNN, AvgPool2d", lambda r: sf_conv(r, "avg"), (1, 8, 8)),
             ("conv SNN, SumPool2d", lambda r: sf_conv(r, "sum"), (1, 8, 8))]
    for regime in ("float", "integer"):
        for title, build, shape in cases:
            net = build(regime)
            x = inputs(regime, shape)
            graph = to_nir(net, x, dt=DT)
            ours = sf_run(net, x)
            strict = sf_run(from_nir(graph, dt=DT, fire_on_tie=False), x)
            row = {"direction": "spikeforge -> peer", "case": title, "regime": regime,
                   "spikeforge spikes": int(ours.sum()), "spikeforge strict vs spikeforge": mismatch(strict, ours)}
            for peer, dt in (("norse", DT), ("snntorch", DT)):
                try:
                    module = peer_import(peer, graph, dt)
                    got, how = run_peer(module, x)
                    row[f"{peer} vs spikeforge"] = mismatch(got.reshape(ours.shape) if got.numel() == ours.numel()
                                                            else got, ours)
                    row[f"{peer} vs spikeforge strict"] = mismatch(got.reshape(ours.shape)
                                                                   if got.numel() == ours.numel() else got, strict)
                    row[f"{peer} input"] = how
                    if got.numel() != ours.numel():
                        row[f"{peer} vs spikeforge"] += " (the importer dropped a node)"
                except Exception as exc:  # a peer that cannot import the graph: say why
                    row[f"{peer} vs spikeforge"] = f"import/run fails: {type(exc).__name__}: {str(exc)[:120]}"
            if regime == "float" and title == "LIF MLP":
                module = peer_import("norse", graph, 1e-3)  # Norse's default dt, not the graph's
                got, _ = run_peer(module, x)
                row["norse at its default dt=1e-3 vs spikeforge"] = mismatch(got.reshape(ours.shape), ours)
            results.append(row)


def _norse_models(regime: str):
    import norse.torch as norse

    mlp = norse.SequentialState(nn.Linear(64, 32), norse.LIFBoxCell(), nn.Linear(32, 10), norse.LIFBoxCell())
    return _fill(mlp, regime, 12.0, 4)


def _snntorch_mlp(regime: str, default_reset: bool):
    import snntorch as snn

    kw = {} if default_reset else dict(reset_mechanism="zero", reset_delay=False)
    net = nn.Sequential(nn.Linear(64, 32), snn.Leaky(beta=torch.full((32,), 0.9), threshold=torch.ones(32),
                                                     init_hidden=True, **kw),
                        nn.Linear(32, 10), snn.Leaky(beta=torch.full((10,), 0.9), threshold=torch.ones(10),
                                                     init_hidden=True, **kw))
    return _fill(net, regime, 3.0, 5)


def _snntorch_conv(regime: str):
    import snntorch as snn

    kw = dict(reset_mechanism="zero", reset_delay=False, init_hidden=True)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=torch.full((4, 8, 8), 0.9),
                                                                 threshold=torch.ones(4, 8, 8), **kw),
                        nn.AvgPool2d(2), nn.Flatten(0), nn.Linear(4 * 4 * 4, 5),
                        snn.Leaky(beta=torch.full((5,), 0.9), threshold=torch.ones(5), **kw))
    return _fill(net, regime, 3.0, 6)


def _snntorch_forward(net, x_seq):
    """snnTorch's own forward, one sample at a time (its NIR export needs an unbatched sample)."""
    outs = []
    with torch.no_grad():
        for n in range(x_seq.shape[1]):
            _reset_snntorch(net)
            outs.append(torch.stack([net(x_seq[t, n]) for t in range(x_seq.shape[0])]))
    return torch.stack(outs, dim=1)


def peers_to_spikeforge(results: list[dict]) -> None:
    quiet = io.StringIO()
    for regime in ("float", "integer"):
        # Norse: SequentialState(Linear, LIFBoxCell, ...), exported at its dt = 1e-3
        try:
            import norse.torch as norse

            model = _norse_models(regime)
            x = inputs(regime, (64,))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = norse.to_nir(model, x[0, :1])
            with torch.no_grad():
                state, outs = None, []
                for t in range(T):
                    out, state = model(x[t], state)
                    outs.append(out)
            theirs = torch.stack(outs)
            row = {"direction": "peer -> spikeforge", "case": "Norse LIFBox MLP (Norse dt=1e-3)",
                   "regime": regime, "peer spikes": int(theirs.sum())}
            try:
                from_nir(graph, dt=1e-3)
            except Exception as exc:
                row["spikeforge at the exporter's dt=1e-3"] = f"refused: {str(exc)[:110]}"
            # Norse writes tau = dt/tau_mem_inv (= dt·tau_mem) instead of tau_mem: read at dt² it gives back
            # Norse's own per-step decay dt·tau_mem_inv
            mine = sf_run(from_nir(graph, dt=1e-6), x)
            tie = sf_run(from_nir(graph, dt=1e-6, fire_on_tie=True), x)
            row["spikeforge (NIR's >, dt=1e-6) vs peer"] = mismatch(mine, theirs)
            row["spikeforge with >= (dt=1e-6) vs peer"] = mismatch(tie, theirs)
            results.append(row)
        except Exception as exc:
            results.append({"direction": "peer -> spikeforge", "case": "Norse LIFBox MLP", "regime": regime,
                            "error": f"{type(exc).__name__}: {str(exc)[:160]}"})
        # snnTorch: Leaky MLPs (reset to zero without delay = NIR's LIF; and the Leaky defaults) and a conv SNN
        from snntorch.export_nir import export_to_nir

        for title, build, shape in (
                ("snnTorch Leaky MLP, reset_mechanism='zero', reset_delay=False",
                 lambda r: _snntorch_mlp(r, False), (64,)),
                ("snnTorch Leaky MLP, defaults (subtract, reset_delay=True)", lambda r: _snntorch_mlp(r, True),
                 (64,)),
                ("snnTorch conv SNN (Conv2d, Leaky, AvgPool2d, Flatten, Linear, Leaky)", _snntorch_conv,
                 (1, 8, 8))):
            try:
                net = build(regime)
                x = inputs(regime, shape)
                with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    graph = export_to_nir(net, x[0, 0])
                theirs = _snntorch_forward(net, x)
                mine = sf_run(from_nir(graph, dt=DT), x)
                tie = sf_run(from_nir(graph, dt=DT, fire_on_tie=True), x)
                results.append({"direction": "peer -> spikeforge", "case": title, "regime": regime,
                                "peer spikes": int(theirs.sum()),
                                "spikeforge (NIR's >) vs peer": mismatch(mine, theirs),
                                "spikeforge with >= vs peer": mismatch(tie, theirs)})
            except Exception as exc:
                results.append({"direction": "peer -> spikeforge", "case": title, "regime": regime,
                                "error": f"{type(exc).__name__}: {str(exc)[:160]}"})
    try:
        import norse.torch as norse

        conv = norse.SequentialState(nn.Conv2d(1, 4, 3, padding=1), norse.LIFBoxCell(), nn.Flatten(),
                                     nn.Linear(4 * 8 * 8, 5), norse.LIFBoxCell())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = norse.to_nir(conv, torch.rand(1, 1, 8, 8))
        from_nir(graph, dt=1e-6)
        results.append({"direction": "peer -> spikeforge", "case": "Norse conv SNN", "regime": "any",
                        "result": "imported"})
    except Exception as exc:
        results.append({"direction": "peer -> spikeforge", "case": "Norse conv SNN (Conv2d, LIFBox, Flatten, "
                        "Linear, LIFBox)", "regime": "any", "error": f"{type(exc).__name__}: {str(exc)[:150]}"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object per comparison")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    results: list[dict] = []
    export_to_peers(results)
    peers_to_spikeforge(results)
    for row in results:
        if args.json:
            print(json.dumps(row))
            continue
        print(f"[{row.pop('direction')}] {row.pop('case')} ({row.pop('regime')} regime)")
        for key, value in row.items():
            print(f"    {key:45s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
