"""MNIST and Fashion-MNIST from the original gzip'd IDX files.

IDX layout (big-endian): int32 magic ``0x00000800 | ndim`` (type byte 0x08 = uint8), ``ndim`` int32
sizes, then the uint8 payload in C order. Images are ``[N, 28, 28]``, labels ``[N]``.

A folder is searched for the four ``.gz`` files directly, then in torchvision's layouts
(``<root>/MNIST/raw``, ``<root>/raw``), so an existing torchvision download works as it is.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_IDX_UINT8 = 0x08
_CACHE: dict[tuple[str, float, int], np.ndarray] = {}


class DatasetFileError(UserError, FileNotFoundError):
    """A data file is missing, unreadable or fails its md5 check. The message says where to put it."""


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse a (gzip'd or plain) IDX file of unsigned bytes into a read-only numpy array."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as e:
        raise DatasetFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    key = (str(path.resolve()), stat.st_mtime, stat.st_size)
    if key in _CACHE:
        return _CACHE[key]
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetFileError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'IDX'} ({e}); the "
                               f"file is truncated or corrupt, delete it and fetch it again") from None
    if len(raw) < 4:
        raise DatasetFileError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != _IDX_UINT8:
        raise DatasetFileError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DatasetFileError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions need {header_len})")
    shape = struct.unpack(f">{ndim}i", raw[4:header_len])
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header_len != expected:
        raise DatasetFileError(f"{path}: header says shape {shape} ({expected} bytes), file holds "
                               f"{len(raw) - header_len} bytes")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)
    _CACHE[key] = array
    return array


class MNIST(Dataset):
    """The MNIST handwritten digits (60,000 train / 10,000 test, 28x28 grey levels).

    Args:
        root: folder holding the four ``.gz`` files (or torchvision's ``MNIST/raw`` layout under it).
            ``None`` uses the copy shipped inside spikeforge, so nothing has to be downloaded.
        train: the 60,000-image training split if True, else the 10,000-image test split.
        transform: applied to each image, a float tensor ``[1, 28, 28]`` in [0, 1] (what torchvision's
            ``ToTensor()`` gives); ``None`` returns that tensor.
        target_transform: applied to each integer label.
        download: fetch missing files from the public mirrors (md5-checked) before loading.
        verify: check each file's md5 before parsing it.

    ``data`` (uint8 ``[N, 28, 28]``) and ``targets`` (int64 ``[N]``) hold the whole split; ``as_tensors``
    returns it batched for fast loops that bypass per-item indexing.
    """

    name = "MNIST"
    files = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    classes = tuple(str(d) for d in range(10))

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        verify: bool = True,
    ) -> None:
        for flag, value in (("train", train), ("download", download), ("verify", verify)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        for flag, value in (("transform", transform), ("target_transform", target_transform)):
            if value is not None and not callable(value):
                raise TypeError(f"{flag} must be callable or None, got {type(value).__name__}")
        self.root = self._resolve_root(root)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        split = "train" if train else "t10k"
        image_name, label_name = f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz"
        if download:
            self.download()
        images = read_idx(self._checked_file(image_name, verify))
        labels = read_idx(self._checked_file(label_name, verify))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetFileError(f"{self.root}: images {images.shape} and labels {labels.shape} do not match")
        self.data = torch.from_numpy(images.copy())
        self.targets = torch.from_numpy(labels.astype(np.int64))

    # -- locating and checking files -----------------------------------------------------------
    @classmethod
    def default_root(cls) -> Path | None:
        return _PACKAGE_ROOT / "data" / "mnist"

    @classmethod
    def _resolve_root(cls, root: str | os.PathLike | None) -> Path:
        if root is None:
            found = cls.default_root()
            if found is None:
                raise DatasetFileError(
                    f"{cls.name}: no default data folder; pass root=/path/to/folder holding "
                    f"{', '.join(cls.files)} (or download=True with a network)")
            return found
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path or None, got {type(root).__name__}")
        base = Path(root).expanduser()
        if base.exists() and not base.is_dir():
            raise DatasetFileError(f"{cls.name}: root {base} is a file; pass the folder holding "
                                   f"{', '.join(cls.files)}")
        first = next(iter(cls.files))
        for candidate in (base, base / cls.name / "raw", base / "raw"):
            if (candidate / first).exists():
                return candidate
        return base

    def _where_to_put(self, name: str) -> str:
        return (f"put {name} (md5 {self.files[name]}, from {self.mirrors[0]}{name}) into {self.root}, "
                f"or pass download=True on a machine with network access")

    def _checked_file(self, name: str, verify: bool) -> Path:
        path = self.root / name
        if not path.is_file():
            raise DatasetFileError(f"{self.name}: missing file {path}; {self._where_to_put(name)}")
        if verify:
            actual = _md5(path)
            if actual != self.files[name]:
                raise DatasetFileError(
                    f"{self.name}: {path} is corrupt (md5 {actual}, expected {self.files[name]}); "
                    f"delete it and {self._where_to_put(name)}")
        return path

    def download(self) -> None:
        """Fetch every missing or corrupt file from the mirrors, md5-checked, written atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        for name, md5 in self.files.items():
            path = self.root / name
            if path.is_file() and _md5(path) == md5:
                continue
            errors = []
            for mirror in self.mirrors:
                url = mirror + name
                try:
                    _fetch(url, path, md5)
                    break
                except (OSError, urllib.error.URLError, ValueError) as e:
                    errors.append(f"{url}: {e}")
            else:
                raise DatasetFileError(f"{self.name}: could not download {name} ({'; '.join(errors)}); "
                                       f"{self._where_to_put(name)}")

    # -- Dataset protocol and fast path --------------------------------------------------------
    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.data[index].unsqueeze(0).float().div_(255.0)
        target = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def as_tensors(self, dtype: torch.dtype = torch.uint8) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as ``(images [N, 1, 28, 28], labels [N])``.

        ``dtype=torch.uint8`` gives the raw grey levels 0..255; a floating dtype gives them scaled to
        [0, 1] (pixel / 255), matching ``__getitem__`` without a transform.
        """
        images = self.data.unsqueeze(1)
        if dtype == torch.uint8:
            return images, self.targets
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be torch.uint8 or a floating dtype, got {dtype}")
        return images.to(dtype).div_(255.0), self.targets

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}(root={str(self.root)!r}, split={split}, n={len(self)})"


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: same format and sizes as MNIST, ten clothing classes.

    ``root=None`` uses ``../shared/data/fashion-mnist`` next to the source checkout when it exists;
    otherwise pass the folder holding the four ``.gz`` files (or ``download=True``).
    """

    name = "FashionMNIST"
    files = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    mirrors = (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    )
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")

    @classmethod
    def default_root(cls) -> Path | None:
        shared = _PACKAGE_ROOT.parent.parent / "shared" / "data" / "fashion-mnist"
        return shared if shared.is_dir() else None


def _fetch(url: str, destination: Path, md5: str, timeout: float = 30.0) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=destination.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 20):
                out.write(block)
        actual = _md5(Path(tmp_name))
        if actual != md5:
            raise ValueError(f"md5 {actual} does not match {md5}")
        os.replace(tmp_name, destination)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
