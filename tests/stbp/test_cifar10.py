"""CIFAR-10 reader on small files generated in the two official formats (folder, parent folder, archive)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from spikeforge.datasets import CIFAR10, DatasetFileError
from spikeforge.datasets.cifar10 import read_cifar_binary, read_cifar_python

from .cifar_files import binary_batch, make_split, python_batch, write_cifar


@pytest.mark.parametrize("fmt", ["python", "binary"])
@pytest.mark.parametrize("where", ["folder", "parent", "archive", "archive_parent"])
def test_reads_both_official_formats(tmp_path, fmt, where):
    path, expected = write_cifar(tmp_path, fmt, archive=where.startswith("archive"))
    root = path.parent if where in ("parent", "archive_parent") else path
    for train, split in ((True, "train"), (False, "test")):
        ds = CIFAR10(root, train=train)
        x, y = expected[split]
        assert ds.format == fmt and len(ds) == len(y) == (15 if train else 3)
        assert torch.equal(ds.data, torch.from_numpy(x)) and torch.equal(ds.targets, torch.from_numpy(y))
        images, labels = ds.as_tensors(torch.float32)
        assert images.shape == (len(y), 3, 32, 32) and torch.equal(images * 255, ds.data.float())
        image, label = ds[1]
        assert label == int(y[1]) and torch.equal(image, images[1])


def test_pixel_layout_is_rgb_planes_row_major():
    x, y = make_split(1, 7)
    raw = binary_batch(x, y)
    assert raw[0] == y[0] and raw[1 + 1024 + 32 * 2 + 5] == x[0, 1, 2, 5]  # green plane, row 2, column 5
    images, labels = read_cifar_binary(raw)
    assert np.array_equal(images, x) and labels.tolist() == y
    images, labels = read_cifar_python(python_batch(x, y))
    assert np.array_equal(images, x) and labels.tolist() == y


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    doctored = pickle.dumps({"data": Evil(), "labels": [1]}, protocol=4)
    with pytest.raises(DatasetFileError, match=r"builtins\.print. is not allowed"):
        read_cifar_python(doctored, "data_batch_1")


def test_bad_files_are_named(tmp_path):
    with pytest.raises(DatasetFileError, match="does not exist"):
        CIFAR10(tmp_path / "nothing")
    with pytest.raises(DatasetFileError, match="no CIFAR-10 batches"):
        CIFAR10(tmp_path)
    folder, _ = write_cifar(tmp_path, "binary")
    (folder / "data_batch_3.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(DatasetFileError, match=r"data_batch_3.bin: 100 bytes is not a whole number"):
        CIFAR10(folder)
    x, _ = make_split(2, 0)
    with pytest.raises(DatasetFileError, match="labels outside 0..9"):
        read_cifar_binary(binary_batch(x, [3, 12]), "b")
    with pytest.raises(DatasetFileError, match="not a readable CIFAR-10 python batch"):
        read_cifar_python(python_batch(x, [1, 2])[:-40], "truncated")
    with pytest.raises(DatasetFileError, match="'labels' is not a list"):
        read_cifar_python(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": "x"}, protocol=4), "b")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DatasetFileError, match="not a readable tar archive"):
        CIFAR10(tmp_path / "cifar-10-python.tar.gz")
