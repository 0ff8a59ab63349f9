"""The energy report (the "energy card"): one row per synaptic layer, totals, the ANN comparison.

Every number of a row can be checked by hand from the other columns:

* spike input:  ``sops = input_rate × steps × flops``,  ``macs = 0``
* real input:   ``macs = flops × (1 if static_input else steps)``,  ``sops = 0``
* ``energy_pj = E_MAC × macs + E_AC × sops``

``flops`` is the number of multiply-accumulates (MACs, not 2 × MACs) of one time step of one sample.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .costs import CostTable

__all__ = ["LayerEnergy", "EnergyReport", "format_energy"]


@dataclass
class LayerEnergy:
    """One synaptic layer (Conv / Linear / matmul) of the network, per sample."""

    name: str
    type: str
    input_is_spikes: bool
    input_source: str          # who produced the input (a neuron and its spec, the model input, or computed)
    steps: float               # time steps the layer runs per sample (T, or 1 for a layer run once)
    flops: float               # MACs of one time step of one sample (bias not counted)
    input_rate: float | None   # firing rate of the input spikes (None: the input is real-valued)
    static_input: bool | None  # real input identical at every step (then charged once); None for spike input
    sops: float                # synaptic operations (ACs) per sample
    macs: float                # multiply-accumulates charged per sample
    energy_pj: float           # E_MAC · macs + E_AC · sops
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def format_energy(pj: float) -> str:
    """``1234.5`` pJ → ``'1.23 nJ'``."""
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def _count(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value - round(value)) < 1e-6 * max(1.0, abs(value)):
        return f"{int(round(value)):,}"
    return f"{value:,.2f}"


CONVENTIONS = (
    "`flops` = multiply-accumulates (MACs) of one time step of one sample, counted by "
    "`torch.utils.flop_counter.FlopCounterMode` for conv / linear / matmul (it counts 2 FLOPs per MAC; the card "
    "shows MACs). Bias additions, normalisation, pooling and the neurons' own updates are not counted.",
    "A layer's input counts as spikes only when the module that produced it describes itself as binary "
    "(`module.spec.binary_output` is True, traced through reshapes, max-pooling, indexing and concatenation of "
    "spikes), or when the caller declared the model input to be spikes (checked to hold only 0 and 1). "
    "Spike input: SOPs = input firing rate × steps × flops, charged at E_AC. Anything else (images, "
    "batch-normalised values, graded neuron outputs) is real-valued: MACs at E_MAC.",
    "A real-valued input identical at every time step (a direct-coded image into the first layer) is charged "
    "once, a changing one once per step; `first_layer_mac_per_step` overrides this for the first layer.",
    "Energies are per sample, averaged over every sample measured. The ANN comparison is the same network with "
    "every layer's flops as MACs at E_MAC, one pass (no time steps).",
)


@dataclass
class EnergyReport:
    """What :func:`spikeforge.energy.estimate` returns; ``layers`` holds one :class:`LayerEnergy` per row."""

    layers: list[LayerEnergy]
    costs: CostTable
    T: int
    samples: int
    batches: int
    step_mode: str
    model: str = ""
    data: str = ""
    input_description: str = ""
    first_layer_policy: str = "auto"
    neuron_rates: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------ totals
    @property
    def total_energy_pj(self) -> float:
        return sum(row.energy_pj for row in self.layers)

    @property
    def total_sops(self) -> float:
        return sum(row.sops for row in self.layers)

    @property
    def total_macs(self) -> float:
        return sum(row.macs for row in self.layers)

    @property
    def mac_energy_pj(self) -> float:
        return self.costs.mac_pj * self.total_macs

    @property
    def ac_energy_pj(self) -> float:
        return self.costs.ac_pj * self.total_sops

    @property
    def input_rates(self) -> dict[str, float]:
        """Input firing rate of each layer that reads spikes."""
        return {row.name: row.input_rate for row in self.layers if row.input_rate is not None}

    @property
    def ann(self) -> dict:
        """The same network as an ANN: every layer's flops as MACs at E_MAC, one pass."""
        macs = sum(row.flops for row in self.layers)
        energy = self.costs.mac_pj * macs
        snn = self.total_energy_pj
        return {"macs": macs, "energy_pj": energy, "snn_energy_pj": snn,
                "ann_over_snn": energy / snn if snn > 0 else None}

    # -------------------------------------------------------------------------------------- exporting
    def to_dict(self) -> dict:
        return {
            "model": self.model, "data": self.data, "input": self.input_description, "T": self.T,
            "samples": self.samples, "batches": self.batches, "step_mode": self.step_mode,
            "first_layer_policy": self.first_layer_policy, "costs": self.costs.to_dict(),
            "flops_unit": "MACs (multiply-accumulates) of one time step of one sample; not 2 x MACs",
            "layers": [row.to_dict() for row in self.layers],
            "total_energy_pj": self.total_energy_pj, "total_sops": self.total_sops, "total_macs": self.total_macs,
            "mac_energy_pj": self.mac_energy_pj, "ac_energy_pj": self.ac_energy_pj, "ann": self.ann,
            "neuron_rates": self.neuron_rates, "conventions": list(CONVENTIONS), "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_markdown(self) -> str:
        c = self.costs
        lines = [f"# Energy card{': ' + self.model if self.model else ''}", ""]
        facts = [("data", self.data), ("input", self.input_description), ("time steps T", str(self.T)),
                 ("samples measured", f"{self.samples:,} in {self.batches} batch(es)"),
                 ("step mode", {"m": "multi-step ([T, N, ...] in one call)",
                                "s": "single-step (one call per time step)"}.get(self.step_mode, self.step_mode)),
                 ("cost table", f"{c.name}: E_MAC = {c.mac_pj:g} pJ, E_AC = {c.ac_pj:g} pJ ({c.source})"),
                 ("first layer", {"auto": "charged once if its input is identical at every step, else per step",
                                  "per_step": "charged at every step (first_layer_mac_per_step=True)",
                                  "once": "charged once (first_layer_mac_per_step=False)"}
                  .get(self.first_layer_policy, self.first_layer_policy))]
        lines += [f"- **{k}**: {v}" for k, v in facts if v]
        lines += ["", "**E = E_MAC · Σ MACs + E_AC · Σ SOPs** with, per layer, SOPs = input rate × steps × flops "
                  "(spike input) or MACs = flops × (1 if static else steps) (real input). "
                  "**flops = MACs (multiply-accumulates) of one time step of one sample, not 2 × MACs.**", ""]
        lines += ["| layer | type | input | input from | steps | flops (MACs/step) | input rate | SOPs | MACs | "
                  "energy | share |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        total = self.total_energy_pj
        for row in self.layers:
            kind = "spikes (AC)" if row.input_is_spikes else ("real, static (MAC once)" if row.static_input
                                                               else "real (MAC)")
            share = f"{100 * row.energy_pj / total:.1f} %" if total > 0 else "—"
            rate = "—" if row.input_rate is None else f"{row.input_rate:.4f}"
            lines.append(f"| `{row.name}` | {row.type} | {kind} | {row.input_source} | {_count(row.steps)} | "
                         f"{_count(row.flops)} | {rate} | {_count(row.sops)} | {_count(row.macs)} | "
                         f"{row.energy_pj:,.1f} pJ | {share} |")
        ann = self.ann
        ratio = f"{ann['ann_over_snn']:.2f}x" if ann["ann_over_snn"] is not None else "—"
        exact = f" ({total:,.1f} pJ)" if not format_energy(total).endswith(" pJ") else ""
        lines += ["", f"**Total: {format_energy(total)} per sample**{exact} = "
                  f"{format_energy(self.mac_energy_pj)} MAC ({_count(self.total_macs)} MACs × {c.mac_pj:g} pJ) + "
                  f"{format_energy(self.ac_energy_pj)} AC ({_count(self.total_sops)} SOPs × {c.ac_pj:g} pJ).", "",
                  f"**Same network as an ANN** (every layer's flops as MACs at E_MAC, one pass): "
                  f"{_count(ann['macs'])} MACs, {format_energy(ann['energy_pj'])} per sample; "
                  f"ANN / SNN = {ratio}.", ""]
        if self.neuron_rates:
            lines += ["Neuron firing rates (spikes per neuron per step): " +
                      ", ".join(f"`{k}` {v:.4f}" for k, v in self.neuron_rates.items()), ""]
        if self.notes:
            lines += ["Notes:", ""] + [f"- {note}" for note in self.notes] + [""]
        lines += ["Conventions:", ""] + [f"- {text}" for text in CONVENTIONS] + [""]
        return "\n".join(lines)

    # ---------------------------------------------------------------------------------------- picture
    def plot(self, path: str | os.PathLike | None = None, dpi: int = 120):
        """Bar chart of the energy of each layer (MAC and AC parts) next to its input firing rate; saved to
        ``path`` (PNG) when given. Returns ``(fig, (ax_energy, ax_rate))``. Needs matplotlib (extra ``viz``)."""
        from .. import visualizing

        plt = visualizing._pyplot()
        names = [row.name for row in self.layers]
        height = max(3.0, 0.45 * len(names) + 1.6)
        fig, (ax_e, ax_r) = plt.subplots(1, 2, figsize=(12, height), dpi=dpi, sharey=True,
                                         gridspec_kw={"width_ratios": [3, 2]}, layout="constrained")
        y = list(range(len(names)))
        mac = [self.costs.mac_pj * row.macs for row in self.layers]
        ac = [self.costs.ac_pj * row.sops for row in self.layers]
        ax_e.barh(y, mac, height=0.6, color="tab:orange", label=f"MAC ({self.costs.mac_pj:g} pJ each)")
        ax_e.barh(y, ac, height=0.6, left=mac, color="tab:blue", label=f"AC ({self.costs.ac_pj:g} pJ each)")
        peak = max([m + a for m, a in zip(mac, ac, strict=True)] + [1e-12])
        for i, (m, a) in enumerate(zip(mac, ac, strict=True)):
            ax_e.text(m + a + peak * 0.01, i, format_energy(m + a), va="center", fontsize=8)
        ax_e.set_xlim(0, peak * 1.3)
        ax_e.set_yticks(y)
        ax_e.set_yticklabels(names)
        ax_e.set_ylim(len(names) - 0.5, -0.5)
        ax_e.set_xlabel("energy per sample (pJ)")
        ax_e.set_title(f"energy per layer: total {format_energy(self.total_energy_pj)} per sample "
                       f"(as an ANN: {format_energy(self.ann['energy_pj'])})", fontsize=10)
        ax_e.legend(loc="lower right", fontsize=8)
        rates = {row.name: (row.input_rate if row.input_rate is not None else float("nan")) for row in self.layers}
        visualizing.plot_firing_rates(rates, ax=ax_r, title="input firing rate of each layer",
                                      missing_label="real-valued input (MACs)")
        ax_r.title.set_fontsize(10)
        ax_r.tick_params(labelleft=False)
        title = f"{self.model}  " if self.model else ""
        fig.suptitle(f"{title}T = {self.T}, {self.costs.name} (E_MAC {self.costs.mac_pj:g} pJ, "
                     f"E_AC {self.costs.ac_pj:g} pJ)", fontsize=11)
        if path is not None:
            fig.savefig(path, bbox_inches="tight")
        return fig, (ax_e, ax_r)

    def save(self, out_dir: str | os.PathLike, plot: bool = True) -> list[Path]:
        """Write ``card.md``, ``card.json`` and (with matplotlib) ``energy.png`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "card.md", out / "card.json"]
        written[0].write_text(self.to_markdown(), encoding="utf-8")
        written[1].write_text(self.to_json() + "\n", encoding="utf-8")
        if plot:
            from .. import visualizing

            plt = visualizing._pyplot()
            fig, _ = self.plot(out / "energy.png")
            plt.close(fig)
            written.append(out / "energy.png")
        return written
