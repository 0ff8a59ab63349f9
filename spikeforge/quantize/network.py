"""The exported integer network: integer weights, thresholds, leak and membrane, a simulator, a pickle-free file.

:func:`export_integer` reads an integer-prepared model (``prepare_qat(model, integer=True)``, see
:mod:`spikeforge.quantize.integer` for the equations) and returns an :class:`IntegerNetwork`:

* a list of nodes (plain JSON): ``input`` (the input quantiser: scale, bits), ``conv`` / ``linear`` (integer
  weight codes), ``identity`` (an integer gain per channel), ``sumpool`` / ``global_sumpool``, ``flatten`` and
  ``neuron`` (integer bias and threshold, leak multiplier and shift, fractional and membrane bits);
* integer arrays (weights, biases, thresholds, gains).

:meth:`IntegerNetwork.run` takes the same float images as the model: after the input quantisation
``clamp(round(x·s_in))`` it computes with integer tensors only (int32/int64 convolutions and matrix products,
integer shifts, comparisons) and returns the output spike counts ``[N, num_classes]``. Its spikes are those of
the fake-quant model, bit for bit (:func:`compare_spikes` checks every neuron of every layer).

:meth:`IntegerNetwork.save` writes a folder with ``manifest.json`` (the nodes, the profile, the arrays' dtype,
shape, bit width and sha256) and ``arrays.npz`` (``numpy.savez``; 4-bit weights packed two per byte); nothing is
pickled, and :func:`load_integer` reads it with ``allow_pickle=False`` and checks hashes, shapes, value ranges
and the graph before use (:class:`IntegerFileError` names what is wrong). Export and load check the network
against its :class:`~spikeforge.quantize.HardwareProfile`; every violation is named
(:class:`~spikeforge.quantize.ProfileViolationError`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .integer import IdentityQuant, IntegerLIFMixin, SynapseQuant, is_integer_prepared
from .profile import HardwareProfile, ProfileViolationError

__all__ = ["IntegerNetwork", "IntegerFileError", "export_integer", "load_integer", "compare_spikes",
           "check_profile", "FORMAT", "VERSION"]

FORMAT = "spikeforge.integer_snn"
VERSION = 1
_OPS = ("input", "conv", "linear", "identity", "sumpool", "global_sumpool", "flatten", "neuron")
_MANIFEST = "manifest.json"
_ARRAYS = "arrays.npz"


class IntegerFileError(UserError, ValueError):
    """An integer network file is missing, corrupt, inconsistent or not of this format; the message says which."""


def _ints(t: torch.Tensor) -> np.ndarray:
    a = t.detach().cpu().double().numpy()
    if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
        raise ValueError("internal error: a quantity of the integer network is not an integer")
    return a.astype(np.int64)


def _signed_bits(values: np.ndarray) -> int:
    """Bits of the smallest signed two's-complement integer type that holds ``values``' magnitudes symmetrically."""
    m = int(np.abs(values).max()) if values.size else 0
    return max(2, m.bit_length() + 1)


# ------------------------------------------------------------------------------------------------ the network
class IntegerNetwork:
    """An integer spiking network (see the module docstring). Build with :func:`export_integer`."""

    def __init__(self, nodes: list[dict], arrays: dict[str, np.ndarray], *, steps: int, bits: int,
                 per_channel: bool, profile: HardwareProfile, num_classes: int, meta: dict | None = None):
        self.nodes = nodes
        self.arrays = {k: np.asarray(v, dtype=np.int64) for k, v in arrays.items()}
        self.steps = int(steps)
        self.bits = int(bits)
        self.per_channel = bool(per_channel)
        self.profile = profile
        self.num_classes = int(num_classes)
        self.meta = dict(meta or {})
        self._validate("the network")
        self._tensors = {k: torch.from_numpy(v) for k, v in self.arrays.items()}

    # -- structure --------------------------------------------------------------------------------------------
    @property
    def input_node(self) -> dict:
        return self.nodes[0]

    def neuron_names(self) -> list[str]:
        return [n["name"] for n in self.nodes if n["op"] == "neuron"]

    def _validate(self, where: str) -> None:
        def fail(msg):
            raise IntegerFileError(f"{where}: {msg}")

        if not self.nodes or self.nodes[0].get("op") != "input":
            fail("the first node must be the input quantiser")
        for i, node in enumerate(self.nodes):
            op = node.get("op")
            if op not in _OPS:
                fail(f"node {i} has unknown op {op!r}")
            src = node.get("src", [])
            if op != "input" and (not src or not all(isinstance(j, int) and 0 <= j < i for j in src)):
                fail(f"node {i} ({op} {node.get('name', '')!r}) reads nodes {src}, which do not come before it")
            for key in ("weight", "bias", "threshold", "gain"):
                ref = node.get(key)
                if ref is not None and ref not in self.arrays:
                    fail(f"node {i} ({op} {node.get('name', '')!r}) refers to array {ref!r}, which is missing")
            if op == "neuron":
                for key in ("frac_bits", "leak_mult", "leak_shift", "membrane_bits"):
                    if not isinstance(node.get(key), int) or node[key] < 0:
                        fail(f"neuron {node.get('name')!r} has no valid {key}")
                for j in src:
                    if self.nodes[j]["op"] not in ("conv", "linear", "identity", "sumpool", "global_sumpool"):
                        fail(f"neuron {node.get('name')!r} reads node {j} ({self.nodes[j]['op']}), not a current")
                channels = self._channels(i)
                for key in ("threshold", "bias"):
                    ref = node.get(key)
                    if ref is not None and self.arrays[ref].size not in (1, channels):
                        fail(f"neuron {node['name']!r}: {key} has {self.arrays[ref].size} values for {channels} "
                             f"channels")
            if op in ("conv", "linear"):
                w = self.arrays[node["weight"]]
                if w.ndim != (2 if op == "linear" else 4):
                    fail(f"{op} {node.get('name')!r}: weight of shape {w.shape}")
                qmax = 2 ** (self.bits - 1) - 1
                if w.size and np.abs(w).max() > qmax:
                    fail(f"{op} {node.get('name')!r}: weight codes up to {np.abs(w).max()} exceed {self.bits} bits")
        if self.nodes[-1]["op"] != "neuron":
            fail("the last node must be a neuron (the output layer)")

    def _channels(self, index: int) -> int:
        """Output channels of node ``index`` (a neuron: of its first input)."""
        node = self.nodes[index]
        if node["op"] == "neuron":
            return self._channels(node["src"][0])
        if node["op"] in ("conv", "linear"):
            return int(self.arrays[node["weight"]].shape[0])
        if node["op"] == "identity":
            return self._channels(node["src"][0])
        if node["op"] == "input":
            return int(node["shape"][0])
        return self._channels(node["src"][0])

    # -- the simulator ----------------------------------------------------------------------------------------
    def quantize_input(self, images: torch.Tensor) -> torch.Tensor:
        """``clamp(round(x·s_in), ±(2^(b−1)−1))`` as int64 ``[T, N, C, H, W]`` (images repeated ``steps``
        times; a 5-D ``[T, N, ...]`` sequence is taken as it is)."""
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError("images must be a floating-point tensor [N, C, H, W] (or [T, N, C, H, W])")
        node = self.input_node
        expect = tuple(node["shape"])
        if images.dim() == len(expect) + 1:
            images = images.unsqueeze(0).expand(self.steps, *images.shape)
        if images.dim() != len(expect) + 2 or tuple(images.shape[2:]) != expect:
            raise ValueError(f"images must be [N, {', '.join(map(str, expect))}] (or [T, N, ...]), got "
                             f"{tuple(images.shape)}")
        qmax = 2 ** (node["bits"] - 1) - 1
        return (images.double() * node["scale"]).round().clamp(-qmax, qmax).to(torch.int64)

    def run(self, images: torch.Tensor, return_spikes: bool = False):
        """Output spike counts ``[N, num_classes]`` (int64) for float ``images``; with ``return_spikes`` also
        ``{neuron name: spikes [T, N, ...] (uint8)}`` for every neuron."""
        with torch.no_grad():
            return self._run(images, return_spikes)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class per image: argmax of the spike counts (the first of equal counts, as ``torch.argmax``)."""
        return self.run(images).argmax(1)

    def _run(self, images, return_spikes):
        values: list[torch.Tensor | None] = [None] * len(self.nodes)
        spikes = {}
        for i, node in enumerate(self.nodes):
            op = node["op"]
            if op == "input":
                values[i] = self.quantize_input(images)
                continue
            x = values[node["src"][0]]
            if op == "conv":
                w = self._tensors[node["weight"]]
                dtype = torch.int32 if node["acc_bits"] <= 31 else torch.int64
                t, n = x.shape[:2]
                y = F.conv2d(x.flatten(0, 1).to(dtype), w.to(dtype), None, tuple(node["stride"]),
                             tuple(node["padding"]), tuple(node["dilation"]), node["groups"])
                values[i] = y.to(torch.int64).view(t, n, *y.shape[1:])
            elif op == "linear":
                w = self._tensors[node["weight"]]
                values[i] = torch.matmul(x, w.t())
            elif op == "identity":
                g = self._tensors[node["gain"]]
                values[i] = x * (g.view(-1, *([1] * (x.dim() - 3))) if g.dim() else g)
            elif op == "sumpool":
                k = node["kernel"]
                t, n, c, h, w_ = x.shape
                x = x[..., : h - h % k, : w_ - w_ % k]  # AvgPool2d(k) drops the remainder
                values[i] = x.reshape(t, n, c, h // k, k, w_ // k, k).sum((4, 6))
            elif op == "global_sumpool":
                values[i] = x.sum((-2, -1), keepdim=True)
            elif op == "flatten":
                values[i] = x.flatten(2)
            elif op == "neuron":
                acc = x
                for j in node["src"][1:]:
                    acc = acc + values[j]
                values[i] = self._neuron(node, acc)
                if return_spikes:
                    spikes[node["name"]] = values[i].to(torch.uint8)
            # free what no later node reads
            for j in node.get("src", []):
                if all(j not in later.get("src", []) for later in self.nodes[i + 1:]):
                    values[j] = None
        counts = values[-1].sum(0)
        return (counts, spikes) if return_spikes else counts

    def _channel(self, key: str | None, ndim: int) -> torch.Tensor | int:
        if key is None:
            return 0
        t = self._tensors[key]
        if t.numel() == 1:
            return t.reshape(())
        return t.view(-1, *([1] * (ndim - 3)))

    def _neuron(self, node: dict, acc: torch.Tensor) -> torch.Tensor:
        current = acc * (2 ** node["frac_bits"]) + self._channel(node.get("bias"), acc.dim())
        theta = self._channel(node["threshold"], acc.dim())
        lo, hi = -(2 ** (node["membrane_bits"] - 1)), 2 ** (node["membrane_bits"] - 1) - 1
        m, k = node["leak_mult"], node["leak_shift"]
        u = torch.zeros_like(current[0])
        o = torch.zeros_like(u)
        out = []
        for t in range(current.shape[0]):
            v = u * (1 - o)
            u = torch.clamp(torch.div(v * m, 2 ** k, rounding_mode="floor") + current[t], lo, hi)
            o = (u > theta).to(torch.int64)
            out.append(o)
        return torch.stack(out)

    # -- size and files ---------------------------------------------------------------------------------------
    def array_bits(self, key: str) -> int:
        """Bits per value of array ``key`` on the target: weights and gains at the weight width, biases at the
        membrane width, thresholds at the threshold width."""
        for node in self.nodes:
            if node.get("weight") == key or node.get("gain") == key:
                return self.bits
            if node.get("bias") == key:
                return node["membrane_bits"]
            if node.get("threshold") == key:
                return self.profile.threshold_bits
        raise KeyError(key)

    def size_bytes(self) -> int:
        """The network's parameters at their bit widths (weights at ``bits``, biases at the membrane width,
        thresholds at the threshold width), each array rounded up to whole bytes."""
        return sum(math.ceil(a.size * self.array_bits(k) / 8) for k, a in self.arrays.items())

    @staticmethod
    def file_bytes(path) -> int:
        """Bytes of a saved network on disk (manifest + arrays)."""
        path = Path(path)
        return sum(f.stat().st_size for f in (path / _MANIFEST, path / _ARRAYS))

    def save(self, path) -> Path:
        """Write ``path/manifest.json`` and ``path/arrays.npz`` (no pickle); returns the folder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        stored, meta = {}, {}
        for key, a in self.arrays.items():
            bits = self.array_bits(key)
            if bits <= 4:
                packed = _pack_nibbles(a)
                stored[key], packing = packed, "int4x2"
            else:
                dtype = np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32 if bits <= 32 else np.int64
                stored[key], packing = a.astype(dtype), np.dtype(dtype).name
            meta[key] = {"shape": list(a.shape), "bits": bits, "packing": packing,
                         "sha256": hashlib.sha256(np.ascontiguousarray(a, dtype="<i8").tobytes()).hexdigest()}
        buffer = io.BytesIO()
        np.savez(buffer, **stored)
        blob = buffer.getvalue()
        manifest = {"format": FORMAT, "version": VERSION, "steps": self.steps, "bits": self.bits,
                    "per_channel": self.per_channel, "num_classes": self.num_classes,
                    "profile": self.profile.to_dict(), "nodes": self.nodes, "arrays": meta,
                    "arrays_file": _ARRAYS, "arrays_sha256": hashlib.sha256(blob).hexdigest(), "meta": self.meta}
        _atomic_write(path / _ARRAYS, blob)
        _atomic_write(path / _MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
        return path

    def __repr__(self) -> str:
        ops = [n["op"] for n in self.nodes]
        return (f"IntegerNetwork({len(self.neuron_names())} neuron layers, {ops.count('conv')} conv, "
                f"{ops.count('linear')} linear, {self.bits}-bit weights, steps={self.steps}, "
                f"profile={self.profile.name!r}, {self.size_bytes()} bytes)")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _pack_nibbles(a: np.ndarray) -> np.ndarray:
    flat = (a.reshape(-1) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def _unpack_nibbles(packed: np.ndarray, size: int) -> np.ndarray:
    lo = (packed & 0xF).astype(np.int64)
    hi = (packed >> 4).astype(np.int64)
    flat = np.empty(packed.size * 2, np.int64)
    flat[0::2], flat[1::2] = lo, hi
    flat = flat[:size]
    return np.where(flat >= 8, flat - 16, flat)


# ------------------------------------------------------------------------------------------------ loading
def load_integer(path) -> IntegerNetwork:
    """Read a network written by :meth:`IntegerNetwork.save` (a folder, or its ``manifest.json``).

    Raises :class:`IntegerFileError` naming the file and the problem (missing, not JSON, another format,
    hash mismatch, bad shape or range, broken graph) and :class:`ProfileViolationError` if it does not fit its
    own hardware profile.
    """
    path = Path(path)
    folder = path.parent if path.name == _MANIFEST else path
    manifest_path = folder / _MANIFEST
    if not manifest_path.is_file():
        raise IntegerFileError(f"{manifest_path}: missing (not an integer network folder written by "
                               f"IntegerNetwork.save)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegerFileError(f"{manifest_path}: not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IntegerFileError(f"{manifest_path}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise IntegerFileError(f"{manifest_path}: format version {manifest.get('version')!r}, this spikeforge "
                               f"reads version {VERSION}")
    required = ("steps", "bits", "per_channel", "num_classes", "profile", "nodes", "arrays", "arrays_sha256")
    missing = [k for k in required if k not in manifest]
    if missing:
        raise IntegerFileError(f"{manifest_path}: lacks {missing}")
    arrays_path = folder / manifest.get("arrays_file", _ARRAYS)
    if not arrays_path.is_file():
        raise IntegerFileError(f"{arrays_path}: missing")
    blob = arrays_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest["arrays_sha256"]:
        raise IntegerFileError(f"{arrays_path}: sha256 {digest} differs from the manifest's "
                               f"{manifest['arrays_sha256']}; the file is corrupt or was replaced")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise IntegerFileError(f"{arrays_path}: cannot be read as a numpy .npz without pickle ({e})") from None
    arrays = {}
    for key, meta in manifest["arrays"].items():
        if key not in stored:
            raise IntegerFileError(f"{arrays_path}: array {key!r} listed in the manifest is missing")
        a = stored[key]
        shape = tuple(meta["shape"])
        size = int(np.prod(shape)) if shape else 1
        if meta["packing"] == "int4x2":
            if a.dtype != np.uint8 or a.size != (size + 1) // 2:
                raise IntegerFileError(f"{arrays_path}: array {key!r} is not {size} packed 4-bit values")
            values = _unpack_nibbles(a, size).reshape(shape)
        else:
            if a.dtype.name != meta["packing"] or a.shape != shape:
                raise IntegerFileError(f"{arrays_path}: array {key!r} is {a.dtype.name} {a.shape}, the manifest "
                                       f"says {meta['packing']} {shape}")
            values = a.astype(np.int64)
        if hashlib.sha256(np.ascontiguousarray(values, dtype="<i8").tobytes()).hexdigest() != meta["sha256"]:
            raise IntegerFileError(f"{arrays_path}: array {key!r} does not match its sha256 in the manifest")
        arrays[key] = values
    try:
        profile = HardwareProfile.from_dict(manifest["profile"])
    except (TypeError, ValueError) as e:
        raise IntegerFileError(f"{manifest_path}: invalid hardware profile ({e})") from None
    net = IntegerNetwork(manifest["nodes"], arrays, steps=manifest["steps"], bits=manifest["bits"],
                         per_channel=manifest["per_channel"], profile=profile, num_classes=manifest["num_classes"],
                         meta=manifest.get("meta"))
    check_profile(net, profile)
    return net


# ------------------------------------------------------------------------------------------------ profile check
def check_profile(net: IntegerNetwork, profile: HardwareProfile | None = None) -> None:
    """Raise :class:`ProfileViolationError` listing every way ``net`` exceeds ``profile`` (default its own)."""
    profile = profile or net.profile
    problems = []
    qmax = profile.weight_max
    inp = net.input_node
    if inp["bits"] > profile.input_bits:
        problems.append(f"input: {inp['bits']}-bit input codes, the profile allows {profile.input_bits}")
    tmax = 2 ** (profile.threshold_bits - 1) - 1
    mmax = 2 ** (profile.membrane_bits - 1) - 1
    amax = 2 ** (profile.accumulator_bits - 1) - 1
    for node in net.nodes:
        op, name = node["op"], node.get("name", "")
        if op in ("conv", "linear", "identity"):
            key = node["weight"] if op != "identity" else node["gain"]
            w = net.arrays[key]
            worst = int(np.abs(w).max()) if w.size else 0
            if worst > qmax:
                problems.append(f"{op} {name!r}: weight codes up to {worst} need {_signed_bits(w)} bits, the "
                                f"profile allows {profile.weight_bits} (|code| <= {qmax})")
        if op != "neuron":
            continue
        fan_in = sum(net.nodes[j].get("fan_in", 0) for j in node["src"])
        if profile.max_fan_in is not None and fan_in > profile.max_fan_in:
            problems.append(f"neuron {name!r}: fan-in {fan_in} exceeds the profile's max_fan_in {profile.max_fan_in}")
        if node["membrane_bits"] > profile.membrane_bits:
            problems.append(f"neuron {name!r}: a {node['membrane_bits']}-bit membrane, the profile has "
                            f"{profile.membrane_bits} bits")
        theta = net.arrays[node["threshold"]]
        if theta.size and np.abs(theta).max() > tmax:
            problems.append(f"neuron {name!r}: threshold up to {int(np.abs(theta).max())} needs "
                            f"{_signed_bits(theta)} bits, the profile allows {profile.threshold_bits}")
        if node.get("bias") is not None:
            b = net.arrays[node["bias"]]
            if b.size and np.abs(b).max() > mmax:
                problems.append(f"neuron {name!r}: bias up to {int(np.abs(b).max())} does not fit the "
                                f"{profile.membrane_bits}-bit membrane")
        if node["leak_shift"] > profile.leak_bits or node["leak_mult"] > 2 ** profile.leak_bits:
            problems.append(f"neuron {name!r}: leak {node['leak_mult']}/2^{node['leak_shift']} needs more than the "
                            f"profile's {profile.leak_bits} leak bits")
        bound = sum(net.nodes[j].get("acc_bound", 0) for j in node["src"]) * 2 ** node["frac_bits"]
        if node.get("bias") is not None:
            bound += int(np.abs(net.arrays[node["bias"]]).max())
        if bound > amax:
            problems.append(f"neuron {name!r}: input current up to {bound} overflows the profile's "
                            f"{profile.accumulator_bits}-bit accumulator")
    if problems:
        raise ProfileViolationError(profile.name, problems)


# ------------------------------------------------------------------------------------------------ export
def _pair(v) -> list[int]:
    return [int(x) for x in (v if isinstance(v, tuple | list) else (v, v))]


def export_integer(model: nn.Module, profile: HardwareProfile | None = None) -> IntegerNetwork:
    """The integer network of an integer-prepared ``model`` (``prepare_qat(model, integer=True, ...)``).

    ``profile`` defaults to the one the model was prepared with; the network is checked against it and every
    violation is named in one :class:`ProfileViolationError`.
    """
    if not is_integer_prepared(model):
        raise ValueError(f"{type(model).__name__} is not integer-prepared: call spikeforge.quantize.prepare_qat("
                         "model, bits=..., integer=True, input_range=...) first (and train or load it)")
    plan = model.integer_plan
    profile = profile or plan.profile
    nodes: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    # the largest |value| each node can hand on (for the accumulator bound) and its fan-in
    reach: list[int] = []
    with torch.no_grad():
        for i, pn in enumerate(plan.nodes):
            if pn.op == "input":
                shape = list(plan.input_size) if plan.input_size else None
                if shape is None:
                    raise ValueError("the model was prepared without input_size; prepare it again with input_size=")
                nodes.append({"op": "input", "name": "input", "bits": plan.input_bits, "scale": plan.input_scale,
                              "range": plan.input_range, "shape": shape})
                reach.append(2 ** (plan.input_bits - 1) - 1)
                continue
            node = {"op": pn.op, "name": pn.name, "src": list(pn.src)}
            src_reach = reach[pn.src[0]]
            if pn.op == "synapse":
                q: SynapseQuant = pn.quant
                layer = q.module
                key = f"{pn.name}.weight"
                codes = _ints(q.codes())
                arrays[key] = codes
                if isinstance(layer, nn.Linear):
                    node.update(op="linear", weight=key, fan_in=int(codes.shape[1]))
                else:
                    if not isinstance(layer, nn.Conv2d) or layer.padding_mode != "zeros" or isinstance(
                            layer.padding, str):
                        raise ValueError(f"layer {pn.name!r}: only Conv2d with numeric zero padding is exported")
                    node.update(op="conv", weight=key, stride=_pair(layer.stride), padding=_pair(layer.padding),
                                dilation=_pair(layer.dilation), groups=int(layer.groups),
                                fan_in=int(np.prod(codes.shape[1:])))
                bound = int(np.abs(codes).reshape(codes.shape[0], -1).sum(1).max()) * src_reach
                node["acc_bound"] = bound
                node["acc_bits"] = max(1, bound.bit_length())
                reach.append(bound)
            elif pn.op == "identity":
                q: IdentityQuant = pn.quant
                key = f"{pn.name}.gain"
                gain = _ints(q.gain())
                arrays[key] = gain
                node.update(gain=key, fan_in=1, acc_bound=int(np.abs(gain).max()) * src_reach)
                reach.append(node["acc_bound"])
            elif pn.op == "pool":
                node.pop("op")
                if pn.pool_global:
                    node["op"] = "global_sumpool"
                    area = None
                else:
                    node.update(op="sumpool", kernel=int(pn.pool_kernel))
                    area = pn.pool_kernel ** 2
                if area is None:  # the global pool's area is that of its input map
                    area = _global_area(plan, i)
                node["fan_in"] = area
                node["acc_bound"] = area * src_reach
                reach.append(area * src_reach)
            elif pn.op == "flatten":
                reach.append(src_reach)
            elif pn.op == "neuron":
                nq = pn.quant
                theta_key = f"{pn.name}.threshold"
                arrays[theta_key] = _ints(nq.threshold()).reshape(-1)
                bias = None
                for sq in nq.inputs:
                    if isinstance(sq, SynapseQuant) and sq.module.bias is not None:
                        b = _ints(sq.bias_codes())
                        bias = b if bias is None else bias + b
                if bias is not None:
                    node["bias"] = f"{pn.name}.bias"
                    arrays[node["bias"]] = bias.reshape(-1)
                node.update(threshold=theta_key, frac_bits=nq.frac_bits, leak_mult=nq.leak_mult,
                            leak_shift=nq.leak_shift, membrane_bits=nq.membrane_bits)
                reach.append(1)
            nodes.append(node)
    num_classes = int(getattr(model, "num_classes", 0)) or int(
        arrays[nodes[-1]["threshold"]].size if arrays[nodes[-1]["threshold"]].size > 1 else 0)
    net = IntegerNetwork(nodes, arrays, steps=plan.steps, bits=plan.bits, per_channel=plan.per_channel,
                         profile=profile, num_classes=num_classes,
                         meta={"model": getattr(getattr(model, "pretrained_cfg", None), "architecture",
                                                type(model).__name__)})
    check_profile(net, profile)
    return net


def _global_area(plan, index: int) -> int:
    # recorded by prepare_integer through the dry run: the pool node's input map size
    area = getattr(plan, "global_pool_areas", {}).get(index)
    if area is None:
        raise ValueError("a global pool's input size is unknown; prepare the model with input_size=")
    return int(area)


# ------------------------------------------------------------------------------------------------ comparison
def compare_spikes(model: nn.Module, net: IntegerNetwork, images: torch.Tensor, labels: torch.Tensor | None = None,
                   batch_size: int = 500) -> dict:
    """Run the fake-quant ``model`` and the integer ``net`` on ``images`` and compare every spike.

    Returns plain data: ``n_images``; ``fake_quant_acc`` / ``integer_acc`` (when ``labels`` are given);
    ``spike_positions`` (neurons × steps × images over all layers), ``spikes_fake``, ``spikes_integer``,
    ``mismatched_positions`` and ``mismatch_share`` (their ratio to ``spike_positions``);
    ``output_counts_identical``; ``per_layer`` mismatches.
    """
    neurons = [(n, m) for n, m in model.named_modules() if isinstance(m, IntegerLIFMixin)]
    by_module = {id(m): m.integer_quant.name for _, m in neurons}
    recorded: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        recorded[by_module[id(module)]] = output.detach().to(torch.uint8)

    hooks = [m.register_forward_hook(hook) for _, m in neurons]
    stats = {"n_images": 0, "spike_positions": 0, "spikes_fake": 0, "spikes_integer": 0, "mismatched_positions": 0,
             "output_counts_identical": True}
    per_layer = {name: 0 for name in net.neuron_names()}
    correct_fake = correct_int = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size]
                recorded.clear()
                rate = model(x)
                counts, spikes = net.run(x, return_spikes=True)
                steps = next(iter(spikes.values())).shape[0]
                fake_counts = (rate.double() * steps).round().to(torch.int64)
                stats["output_counts_identical"] &= bool(torch.equal(fake_counts, counts))
                for name in net.neuron_names():
                    a, b = recorded[name], spikes[name]
                    if a.shape != b.shape:
                        raise ValueError(f"neuron {name!r}: fake-quant spikes {tuple(a.shape)}, integer "
                                         f"{tuple(b.shape)}")
                    diff = int((a != b).sum())
                    per_layer[name] += diff
                    stats["mismatched_positions"] += diff
                    stats["spike_positions"] += a.numel()
                    stats["spikes_fake"] += int(a.sum())
                    stats["spikes_integer"] += int(b.sum())
                if labels is not None:
                    y = labels[start:start + batch_size]
                    correct_fake += int((rate.argmax(1) == y).sum())
                    correct_int += int((counts.argmax(1) == y).sum())
                stats["n_images"] += len(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    stats["mismatch_share"] = stats["mismatched_positions"] / max(stats["spike_positions"], 1)
    if labels is not None:
        stats["fake_quant_acc"] = correct_fake / max(stats["n_images"], 1)
        stats["integer_acc"] = correct_int / max(stats["n_images"], 1)
    stats["per_layer"] = per_layer
    return stats
