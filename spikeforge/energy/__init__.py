"""Energy estimates people can audit: the MAC/AC method of the SNN papers, measured on real data.

    from spikeforge import energy
    report = energy.estimate(model, x_seq)                 # x_seq [T, N, ...], or a loader of (x, label)
    report = energy.estimate(model, loader, T=4)           # [N, ...] batches, direct-coded into T steps
    report.total_energy_pj, report.layers[0].sops, report.ann
    print(report.to_markdown()); report.plot("energy.png"); report.save("card/")

E = E_MAC · Σ MACs + E_AC · Σ SOPs. A layer whose input is binary spikes (its producer's ``spec.binary_output``)
costs SOPs = firing rate × T × FLOPs accumulates; any other layer costs MACs (FLOPs once for an input that is the
same at every step, T × FLOPs for a changing one). FLOPs here are multiply-accumulates of one time step of one
sample. Cost tables: :data:`COST_TABLES` (fp32 / fp16 / int8, Horowitz ISSCC 2014, 45 nm) or your own
:class:`CostTable`. The ``spikeforge energy`` command writes the card for a zoo model or lif_fc_mnist.
"""

from .costs import COST_TABLES, CostTable, cost_table
from .estimate import estimate
from .report import EnergyReport, LayerEnergy, format_energy

__all__ = ["estimate", "EnergyReport", "LayerEnergy", "CostTable", "COST_TABLES", "cost_table", "format_energy"]
