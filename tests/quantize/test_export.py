"""The integer network file (no pickle), its checks, sizes and the hardware profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spikeforge import quantize
from spikeforge.quantize import HardwareProfile, IntegerFileError, ProfileViolationError

from .helpers import MNIST_RANGE, mnist_batch, scaled_mnistnet

_NETS: dict = {}


def exported(bits: int):
    if bits not in _NETS:
        model = quantize.prepare_qat(scaled_mnistnet(), bits, integer=True, input_range=MNIST_RANGE)
        _NETS[bits] = (model, quantize.export_integer(model))
    return _NETS[bits]


@pytest.mark.parametrize("bits", [8, 4])
def test_save_load_round_trip_without_pickle(tmp_path, bits):
    _, net = exported(bits)
    folder = net.save(tmp_path / f"mnist_int{bits}")
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        dtypes = {npz[k].dtype for k in npz.files}
        assert npz["conv2.weight"].dtype == (np.int8 if bits == 8 else np.uint8)  # 4 bit: two codes per byte
    assert dtypes <= {np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.int32)}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "spikeforge.integer_snn" and manifest["profile"]["weight_bits"] == bits
    loaded = quantize.load_integer(folder / "manifest.json")
    assert loaded.arrays.keys() == net.arrays.keys()
    assert all(np.array_equal(loaded.arrays[k], net.arrays[k]) for k in net.arrays)
    x, _ = mnist_batch(8)
    assert torch.equal(loaded.run(x), net.run(x))


def test_sizes():
    sizes = {}
    for bits in (8, 4):
        _, net = exported(bits)
        weights = sum(net.arrays[n["weight"]].size for n in net.nodes if n["op"] in ("conv", "linear"))
        assert weights == 606_375  # every parameter but the 310 biases
        biases = sum(net.arrays[n["bias"]].size for n in net.nodes if n.get("bias"))
        thresholds = sum(net.arrays[n["threshold"]].size for n in net.nodes if n["op"] == "neuron")
        membrane = net.profile.membrane_bits
        expected = (weights * bits + biases * membrane + thresholds * net.profile.threshold_bits) / 8
        assert abs(net.size_bytes() - expected) <= 12
        sizes[bits] = net.size_bytes()
    assert sizes[4] < 0.51 * sizes[8] + 1000


def test_corrupt_files_are_refused_with_their_name(tmp_path):
    _, net = exported(4)
    folder = net.save(tmp_path / "net")
    blob = (folder / "arrays.npz").read_bytes()
    (folder / "arrays.npz").write_bytes(blob[:-100])
    with pytest.raises(IntegerFileError, match=r"arrays\.npz: sha256 .* differs"):
        quantize.load_integer(folder)
    (folder / "arrays.npz").write_bytes(blob)
    text = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(IntegerFileError, match=r"manifest\.json: not valid JSON"):
        quantize.load_integer(folder)
    manifest = json.loads(text)
    manifest["nodes"][3]["src"] = [7]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegerFileError, match="reads nodes \\[7\\], which do not come before it"):
        quantize.load_integer(folder)
    manifest = json.loads(text)
    manifest["arrays"]["fc1.weight"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegerFileError, match="'fc1.weight' does not match its sha256"):
        quantize.load_integer(folder)
    (folder / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(IntegerFileError, match="not a spikeforge.integer_snn manifest"):
        quantize.load_integer(folder)
    with pytest.raises(IntegerFileError, match="missing"):
        quantize.load_integer(tmp_path / "nowhere")


def test_profile_violations_are_all_named():
    model, net = exported(8)
    tiny = HardwareProfile("tiny_core", weight_bits=4, membrane_bits=10, threshold_bits=8, max_fan_in=256)
    with pytest.raises(ProfileViolationError) as info:
        quantize.export_integer(model, profile=tiny)
    text = str(info.value)
    assert "'tiny_core'" in text and len(info.value.violations) >= 8
    for needle in ("conv 'conv1': weight codes up to 127 need 8 bits, the profile allows 4",
                   "neuron 'conv2_lif': fan-in 375 exceeds the profile's max_fan_in 256",
                   "neuron 'fc1_lif': fan-in 1960", "neuron 'fc1_lif': a 16-bit membrane, the profile has 10 bits",
                   "neuron 'conv1_lif': threshold up to"):
        assert needle in text, needle
    quantize.check_profile(net, quantize.GENERIC_INT8)
    assert quantize.generic_profile(8) is quantize.GENERIC_INT8 and quantize.generic_profile(4) is quantize.GENERIC_INT4
    assert quantize.generic_profile(6).membrane_bits == 12
    with pytest.raises(ValueError, match="weight_bits"):
        HardwareProfile("bad", weight_bits=1, membrane_bits=16, threshold_bits=16)


def test_run_checks_its_input():
    _, net = exported(8)
    with pytest.raises(ValueError, match=r"images must be \[N, 1, 28, 28\]"):
        net.run(torch.zeros(2, 3, 28, 28))
    with pytest.raises(TypeError, match="floating-point"):
        net.run(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
