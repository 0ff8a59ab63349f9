"""Energy per operation: the cost tables an energy report multiplies its operation counts with.

The presets are the 45 nm, 0.9 V figures of M. Horowitz, "Computing's energy problem (and what we can do about
it)", ISSCC 2014, pp. 10-14 (the energy-per-operation table of that talk, the source Spikformer, the
Spike-Driven Transformer V1/V2 and most SNN papers cite for E_MAC = 4.6 pJ and E_AC = 0.9 pJ):

=========  ===============  ==============  =========================  ==================
preset     multiply (pJ)    add (pJ)        E_MAC = mult + add (pJ)    E_AC = add (pJ)
=========  ===============  ==============  =========================  ==================
``fp32``   3.7 (32-bit FP)  0.9 (32-bit FP) 4.6                        0.9
``fp16``   1.1 (16-bit FP)  0.4 (16-bit FP) 1.5                        0.4
``int8``   0.2 (8-bit int)  0.03 (8-bit int) 0.23                      0.03
=========  ===============  ==============  =========================  ==================

A MAC (multiply-accumulate, the operation of a real-valued input) costs one multiplication and one addition; an
AC (accumulate, the operation of a binary spike: the weight is added, nothing is multiplied) costs one addition.
Memory access, which dominates on real hardware, is not in these numbers (nor in the papers' estimates).

Define your own with ``CostTable(mac_pj=..., ac_pj=..., name=..., source=...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CostTable", "COST_TABLES", "HOROWITZ_2014", "cost_table"]

HOROWITZ_2014 = ("M. Horowitz, \"Computing's energy problem (and what we can do about it)\", ISSCC 2014, "
                 "energy per operation at 45 nm, 0.9 V")


@dataclass(frozen=True)
class CostTable:
    """Energy of one MAC (multiply-accumulate) and one AC (accumulate), in picojoules."""

    mac_pj: float
    ac_pj: float
    name: str = "custom"
    source: str = "user-defined"
    mult_pj: float | None = None   # the parts of mac_pj, when known (shown on the card)
    add_pj: float | None = None

    def __post_init__(self):
        for field_name in ("mac_pj", "ac_pj"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{field_name} must be a finite number >= 0 (picojoules), got {value!r}")
            object.__setattr__(self, field_name, float(value))

    def to_dict(self) -> dict:
        return {"name": self.name, "mac_pj": self.mac_pj, "ac_pj": self.ac_pj, "mult_pj": self.mult_pj,
                "add_pj": self.add_pj, "source": self.source}


def _horowitz(name: str, mult: float, add: float, what: str) -> CostTable:
    return CostTable(mac_pj=round(mult + add, 6), ac_pj=add, name=name, source=f"{HOROWITZ_2014}; {what}",
                     mult_pj=mult, add_pj=add)


COST_TABLES: dict[str, CostTable] = {
    "fp32": _horowitz("fp32", 3.7, 0.9, "32-bit float multiply 3.7 pJ + add 0.9 pJ"),
    "fp16": _horowitz("fp16", 1.1, 0.4, "16-bit float multiply 1.1 pJ + add 0.4 pJ"),
    "int8": _horowitz("int8", 0.2, 0.03, "8-bit integer multiply 0.2 pJ + add 0.03 pJ"),
}


def cost_table(costs: str | CostTable | dict) -> CostTable:
    """A preset by name (``'fp32'``, ``'fp16'``, ``'int8'``), a :class:`CostTable`, or a dict of its fields."""
    if isinstance(costs, CostTable):
        return costs
    if isinstance(costs, dict):
        return CostTable(**costs)
    if isinstance(costs, str):
        try:
            return COST_TABLES[costs.lower()]
        except KeyError:
            raise ValueError(f"unknown cost table {costs!r}; presets: {', '.join(COST_TABLES)} "
                             "(or pass CostTable(mac_pj=..., ac_pj=...))") from None
    raise TypeError(f"costs must be a preset name, a CostTable or a dict, got {type(costs).__name__}")
