"""Small CIFAR-10 batches written byte for byte in the two official formats (python: a Python 2 cPickle,
protocol 2; binary: 3,073-byte records), for testing the reader without the real data set."""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import numpy as np

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _short_str(b: bytes) -> bytes:  # SHORT_BINSTRING: a Python 2 str
    return b"U" + bytes([len(b)]) + b


def _long_str(b: bytes) -> bytes:  # BINSTRING
    return b"T" + struct.pack("<i", len(b)) + b


def _int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    return b"J" + struct.pack("<i", v)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _ndarray_uint8(a: np.ndarray) -> bytes:
    """A uint8 2-D array as numpy 1.x under Python 2 pickles it (protocol 2)."""
    out = _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
    out += _int(0) + b"\x85" + _short_str(b"b") + b"\x87" + b"R"
    out += b"(" + _int(1) + _int(a.shape[0]) + _int(a.shape[1]) + b"\x86"
    out += _global("numpy", "dtype") + _short_str(b"u1") + _int(0) + _int(1) + b"\x87" + b"R"
    out += b"(" + _int(3) + _short_str(b"|") + b"NNN" + b"J\xff\xff\xff\xff" + b"J\xff\xff\xff\xff" + _int(0)
    out += b"t" + b"b"
    out += b"\x89" + _long_str(np.ascontiguousarray(a).tobytes()) + b"t" + b"b"
    return out


def python_batch(images: np.ndarray, labels: list[int], name: bytes = b"training batch 1 of 5") -> bytes:
    """The bytes of one ``cifar-10-batches-py`` batch: {batch_label, labels, data, filenames}."""
    out = b"\x80\x02}" + b"("
    out += _short_str(b"batch_label") + _short_str(name)
    out += _short_str(b"labels") + b"]" + b"(" + b"".join(_int(v) for v in labels) + b"e"
    out += _short_str(b"data") + _ndarray_uint8(images.reshape(len(images), -1))
    out += _short_str(b"filenames") + b"]" + b"(" + b"".join(_short_str(f"img_{i}.png".encode())
                                                           for i in range(len(labels))) + b"e"
    return out + b"u" + b"."


def binary_batch(images: np.ndarray, labels: list[int]) -> bytes:
    records = [bytes([y]) + img.reshape(-1).tobytes() for img, y in zip(images, labels)]
    return b"".join(records)


def make_split(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


def write_cifar(root: Path, fmt: str, n_per_batch: int = 3, archive: bool = False) -> tuple[Path, dict]:
    """Write a tiny CIFAR-10 in ``fmt`` ('python' or 'binary'); returns (the path to pass, the expected data)."""
    folder_name = "cifar-10-batches-py" if fmt == "python" else "cifar-10-batches-bin"
    files, expected = {}, {"train": ([], []), "test": ([], [])}
    for i, name in enumerate(TRAIN + ["test_batch"]):
        x, y = make_split(n_per_batch, i)
        split = "test" if name == "test_batch" else "train"
        expected[split][0].append(x)
        expected[split][1].extend(y)
        if fmt == "python":
            files[name] = python_batch(x, y)
        else:
            files[name + ".bin"] = binary_batch(x, y)
    if fmt == "python":
        files["batches.meta"] = b"\x80\x02}(" + _short_str(b"label_names") + b"]" + b"(" + b"".join(
            _short_str(c.encode()) for c in ("airplane", "automobile")) + b"eu."
    else:
        files["batches.meta.txt"] = b"airplane\nautomobile\n"
    expected = {k: (np.concatenate(v[0]), np.asarray(v[1])) for k, v in expected.items()}
    if archive:
        path = root / ("cifar-10-python.tar.gz" if fmt == "python" else "cifar-10-binary.tar.gz")
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{folder_name}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path, expected
    folder = root / folder_name
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, expected
