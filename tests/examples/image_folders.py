"""A tiny generated image folder for the CLI tests: two classes, dark and bright noise."""
from __future__ import annotations

from pathlib import Path

import torch


def write_noise_folder(root: Path, train: int, val: int, size: int) -> Path:
    """``root/{train,val}/class{0,1}/*.png``: ``train`` + ``val`` RGB images per class of ``size`` x ``size``."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("val", val)):
        for label in (0, 1):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            base = 40 if label == 0 else 200
            for i in range(n):
                pixels = (base + torch.randint(-30, 30, (size, size, 3), generator=gen)).clamp(0, 255)
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(folder / f"{i}.png")
    return root
