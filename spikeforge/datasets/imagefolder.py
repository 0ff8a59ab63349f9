"""Image folders: read a ``root/<class>/<image>`` tree (torchvision's ``ImageFolder`` layout) with Pillow, and
write MNIST / Fashion-MNIST out in the ``train/`` + ``val/`` layout the ImageNet training scripts read.

* :class:`ImageFolder` — classes are the sub-folder names in sorted order (label ``i`` = ``classes[i]``),
  images the files with a known extension under each (recursively, sorted), opened as RGB (grey and palette
  images are converted, as torchvision's loader does). ``transform`` maps the PIL image to a tensor.
* :func:`write_imagefolder` — ``root/train/<class>/<index>.png`` and ``root/val/<class>/<index>.png`` from
  MNIST or Fashion-MNIST (``spikeforge.datasets``; the ``.gz`` files of ``data_dir``, default the bundled /
  shared copy), optionally only the first ``train_limit`` / ``val_limit`` images. Class folders are named
  ``0``, ``1`` ... ``9`` so that sorted order is the label order. Writing is atomic per split: the split is
  written into a temporary folder and renamed into place, and an existing split is refused (never merged).

Command line::

    python -m spikeforge.datasets.imagefolder --dataset fashion-mnist --out /tmp/fmnist-if \\
        --train-limit 10000 --val-limit 2000

Pillow is the ``vision`` extra (``pip install 'spikeforge[vision]'``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import UsageError, UserError, check_int, run_cli

__all__ = ["ImageFolder", "IMG_EXTENSIONS", "ImageFolderError", "write_imagefolder", "main"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderError(UserError, FileNotFoundError):
    """An image folder is missing, empty, or has an unreadable image; the message names it."""


def _pil_image():
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("reading image folders needs Pillow: pip install 'spikeforge[vision]'") from err
    return Image


class ImageFolder(Dataset):
    """``root/<class>/**/<image>`` as ``(transform(image), label)`` pairs.

    Args:
        root: the split folder (e.g. ``data/train``).
        transform: ``PIL.Image -> anything`` (e.g. :func:`spikeforge.datasets.augment.build_transform`);
            ``None`` returns the RGB PIL image.
        target_transform: applied to the integer label.
        extensions: file name endings counted as images.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None,
                 target_transform: Callable | None = None, extensions: tuple[str, ...] = IMG_EXTENSIONS):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ImageFolderError(f"image folder {self.root} does not exist (expected {self.root}/<class>/<image>)")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise ImageFolderError(f"image folder {self.root} has no class sub-folders "
                                   f"(expected {self.root}/<class>/<image>)")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        ext = tuple(e.lower() for e in extensions)
        self.samples: list[tuple[str, int]] = []
        for name in self.classes:
            files = sorted(p for p in (self.root / name).rglob("*") if p.is_file() and p.suffix.lower() in ext)
            self.samples.extend((str(p), self.class_to_idx[name]) for p in files)
        if not self.samples:
            raise ImageFolderError(f"image folder {self.root} holds no images (extensions {', '.join(ext)})")
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        """The RGB PIL image of sample ``index``."""
        Image = _pil_image()
        path = self.samples[index][0]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError) as error:
            raise ImageFolderError(f"image {path} cannot be read: {error}") from None

    def __getitem__(self, index: int):
        image = self.load(index)
        label = self.samples[index][1]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    def __repr__(self) -> str:
        return f"ImageFolder({self.root}, {len(self.samples)} images, {len(self.classes)} classes)"


_DATASETS = ("mnist", "fashion-mnist")


def write_imagefolder(root: str | os.PathLike, dataset: str = "mnist", data_dir: str | os.PathLike | None = None,
                      train_limit: int | None = None, val_limit: int | None = None,
                      splits: tuple[str, ...] = ("train", "val")) -> Path:
    """Write MNIST / Fashion-MNIST as PNG files under ``root/train`` and ``root/val`` (the test split); returns
    ``root``. See the module docstring."""
    Image = _pil_image()
    from . import MNIST, FashionMNIST

    if dataset not in _DATASETS:
        raise UsageError(f"dataset must be one of {list(_DATASETS)}, got {dataset!r}")
    check_int(train_limit, "train_limit", minimum=1, allow_none=True)
    check_int(val_limit, "val_limit", minimum=1, allow_none=True)
    unknown = [s for s in splits if s not in ("train", "val")]
    if unknown or not splits:
        raise UsageError(f"splits must be among ('train', 'val'), got {splits!r}")
    root = Path(root).expanduser()
    for split in splits:
        if (root / split).exists():
            raise UsageError(f"{root / split} exists already; choose another folder or remove it first "
                             f"(an image folder is never merged with an earlier one)")
    cls = MNIST if dataset == "mnist" else FashionMNIST
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        data = cls(data_dir, train=(split == "train"))
        limit = train_limit if split == "train" else val_limit
        images, labels = data.data[:limit].numpy(), data.targets[:limit].tolist()
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{split}."))
        try:
            for label in sorted(set(labels)):
                (staging / str(label)).mkdir()
            for index, (pixels, label) in enumerate(zip(images, labels)):
                Image.fromarray(pixels, mode="L").save(staging / str(label) / f"{index:05d}.png")
            os.replace(staging, root / split)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return root


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikeforge.datasets.imagefolder",
                                     description="Write MNIST or Fashion-MNIST as an image folder (train/ + val/, "
                                                 "one sub-folder per class, PNG files).")
    parser.add_argument("--dataset", choices=_DATASETS, default="mnist")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four .gz IDX files (default: the bundled MNIST / the shared "
                             "Fashion-MNIST copy)")
    parser.add_argument("--out", required=True, help="the folder to create train/ and val/ in")
    parser.add_argument("--train-limit", type=int, default=None, help="write only the first N training images")
    parser.add_argument("--val-limit", type=int, default=None, help="write only the first N test images")
    args = parser.parse_args(argv)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no such folder")
    check_int(args.train_limit, "--train-limit", minimum=1, allow_none=True)
    check_int(args.val_limit, "--val-limit", minimum=1, allow_none=True)
    root = write_imagefolder(args.out, args.dataset, args.data_dir, args.train_limit, args.val_limit)
    for split in ("train", "val"):
        count = sum(1 for _ in (root / split).rglob("*.png"))
        print(f"{root / split}: {count} images")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, sys.argv[1:] if argv is None else list(argv), prog="imagefolder")


if __name__ == "__main__":
    sys.exit(main())
