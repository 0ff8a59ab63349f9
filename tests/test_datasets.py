"""spikeforge.datasets: IDX parsing, md5 checks, layouts and clear errors."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeforge.datasets import MNIST, DatasetFileError, FashionMNIST, read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared"
BUNDLED = Path(__file__).resolve().parents[1] / "spikeforge" / "data" / "mnist"


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_hand_made(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x.gz", images)
    parsed = read_idx(tmp_path / "x.gz")
    assert parsed.shape == (2, 3, 4) and parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, images)


def test_read_idx_rejects_truncated_and_wrong_magic(tmp_path):
    images = np.zeros((2, 2, 2), np.uint8)
    _write_idx(tmp_path / "ok.gz", images)
    raw = gzip.decompress((tmp_path / "ok.gz").read_bytes())
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(raw[:-3])
    with pytest.raises(DatasetFileError, match="header says shape"):
        read_idx(tmp_path / "short.gz")
    with gzip.open(tmp_path / "magic.gz", "wb") as f:
        f.write(b"\x00\x00\x0d\x03" + raw[4:])  # type byte 0x0d = float32, not supported
    with pytest.raises(DatasetFileError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path / "magic.gz")
    (tmp_path / "notgz.gz").write_bytes(b"plain bytes")
    with pytest.raises(DatasetFileError, match="cannot be read"):
        read_idx(tmp_path / "notgz.gz")


def test_bundled_mnist_matches_published_facts():
    train, test = MNIST(train=True), MNIST(train=False)
    assert len(train) == 60000 and len(test) == 10000
    assert train.data.shape == (60000, 28, 28) and train.data.dtype == torch.uint8
    # facts from the data README: first labels and the per-class counts of the training split
    assert train.targets[:5].tolist() == [5, 0, 4, 1, 9]
    assert train.targets.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    image, label = train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 5
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0  # 0..255 scaled by 1/255


def test_as_tensors_uint8_and_float():
    test = MNIST(train=False)
    x8, y = test.as_tensors()
    xf, y2 = test.as_tensors(torch.float32)
    assert x8.shape == (10000, 1, 28, 28) and x8.dtype == torch.uint8
    assert torch.equal(y, y2)
    torch.testing.assert_close(xf, x8.float() / 255)
    torch.testing.assert_close(test[7][0], xf[7])
    with pytest.raises(ValueError, match="dtype"):
        test.as_tensors(torch.int32)


def test_transform_and_target_transform():
    test = MNIST(train=False, transform=lambda x: x * 2, target_transform=lambda y: y + 100)
    image, label = test[0]
    assert float(image.max()) == 2.0 and label == 7 + 100


def test_corrupt_copy_is_named_in_the_error(tmp_path):
    for f in BUNDLED.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    MNIST(tmp_path, train=False)  # an intact copy loads
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DatasetFileError) as err:
        MNIST(tmp_path, train=False)
    message = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "corrupt" in message
    assert "9fb629c4189551a2d022fa330f9573f3" in message and str(tmp_path) in message
    MNIST(tmp_path, train=True)  # the training split does not read the damaged file


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetFileError) as err:
        MNIST(tmp_path, train=True)
    assert "train-images-idx3-ubyte.gz" in str(err.value) and str(tmp_path) in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_torchvision_layout_is_found(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in BUNDLED.glob("*.gz"):
        shutil.copy(f, raw / f.name)
    assert MNIST(tmp_path, train=False).root == raw


def test_download_offline_fails_clearly(tmp_path, monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DatasetFileError, match="could not download train-images-idx3-ubyte.gz"):
        MNIST(tmp_path, train=True, download=True)
    assert not list(tmp_path.glob("*.part"))  # no partial file left behind


def test_download_skips_files_already_present(tmp_path, monkeypatch):
    import urllib.request

    for f in BUNDLED.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    assert len(MNIST(tmp_path, train=False, download=True)) == 10000


def test_bad_arguments():
    with pytest.raises(TypeError, match="train"):
        MNIST(train="yes")
    with pytest.raises(TypeError, match="transform"):
        MNIST(train=False, transform=3)
    with pytest.raises(TypeError, match="root"):
        MNIST(root=5)


def test_fashion_mnist_shared_copy():
    folder = SHARED / "data" / "fashion-mnist"
    if not folder.is_dir():
        pytest.skip(f"Fashion-MNIST copy not found at {folder}")
    test = FashionMNIST(folder, train=False)
    assert len(test) == 10000 and test.targets.bincount().tolist() == [1000] * 10
    assert len(test.classes) == 10
