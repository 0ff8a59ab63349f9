"""``estimate(model, inputs_or_loader)``: the papers' energy estimate, measured on real data.

E = E_MAC · Σ_l MACs_l + E_AC · Σ_l SOP_l, with SOP_l = r_l · T · FLOPs_l for a layer l whose input is spikes
(r_l the firing rate of those spikes, FLOPs_l the MACs of one time step) and MACs_l = FLOPs_l for a real-valued
input that is the same at every step (direct coding: computed once) or T · FLOPs_l for one that changes
(Yao et al.; Spikformer, Zhou et al. 2023; Spike-Driven Transformer V1/V2, Yao et al. 2023/2024).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from .. import functional
from .costs import CostTable, cost_table
from .report import EnergyReport, LayerEnergy
from .tracker import Source, Tracker

__all__ = ["estimate"]


def _is_multi_step_only(module: nn.Module) -> bool:
    from .. import layer, neuron

    return isinstance(module, layer.SeqToANNContainer | layer.MultiStepContainer | layer.tdLayer
                      | layer.tdBatchNorm | layer._ThresholdDependentBatchNorm | neuron.LIFSpike)


def _resolve_step_mode(model: nn.Module, step_mode: str | None) -> str:
    if step_mode is not None:
        if step_mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's', 'm' or None (from the model), got {step_mode!r}")
        return step_mode
    modes = {getattr(m, "step_mode", None) for m in model.modules()}
    if "m" in modes or any(_is_multi_step_only(m) for m in model.modules()):
        return "m"
    return "s"


def _batches(data) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        yield data
        return
    if not isinstance(data, Iterable):
        raise TypeError(f"inputs must be a tensor [T, N, ...] or an iterable of batches, got {type(data).__name__}")
    for item in data:
        x = item[0] if isinstance(item, list | tuple) and item else item
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"a batch must be a tensor or an (x, label) pair, got {type(x).__name__}")
        yield x


def _encoder(encoder) -> Callable[[torch.Tensor, int], torch.Tensor]:
    if encoder is None or encoder in ("direct", "repeat"):
        return lambda x, T: x.unsqueeze(0).expand(T, *x.shape)
    if encoder == "poisson":
        from ..encoding import PoissonEncoder

        poisson = PoissonEncoder()
        return lambda x, T: poisson.encode_sequence(x, T)
    if callable(encoder):
        return encoder
    raise ValueError(f"encoder must be None/'direct', 'poisson' or a callable (x, T) -> [T, N, ...], got {encoder!r}")


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


@torch.no_grad()
def estimate(model: nn.Module, inputs, *, T: int | None = None, encoder=None, input_spikes: bool | None = None,
             costs: str | CostTable | dict = "fp32", first_layer_mac_per_step: bool | None = None,
             step_mode: str | None = None, batches: int | None = None, device=None, model_name: str = "",
             data_name: str = "") -> EnergyReport:
    """Measure the per-sample inference energy of ``model`` on ``inputs`` (the papers' MAC/AC estimate).

    Args:
        model: any module; its neurons are found through ``module.spec``. It runs in eval mode, without
            gradients, and its state is reset before and after every batch.
        inputs: a tensor ``[T, N, ...]`` (T is taken from it), or an iterable (a DataLoader) of batches, each a
            tensor or an ``(x, label, ...)`` tuple. With ``T`` given, every batch is ``[N, ...]`` and is encoded
            into ``[T, N, ...]`` by ``encoder``.
        T: time steps to encode each ``[N, ...]`` batch into (``None``: the batches are sequences already).
        encoder: ``None``/``'direct'`` (repeat the input, direct coding), ``'poisson'``, or ``f(x, T)``.
        input_spikes: the model input is a spike train (e.g. Poisson-coded); it must hold only 0 and 1, and the
            first layer is then charged ACs. Default: True for ``encoder='poisson'``, else False (real input).
        costs: ``'fp32'`` (E_MAC 4.6 pJ, E_AC 0.9 pJ), ``'fp16'``, ``'int8'`` (Horowitz, ISSCC 2014, 45 nm), a
            :class:`CostTable` or a dict ``{'mac_pj': ..., 'ac_pj': ...}``.
        first_layer_mac_per_step: for the first synaptic layer with real-valued input: ``None`` charges its MACs
            once when its input is identical at every step (direct coding) and T times when it changes;
            ``True`` always T times; ``False`` always once.
        step_mode: ``'m'`` calls ``model(x_seq)`` once per batch, ``'s'`` calls ``model(x_seq[t])`` for each step.
            Default: ``'m'`` if any module is in multi-step mode, else ``'s'``.
        batches: use at most this many batches of a loader.
        device: where to run (default: the model's parameters' device).
        model_name, data_name: labels for the card.

    Returns:
        an :class:`EnergyReport`: ``layers`` (rows with ``name, type, input_is_spikes, flops, input_rate, sops,
        macs, energy_pj``, ...), ``total_energy_pj``, ``ann``, ``to_json()``, ``to_markdown()``, ``plot(path)``.
    """
    costs = cost_table(costs)
    if T is not None and (isinstance(T, bool) or not isinstance(T, int) or T < 1):
        raise ValueError(f"T must be a positive integer or None, got {T!r}")
    if batches is not None and (not isinstance(batches, int) or batches < 1):
        raise ValueError(f"batches must be a positive integer or None, got {batches!r}")
    if first_layer_mac_per_step not in (None, True, False):
        raise ValueError(f"first_layer_mac_per_step must be None, True or False, got {first_layer_mac_per_step!r}")
    mode = _resolve_step_mode(model, step_mode)
    encode = _encoder(encoder) if T is not None else None
    declared_spikes = (encoder == "poisson") if input_spikes is None else bool(input_spikes)
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    input_source = (Source("input_spikes", "model input (declared spikes, checked binary)") if declared_spikes
                    else Source("input", "model input (real-valued)"))

    tracker = Tracker(model, mode)
    was_training = model.training
    model.eval()
    tracker.attach()
    samples = n_batches = 0
    seq_T = None
    try:
        for x in _batches(inputs):
            if batches is not None and n_batches >= batches:
                break
            x = x.to(device)
            if encode is not None:
                if x.is_floating_point() is False:
                    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
                x = encode(x, T)
            if x.dim() < 2:
                raise ValueError(f"each input must be a sequence [T, N, ...], got shape {tuple(x.shape)} "
                                 "(pass T=... to encode [N, ...] batches)")
            if seq_T is None:
                seq_T = x.shape[0]
            elif x.shape[0] != seq_T:
                raise ValueError(f"every batch must have the same T, got {seq_T} and then {x.shape[0]}")
            if declared_spikes and not _is_binary(x):
                raise ValueError("input_spikes=True but the input holds values other than 0 and 1")
            steps, n = x.shape[0], x.shape[1]
            functional.reset_net(model)
            tracker.begin_batch(steps, n)
            with tracker:
                if mode == "m":
                    tracker.tag(x, input_source)
                    model(x)
                else:
                    for t in range(steps):
                        x_t = x[t]
                        tracker.tag(x_t, input_source)
                        model(x_t)
            tracker.end_batch()
            functional.reset_net(model)
            samples += n
            n_batches += 1
    finally:
        tracker.detach()
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("no input: the loader yielded no batch")
    return _report(tracker, costs, seq_T, samples, n_batches, mode, first_layer_mac_per_step, model_name,
                   data_name, input_source.description + (f", encoded into T={T} steps" if T is not None else ""))


def _report(tracker: Tracker, costs: CostTable, T: int, samples: int, n_batches: int, mode: str,
            first_layer_mac_per_step, model_name: str, data_name: str, input_description: str) -> EnergyReport:
    rows, notes, graded = [], [], []
    policy = {None: "auto", True: "per_step", False: "once"}[first_layer_mac_per_step]
    for index, stats in enumerate(sorted(tracker.rows.values(), key=lambda r: r.order)):
        flops = stats.macs_all / stats.sample_steps if stats.sample_steps else 0.0
        steps = stats.sample_steps / samples
        spikes = stats.calls > 0 and stats.spike_calls == stats.calls
        description = "; ".join(stats.sources)
        note = ""
        if stats.spike_calls and not spikes:
            note = (f"input was spikes in {stats.spike_calls} of {stats.calls} calls, real-valued in the others: "
                    "all counted as MACs")
        if spikes:
            rate = stats.spike_nnz / stats.spike_numel if stats.spike_numel else 0.0
            sops, macs, static = rate * steps * flops, 0.0, None
        else:
            rate, sops = None, 0.0
            static = stats.static
            if index == 0 and first_layer_mac_per_step is not None:
                static = not first_layer_mac_per_step
                note = note or ("first layer charged " + ("at every step" if first_layer_mac_per_step else "once")
                                + f" by first_layer_mac_per_step={first_layer_mac_per_step} (input measured "
                                + ("static" if stats.static else "changing") + ")")
            macs = flops * (1.0 if static else steps)
        if not spikes and any(s.kind == "graded" for s in stats.sources.values()):
            graded.append(stats.name)
        energy = costs.mac_pj * macs + costs.ac_pj * sops
        rows.append(LayerEnergy(stats.name, stats.type, spikes, description, steps, flops, rate, static, sops, macs,
                                energy, note))
    if graded:
        kinds = sorted({type(m).__name__ for m, (_, spec, _) in tracker.neurons.items()
                        if not spec.binary_output or spec.smooth})
        notes.append(f"{len(graded)} layer(s) read a non-binary neuron output ({', '.join(kinds)}: "
                     "spec.binary_output=False or a smooth surrogate) and are counted as MACs, not SOPs: "
                     + ", ".join(f"`{name}`" for name in graded))
    if not rows:
        notes.append("no synaptic operation (conv / linear / matmul) ran: nothing to charge")
    neuron_rates = {name: nnz / numel for name, (nnz, numel) in tracker.neuron_counts.items() if numel}
    return EnergyReport(rows, costs, T, samples, n_batches, mode, model_name, data_name, input_description,
                        policy, neuron_rates, notes)
