"""Hardware profiles: what an integer neuromorphic target can hold, checked when a network is exported.

A :class:`HardwareProfile` bounds the integer network: signed weight codes of ``weight_bits``, a membrane
register of ``membrane_bits`` (the membrane saturates there; biases live in it too), thresholds of
``threshold_bits``, at most ``max_fan_in`` synapses into one neuron, an accumulator of ``accumulator_bits`` for
one step's input current, input codes of ``input_bits`` and leak multipliers of ``leak_bits``.
:func:`check_profile` lists *every* violation (layer, quantity, needed vs allowed) in one
:class:`ProfileViolationError`.

``GENERIC_INT8`` and ``GENERIC_INT4`` are generic targets (not a particular chip): 8-bit weights with a 16-bit
membrane, 4-bit weights with a 12-bit membrane, both with 8-bit input, fan-in up to 8192 (STBP's ResNet18 sums a
3x3 convolution over 512 channels and a shortcut into one neuron: 4864) and a 32-bit accumulator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UserError

__all__ = ["HardwareProfile", "ProfileViolationError", "GENERIC_INT8", "GENERIC_INT4", "generic_profile",
           "PROFILES"]


class ProfileViolationError(UserError, ValueError):
    """The network does not fit the hardware profile; ``violations`` lists each problem (also in the message)."""

    def __init__(self, profile: str, violations: list[str]):
        self.profile = profile
        self.violations = list(violations)
        lines = "\n".join(f"  - {v}" for v in self.violations)
        super().__init__(f"the network violates hardware profile {profile!r} ({len(self.violations)} "
                         f"violation{'s' if len(self.violations) != 1 else ''}):\n{lines}")


def _positive_int(value, name: str, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return value


@dataclass(frozen=True)
class HardwareProfile:
    """Integer limits of a deployment target (see the module docstring)."""

    name: str
    weight_bits: int
    membrane_bits: int
    threshold_bits: int
    max_fan_in: int | None = None
    accumulator_bits: int = 32
    input_bits: int = 8
    leak_bits: int = 8

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a hardware profile needs a name")
        _positive_int(self.weight_bits, "weight_bits", 2, 16)
        _positive_int(self.membrane_bits, "membrane_bits", 4, 32)
        _positive_int(self.threshold_bits, "threshold_bits", 2, 32)
        _positive_int(self.accumulator_bits, "accumulator_bits", 8, 64)
        _positive_int(self.input_bits, "input_bits", 2, 16)
        _positive_int(self.leak_bits, "leak_bits", 0, 16)
        if self.max_fan_in is not None:
            _positive_int(self.max_fan_in, "max_fan_in")
        if self.membrane_bits + self.leak_bits > 48:
            raise ValueError("membrane_bits + leak_bits must be <= 48 (the membrane times the leak multiplier is "
                             "kept exact)")

    @property
    def weight_max(self) -> int:
        return 2 ** (self.weight_bits - 1) - 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HardwareProfile:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown hardware profile field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


GENERIC_INT8 = HardwareProfile("generic_int8", weight_bits=8, membrane_bits=16, threshold_bits=16,
                               max_fan_in=8192)
GENERIC_INT4 = HardwareProfile("generic_int4", weight_bits=4, membrane_bits=12, threshold_bits=12,
                               max_fan_in=8192)
PROFILES = {p.name: p for p in (GENERIC_INT8, GENERIC_INT4)}


def generic_profile(bits: int) -> HardwareProfile:
    """``GENERIC_INT8`` / ``GENERIC_INT4``, or for other widths a generic profile with a membrane of
    ``clamp(2·bits, 12, 24)`` bits."""
    if bits == 8:
        return GENERIC_INT8
    if bits == 4:
        return GENERIC_INT4
    membrane = min(24, max(12, 2 * bits))
    return HardwareProfile(f"generic_int{bits}", weight_bits=bits, membrane_bits=membrane, threshold_bits=membrane,
                           max_fan_in=8192)
