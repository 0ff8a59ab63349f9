"""CIFAR-10 from the official archives, binary or python version, without torchvision.

The two official distributions (https://www.cs.toronto.edu/~kriz/cifar.html):

* **binary** (``cifar-10-binary.tar.gz`` → ``cifar-10-batches-bin/``): ``data_batch_1.bin`` … ``data_batch_5.bin``
  and ``test_batch.bin``, each 10,000 records of 3,073 bytes: the label (0–9), then 1,024 red, 1,024 green
  and 1,024 blue values of a 32×32 image in row-major order; ``batches.meta.txt`` lists the class names.
* **python** (``cifar-10-python.tar.gz`` → ``cifar-10-batches-py/``): ``data_batch_1`` … ``data_batch_5`` and
  ``test_batch``, each a pickle (protocol 2, written by Python 2) of a dict with ``data`` (a uint8 numpy array
  ``[10000, 3072]``, same layout), ``labels`` (a list of ints), ``batch_label`` and ``filenames``;
  ``batches.meta`` holds ``label_names``.

The python batches are read with a *restricted* unpickler: besides plain containers, strings and numbers it
resolves only the three globals a pickled numpy array needs (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``); anything else is refused with :class:`DatasetFileError`, so a doctored
file cannot run code. Every batch is checked (record count, label range, array shape and dtype).

``root`` may be the extracted folder, the folder holding it, or one of the ``.tar.gz`` archives (read in place,
without extracting).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .mnist import DatasetFileError

__all__ = ["CIFAR10", "read_cifar_binary", "read_cifar_python", "RestrictedUnpickler"]

_RECORD = 1 + 3 * 32 * 32
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]
_FOLDERS = {"binary": "cifar-10-batches-bin", "python": "cifar-10-batches-py"}
_ARCHIVES = {"binary": "cifar-10-binary.tar.gz", "python": "cifar-10-python.tar.gz"}
_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of a pickled numpy array (and nothing else)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR batch (only numpy "
                                         "arrays, lists, strings and numbers are)")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype


def _unpickle(data: bytes, where: str) -> object:
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DatasetFileError(f"{where}: not a readable CIFAR-10 python batch ({e})") from None


def _check_batch(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 4 or images.shape[1:] != (3, 32, 32) or images.dtype != np.uint8:
        raise DatasetFileError(f"{where}: images of shape {images.shape} / {images.dtype}, expected [N, 3072] uint8")
    if len(labels) != len(images):
        raise DatasetFileError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DatasetFileError(f"{where}: labels outside 0..9 (min {labels.min()}, max {labels.max()})")


def read_cifar_binary(data: bytes, where: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 3, 32, 32], labels int64 [N])`` from the bytes of one ``*.bin`` batch."""
    if len(data) == 0 or len(data) % _RECORD:
        raise DatasetFileError(f"{where}: {len(data)} bytes is not a whole number of {_RECORD}-byte CIFAR-10 "
                               "records (label byte + 3072 pixels)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    images = records[:, 1:].reshape(-1, 3, 32, 32)
    _check_batch(images, labels, where)
    return images, labels


def read_cifar_python(data: bytes, where: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 3, 32, 32], labels int64 [N])`` from the bytes of one pickled python batch."""
    batch = _unpickle(data, where)
    if not isinstance(batch, dict):
        raise DatasetFileError(f"{where}: holds a {type(batch).__name__}, expected a dict")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DatasetFileError(f"{where}: lacks 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    array, labels = batch["data"], batch["labels"]
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != 3072:
        shape = getattr(array, "shape", None)
        raise DatasetFileError(f"{where}: 'data' is {type(array).__name__} {shape}, expected uint8 [N, 3072]")
    if not isinstance(labels, list | tuple) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in labels):
        raise DatasetFileError(f"{where}: 'labels' is not a list of integers")
    images = np.ascontiguousarray(array).reshape(-1, 3, 32, 32)
    labels = np.asarray(labels, dtype=np.int64)
    _check_batch(images, labels, where)
    return images, labels


class _Source:
    """Where the batches are: a folder or an archive, in one of the two formats."""

    def __init__(self, root: Path):
        self.root = root
        self.tar: tarfile.TarFile | None = None
        self.folder: Path | None = None
        self.format, self.prefix = self._locate(root)

    def _locate(self, root: Path) -> tuple[str, str]:
        if root.is_file():
            try:
                self.tar = tarfile.open(root, "r:*")
            except (tarfile.TarError, OSError) as e:
                raise DatasetFileError(f"CIFAR10: {root} is not a readable tar archive ({e})") from None
            names = set(self.tar.getnames())
            for fmt, folder in _FOLDERS.items():
                if f"{folder}/{_TEST[0]}{'.bin' if fmt == 'binary' else ''}" in names:
                    return fmt, folder
            raise DatasetFileError(f"CIFAR10: {root} holds neither cifar-10-batches-bin/ nor cifar-10-batches-py/")
        if not root.is_dir():
            raise DatasetFileError(f"CIFAR10: {root} does not exist; pass the folder cifar-10-batches-py or "
                                   f"cifar-10-batches-bin, its parent, or one of {', '.join(_ARCHIVES.values())} "
                                   "(from https://www.cs.toronto.edu/~kriz/cifar.html)")
        for candidate in (root, *(root / f for f in _FOLDERS.values())):
            if (candidate / "test_batch.bin").is_file() or (candidate / "data_batch_1.bin").is_file():
                self.folder = candidate
                return "binary", ""
            if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
                self.folder = candidate
                return "python", ""
        for archive in _ARCHIVES.values():
            if (root / archive).is_file():
                return self._locate(root / archive)
        raise DatasetFileError(f"CIFAR10: no CIFAR-10 batches in {root}: expected data_batch_1..5 and test_batch "
                               f"(python version) or the same with .bin (binary version), a folder "
                               f"{' or '.join(_FOLDERS.values())}, or an archive {' or '.join(_ARCHIVES.values())}")

    def read(self, name: str) -> tuple[bytes, str]:
        file_name = name + (".bin" if self.format == "binary" else "")
        if self.tar is not None:
            member = f"{self.prefix}/{file_name}"
            where = f"{self.root}:{member}"
            try:
                f = self.tar.extractfile(member)
            except KeyError:
                raise DatasetFileError(f"CIFAR10: {where} is missing from the archive") from None
            if f is None:
                raise DatasetFileError(f"CIFAR10: {where} is not a regular file")
            try:
                return f.read(), where
            except (OSError, EOFError, tarfile.TarError) as e:
                raise DatasetFileError(f"CIFAR10: {where} cannot be read ({e}); the archive is truncated") from None
        path = self.folder / file_name
        if not path.is_file():
            raise DatasetFileError(f"CIFAR10: missing file {path}")
        return path.read_bytes(), str(path)

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


class CIFAR10(Dataset):
    """CIFAR-10 (50,000 train / 10,000 test colour images of 32×32, ten classes) from the official files.

    Args:
        root: the extracted folder (``cifar-10-batches-py`` or ``cifar-10-batches-bin``), the folder holding
            it, or an official ``.tar.gz`` archive (read without extracting).
        train: the five training batches if True, else the test batch.
        transform: applied to each image, a float tensor ``[3, 32, 32]`` in [0, 1]; ``None`` returns it.
        target_transform: applied to each integer label.

    ``data`` (uint8 ``[N, 3, 32, 32]``, channels first) and ``targets`` (int64 ``[N]``) hold the split;
    ``format`` is ``"binary"`` or ``"python"``; :meth:`as_tensors` returns the whole split.
    """

    classes = _CLASSES

    def __init__(self, root: str | os.PathLike, train: bool = True, transform: Callable | None = None,
                 target_transform: Callable | None = None) -> None:
        if not isinstance(train, bool):
            raise TypeError(f"train must be True or False, got {train!r}")
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f"root must be a path, got {type(root).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.root = Path(root).expanduser()
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        source = _Source(self.root)
        self.format = source.format
        reader = read_cifar_binary if source.format == "binary" else read_cifar_python
        images, labels = [], []
        try:
            for name in (_TRAIN if train else _TEST):
                data, where = source.read(name)
                x, y = reader(data, where)
                images.append(x)
                labels.append(y)
        finally:
            source.close()
        self.data = torch.from_numpy(np.concatenate(images))
        self.targets = torch.from_numpy(np.concatenate(labels))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.data[index].float().div_(255.0)
        target = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def as_tensors(self, dtype: torch.dtype = torch.uint8) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [N, 3, 32, 32], labels [N])``: uint8 grey levels, or a floating dtype scaled to [0, 1]."""
        if dtype == torch.uint8:
            return self.data, self.targets
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be torch.uint8 or a floating dtype, got {dtype}")
        return self.data.to(dtype).div_(255.0), self.targets

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"CIFAR10(root={str(self.root)!r}, split={split}, format={self.format}, n={len(self)})"
