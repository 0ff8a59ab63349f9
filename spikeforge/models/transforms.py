"""ImageNet evaluation preprocessing: resize the short side (bicubic), centre-crop, scale to [0, 1], normalise.

With ``img_size=224`` the short side goes to ``int(256 / 224 * 224) = 256`` as in the reference evaluation.
torchvision is used when it is installed; otherwise an equivalent PIL + torch path produces the same tensor
(same output-size rounding, PIL's own bicubic resampling, same crop offsets and arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "imagenet_eval_transform", "load_image", "imagenet_class_names"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PIL_HINT = "reading images needs Pillow: pip install 'spikeforge[vision]'"


def _import_pil_image():
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError(_PIL_HINT) from err
    return Image


def load_image(path) -> object:
    """Open an image file as an RGB ``PIL.Image`` (palette, grey and alpha images are converted)."""
    Image = _import_pil_image()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with Image.open(path) as image:
        return image.convert("RGB")


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in label order (shipped with spikeforge)."""
    text = resources.files("spikeforge").joinpath("data", "imagenet_classes.txt").read_text(encoding="utf-8")
    names = text.splitlines()
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt is damaged: expected 1000 names, found {len(names)}")
    return names


def imagenet_eval_transform(img_size: int = 224, crop_pct: float = 224 / 256, interpolation: str = "bicubic",
                            mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                            backend: str = "auto") -> Callable[[object], torch.Tensor]:
    """Build ``PIL image -> float tensor [3, img_size, img_size]``.

    Args:
        img_size: crop size.
        crop_pct: crop size over resize size (224/256 gives the standard resize 256, crop 224).
        interpolation: ``"bicubic"`` (reference evaluation) or ``"bilinear"`` (the hub page's example).
        mean, std: per-channel normalisation.
        backend: ``"auto"`` (torchvision if importable, else PIL), ``"torchvision"`` or ``"pil"``.
    """
    if not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"img_size must be a positive int, got {img_size!r}")
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
    if backend not in ("auto", "torchvision", "pil"):
        raise ValueError(f"backend must be 'auto', 'torchvision' or 'pil', got {backend!r}")
    # int(img_size / crop_pct) equals the reference's int((256 / 224) * img_size) for crop_pct = 224/256
    resize = int(img_size / crop_pct)
    if backend in ("auto", "torchvision"):
        try:
            from torchvision import transforms as T
        except (ImportError, RuntimeError, OSError) as err:  # absent, or built for another torch
            if backend == "torchvision":
                raise ImportError(f"backend='torchvision' but torchvision cannot be imported: {err}") from err
        else:
            mode = T.InterpolationMode.BICUBIC if interpolation == "bicubic" else T.InterpolationMode.BILINEAR
            return T.Compose([T.Resize(resize, interpolation=mode), T.CenterCrop(img_size), T.ToTensor(),
                              T.Normalize(mean, std)])
    return _PilEvalTransform(resize, img_size, interpolation, mean, std)


class _PilEvalTransform:
    """The torchvision pipeline re-done with PIL and torch, step for step."""

    def __init__(self, resize: int, crop: int, interpolation: str, mean, std):
        self.resize, self.crop, self.interpolation = resize, crop, interpolation
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image) -> torch.Tensor:
        Image = _import_pil_image()
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        resample = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_short, new_long = self.resize, int(self.resize * long / short)  # torchvision's rounding
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        if size != image.size:
            image = image.resize(size, resample)
        width, height = image.size
        if width < self.crop or height < self.crop:  # only reachable with crop_pct > 1 - kept for parity
            raise ValueError(f"image of size {image.size} is smaller than the crop {self.crop}")
        top = int(round((height - self.crop) / 2.0))
        left = int(round((width - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        import numpy as np

        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        if pixels.dim() == 2:
            pixels = pixels.unsqueeze(-1)
        tensor = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return tensor.sub(self.mean).div(self.std)
