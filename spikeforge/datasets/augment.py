"""Image augmentation for ImageNet-style training recipes, with Pillow and torch only (no torchvision, no timm).

What the Meta-SpikeFormer and SNN-MLP recipes ask of timm's ``create_transform`` / ``Mixup`` /
``RandomErasing``, re-implemented from their documented behaviour:

* :func:`build_transform` — training: random-resized crop (scale 0.08-1, ratio 3/4-4/3, bicubic), horizontal
  flip (0.5), then either RandAugment (``--aa rand-m9-mstd0.5-inc1``) or colour jitter, to tensor, normalise,
  random erasing (``--reprob``); evaluation: resize the short side to ``input_size / crop_pct`` (bicubic,
  ``crop_pct = 224/256`` up to 224), centre crop, to tensor, normalise.
* :class:`RandAugment` and :func:`rand_augment_transform` — timm's ``rand-mM-nN-mstdS-incI-pP`` strings:
  ``n`` operations (default 2) drawn uniformly with replacement, each applied with probability ``p`` (0.5) at
  magnitude ``M`` out of 10 (Gaussian noise of std ``S`` around it, clipped to [0, 10]); ``inc1`` selects the
  variants whose strength grows with the magnitude (posterize keeps fewer bits, solarize a lower threshold,
  the enhancements move further from 1).
* :class:`RandomErasing` — on the normalised tensor: with probability ``p``, ``count`` rectangles of 2-33 %
  of the area (aspect 0.3-3.3) filled with per-pixel normal noise (``'pixel'``), per-channel noise
  (``'rand'``) or zeros (``'const'``).
* :class:`Mixup` — mixup / CutMix on a batch (``'batch'`` mode: one ratio per batch, ``'pair'`` / ``'elem'``
  per sample), with the mixed, label-smoothed soft targets.

Random numbers come from Python's ``random`` (per image) and torch's generator (noise, Beta draws), both of
which the training engine saves in its checkpoints and DataLoader workers seed per worker.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import UsageError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_transform", "RandAugment", "rand_augment_transform",
           "RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "ToTensorNormalize", "ResizeCenterCrop",
           "RandomErasing", "Compose", "Mixup", "mixup_target"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pil():
    try:
        from PIL import Image, ImageEnhance, ImageOps
    except ImportError as err:  # the `vision` extra
        raise ImportError("image augmentation needs Pillow: pip install 'spikeforge[vision]'") from err
    return Image, ImageEnhance, ImageOps


def _resample(name: str):
    Image = _pil()[0]
    table = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}
    if name not in table:
        raise UsageError(f"interpolation must be one of {sorted(table)}, got {name!r}")
    return table[name]


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


# --------------------------------------------------------------------------------------------- geometry
class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` (log-uniform), resize to
    ``size`` x ``size``; after 10 failed draws, the largest centred crop with the ratio clamped into range."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation: str = "bicubic"):
        self.size = int(size)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise UsageError(f"crop scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        self.interpolation = interpolation
        self._resample = _resample(interpolation)

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, w, h)`` of the crop for an image of ``width`` x ``height``."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = random.uniform(*self.scale) * area
            aspect = math.exp(random.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, width - w), random.randint(0, height - h), w, h
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, image):
        left, top, w, h = self.box(*image.size)
        return image.resize((self.size, self.size), self._resample, box=(left, top, left + w, top + h))

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, {self.interpolation})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image):
        if self.p > 0 and random.random() < self.p:
            return image.transpose(_pil()[0].Transpose.FLIP_LEFT_RIGHT)
        return image

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ResizeCenterCrop:
    """Evaluation: resize the short side to ``resize`` (long side ``int(resize * long / short)``), then the
    centred ``crop`` x ``crop`` square (offsets rounded as torchvision's ``CenterCrop``)."""

    def __init__(self, resize: int, crop: int, interpolation: str = "bicubic"):
        self.resize, self.crop = int(resize), int(crop)
        self.interpolation = interpolation
        self._resample = _resample(interpolation)

    def __call__(self, image):
        width, height = image.size
        short, long = min(width, height), max(width, height)
        size = ((self.resize, int(self.resize * long / short)) if width <= height
                else (int(self.resize * long / short), self.resize))
        if size != image.size:
            image = image.resize(size, self._resample)
        width, height = image.size
        top = int(round((height - self.crop) / 2.0))
        left = int(round((width - self.crop) / 2.0))
        return image.crop((left, top, left + self.crop, top + self.crop))

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(resize={self.resize}, crop={self.crop}, {self.interpolation})"


# ----------------------------------------------------------------------------------------------- colour
class ColorJitter:
    """Brightness, contrast and saturation factors drawn uniformly from ``[1 - s, 1 + s]``, applied in a random
    order (used only when no RandAugment policy is given, as in timm)."""

    def __init__(self, strength: float = 0.4):
        self.strength = float(strength)

    def __call__(self, image):
        ImageEnhance = _pil()[1]
        ops = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
        random.shuffle(ops)
        for op in ops:
            image = op(image).enhance(random.uniform(max(0.0, 1 - self.strength), 1 + self.strength))
        return image

    def __repr__(self) -> str:
        return f"ColorJitter({self.strength})"


# ------------------------------------------------------------------------------------------- RandAugment
_MAX_LEVEL = 10.0


def _signed(value: float) -> float:
    return -value if random.random() < 0.5 else value


def _op_table(translate_pct: float):
    """name -> (apply(image, magnitude, fill, resample)); magnitudes are on the 0-10 scale."""
    Image, ImageEnhance, ImageOps = _pil()

    def affine(image, matrix, fill, resample):
        return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)

    def enhance(kind):
        def apply(image, m, fill, resample):
            return kind(image).enhance(1.0 + _signed(m / _MAX_LEVEL * 0.9))
        return apply

    def solarize_add(image, m, fill, resample):
        add, threshold = int(m / _MAX_LEVEL * 110), 128
        lut = [min(255, i + add) if i < threshold else i for i in range(256)]
        if image.mode in ("L", "RGB"):
            return image.point(lut * (3 if image.mode == "RGB" else 1))
        return image

    def posterize(image, m, fill, resample):
        bits = 4 - int(m / _MAX_LEVEL * 4)
        return image if bits >= 8 else ImageOps.posterize(image, max(bits, 0))

    return {
        "AutoContrast": lambda im, m, f, r: ImageOps.autocontrast(im),
        "Equalize": lambda im, m, f, r: ImageOps.equalize(im),
        "Invert": lambda im, m, f, r: ImageOps.invert(im),
        "Rotate": lambda im, m, f, r: im.rotate(_signed(m / _MAX_LEVEL * 30.0), resample=r, fillcolor=f),
        "PosterizeIncreasing": posterize,
        "Posterize": lambda im, m, f, r: ImageOps.posterize(im, int(m / _MAX_LEVEL * 4)) if int(
            m / _MAX_LEVEL * 4) < 8 else im,
        "SolarizeIncreasing": lambda im, m, f, r: ImageOps.solarize(im, 256 - int(m / _MAX_LEVEL * 256)),
        "Solarize": lambda im, m, f, r: ImageOps.solarize(im, int(m / _MAX_LEVEL * 256)),
        "SolarizeAdd": solarize_add,
        "ColorIncreasing": enhance(ImageEnhance.Color),
        "ContrastIncreasing": enhance(ImageEnhance.Contrast),
        "BrightnessIncreasing": enhance(ImageEnhance.Brightness),
        "SharpnessIncreasing": enhance(ImageEnhance.Sharpness),
        "Color": lambda im, m, f, r: ImageEnhance.Color(im).enhance(m / _MAX_LEVEL * 1.8 + 0.1),
        "Contrast": lambda im, m, f, r: ImageEnhance.Contrast(im).enhance(m / _MAX_LEVEL * 1.8 + 0.1),
        "Brightness": lambda im, m, f, r: ImageEnhance.Brightness(im).enhance(m / _MAX_LEVEL * 1.8 + 0.1),
        "Sharpness": lambda im, m, f, r: ImageEnhance.Sharpness(im).enhance(m / _MAX_LEVEL * 1.8 + 0.1),
        "ShearX": lambda im, m, f, r: affine(im, (1, _signed(m / _MAX_LEVEL * 0.3), 0, 0, 1, 0), f, r),
        "ShearY": lambda im, m, f, r: affine(im, (1, 0, 0, _signed(m / _MAX_LEVEL * 0.3), 1, 0), f, r),
        "TranslateXRel": lambda im, m, f, r: affine(
            im, (1, 0, _signed(m / _MAX_LEVEL * translate_pct) * im.size[0], 0, 1, 0), f, r),
        "TranslateYRel": lambda im, m, f, r: affine(
            im, (1, 0, 0, 0, 1, _signed(m / _MAX_LEVEL * translate_pct) * im.size[1]), f, r),
    }


_INCREASING = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
               "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
               "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_PLAIN = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
          "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


class RandAugment:
    """``num_ops`` operations drawn with replacement from ``ops``, each applied with probability ``prob`` at
    ``magnitude`` (0-10; with ``magnitude_std > 0`` a Gaussian draw around it, clipped to [0, 10])."""

    def __init__(self, ops: Sequence[str] = _INCREASING, num_ops: int = 2, magnitude: float = 9.0,
                 magnitude_std: float = 0.5, prob: float = 0.5, fill=(124, 116, 104),
                 interpolation: str = "bicubic", translate_pct: float = 0.45):
        self.table = _op_table(translate_pct)
        unknown = [op for op in ops if op not in self.table]
        if unknown:
            raise UsageError(f"unknown RandAugment operation(s) {unknown}")
        self.ops, self.num_ops, self.magnitude = list(ops), int(num_ops), float(magnitude)
        self.magnitude_std, self.prob, self.fill = float(magnitude_std), float(prob), tuple(fill)
        self.interpolation = interpolation
        self._resample = _resample(interpolation)

    def _draw_magnitude(self) -> float:
        m = self.magnitude
        if self.magnitude_std == float("inf"):
            m = random.uniform(0, m)
        elif self.magnitude_std > 0:
            m = random.gauss(m, self.magnitude_std)
        return min(_MAX_LEVEL, max(0.0, m))

    def __call__(self, image):
        fill = self.fill if image.mode == "RGB" else self.fill[0]
        for name in random.choices(self.ops, k=self.num_ops):
            if self.prob < 1.0 and random.random() > self.prob:
                continue
            image = self.table[name](image, self._draw_magnitude(), fill, self._resample)
        return image

    def __repr__(self) -> str:
        return (f"RandAugment(n={self.num_ops}, m={self.magnitude}, mstd={self.magnitude_std}, p={self.prob}, "
                f"ops={len(self.ops)})")


def rand_augment_transform(config: str, img_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                           interpolation: str = "bicubic") -> RandAugment:
    """A :class:`RandAugment` from timm's config string, e.g. ``'rand-m9-mstd0.5-inc1'`` (sections ``mM``
    magnitude, ``nN`` number of ops, ``mstdS`` magnitude noise, ``incI`` increasing variants, ``pP``
    probability). The fill colour of rotations and shifts is the mean colour."""
    parts = config.split("-")
    if parts[0] != "rand":
        raise UsageError(f"--aa {config!r}: only RandAugment policies ('rand-m9-mstd0.5-inc1', ...) are "
                         f"implemented (or 'none')")
    kwargs: dict = {"num_ops": 2, "magnitude": 10.0, "magnitude_std": 0.0, "prob": 0.5}
    increasing = False
    for part in parts[1:]:
        found = re.fullmatch(r"(mstd|inc|m|n|p)([\d.]+|inf)", part)
        if not found:
            raise UsageError(f"--aa {config!r}: cannot read the section {part!r} (expected mN, nN, mstdS, incI, pP)")
        key, value = found.groups()
        if key == "mstd":
            kwargs["magnitude_std"] = float(value)
        elif key == "inc":
            increasing = bool(int(float(value)))
        elif key == "m":
            kwargs["magnitude"] = float(value)
        elif key == "n":
            kwargs["num_ops"] = int(float(value))
        else:
            kwargs["prob"] = float(value)
    fill = tuple(int(round(255 * c)) for c in mean)
    return RandAugment(_INCREASING if increasing else _PLAIN, fill=fill, interpolation=interpolation,
                       translate_pct=0.45, **kwargs)


# ------------------------------------------------------------------------------------- tensor + erasing
class ToTensorNormalize:
    """PIL image -> float tensor ``[C, H, W]`` in [0, 1], then ``(x - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        if pixels.dim() == 2:
            pixels = pixels.unsqueeze(-1)
        x = pixels.permute(2, 0, 1).to(torch.float32).div_(255.0)
        if x.shape[0] != self.mean.shape[0]:
            raise ValueError(f"image has {x.shape[0]} channel(s) but mean/std have {self.mean.shape[0]}")
        return x.sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"ToTensorNormalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class RandomErasing:
    """With probability ``p`` erase ``count`` rectangles of a normalised ``[C, H, W]`` tensor, in place."""

    def __init__(self, p: float = 0.25, mode: str = "pixel", count: int = 1, min_area: float = 0.02,
                 max_area: float = 1 / 3, min_aspect: float = 0.3):
        if mode not in ("pixel", "rand", "const"):
            raise UsageError(f"--remode must be 'pixel', 'rand' or 'const', got {mode!r}")
        self.p, self.mode, self.count = float(p), mode, int(count)
        self.min_area, self.max_area = float(min_area), float(max_area)
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if random.random() > self.p:
            return x
        channels, height, width = x.shape
        area = height * width
        for _ in range(self.count):
            for _attempt in range(10):
                target = random.uniform(self.min_area, self.max_area) * area / self.count
                aspect = math.exp(random.uniform(*self.log_aspect))
                h = int(round(math.sqrt(target * aspect)))
                w = int(round(math.sqrt(target / aspect)))
                if w < width and h < height:
                    top, left = random.randint(0, height - h), random.randint(0, width - w)
                    if self.mode == "pixel":
                        fill = torch.randn(channels, h, w, dtype=x.dtype)
                    elif self.mode == "rand":
                        fill = torch.randn(channels, 1, 1, dtype=x.dtype).expand(channels, h, w)
                    else:
                        fill = torch.zeros(channels, h, w, dtype=x.dtype)
                    x[:, top:top + h, left:left + w] = fill
                    break
        return x

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, mode={self.mode}, count={self.count})"


def build_transform(is_train: bool, input_size: int = 224, *, aa: str | None = "rand-m9-mstd0.5-inc1",
                    color_jitter: float | None = 0.4, reprob: float = 0.25, remode: str = "pixel",
                    recount: int = 1, hflip: float = 0.5, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                    interpolation: str = "bicubic", mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, crop_pct: float | None = None) -> Compose:
    """The training or evaluation pipeline of the MAE/DeiT-style recipes (``PIL image -> tensor``).

    ``aa`` ``None``/``'none'`` turns RandAugment off (then ``color_jitter`` applies when > 0);
    ``crop_pct`` defaults to 224/256 for ``input_size <= 224`` and 1.0 above, as the reference's evaluation.
    """
    if not is_train:
        if crop_pct is None:
            crop_pct = 224 / 256 if input_size <= 224 else 1.0
        return Compose([ResizeCenterCrop(int(input_size / crop_pct), input_size, interpolation),
                        ToTensorNormalize(mean, std)])
    steps: list = [RandomResizedCrop(input_size, scale, ratio, interpolation)]
    if hflip > 0:
        steps.append(RandomHorizontalFlip(hflip))
    if aa and aa.lower() != "none":
        steps.append(rand_augment_transform(aa, input_size, mean, interpolation))
    elif color_jitter:
        steps.append(ColorJitter(color_jitter))
    steps.append(ToTensorNormalize(mean, std))
    if reprob > 0:
        steps.append(RandomErasing(reprob, remode, recount))
    return Compose(steps)


# ------------------------------------------------------------------------------------------ mixup/cutmix
def mixup_target(labels: torch.Tensor, num_classes: int, lam, smoothing: float = 0.0) -> torch.Tensor:
    """Soft targets: ``lam * smooth(y) + (1 - lam) * smooth(y.flip(0))`` with ``smooth`` putting
    ``1 - s + s/K`` on the label and ``s/K`` elsewhere; ``lam`` a float or a per-sample ``[B]`` tensor."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y1 = torch.full((len(labels), num_classes), off, device=labels.device).scatter_(1, labels.view(-1, 1), on)
    y2 = y1.flip(0)
    if isinstance(lam, torch.Tensor):
        lam = lam.to(y1.device, y1.dtype).view(-1, 1)
    return y1 * lam + y2 * (1.0 - lam)


def _beta(alpha: float) -> float:
    return float(np.random.beta(alpha, alpha))


class Mixup:
    """Mixup (``mixup_alpha``) and/or CutMix (``cutmix_alpha`` or a ``cutmix_minmax`` box-size range).

    ``mix(x, labels)`` mixes the batch ``x`` ``[B, C, H, W]`` with its reverse (``x.flip(0)``) in place and
    returns the soft targets ``[B, num_classes]``. With probability ``prob`` a batch is mixed; when both are
    enabled CutMix is chosen with probability ``switch_prob``. CutMix's ratio is corrected to the box actually
    cut (``correct_lam``). Modes: ``'batch'`` (one draw per batch), ``'pair'`` / ``'elem'`` (per sample).
    """

    def __init__(self, mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0, cutmix_minmax=None,
                 prob: float = 1.0, switch_prob: float = 0.5, mode: str = "batch", correct_lam: bool = True,
                 label_smoothing: float = 0.1, num_classes: int = 1000):
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2:
                raise UsageError(f"--cutmix_minmax needs two values (min max), got {list(cutmix_minmax)}")
            cutmix_alpha = 1.0
        if mode not in ("batch", "pair", "elem"):
            raise UsageError(f"--mixup_mode must be 'batch', 'pair' or 'elem', got {mode!r}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.cutmix_minmax = tuple(cutmix_minmax) if cutmix_minmax is not None else None
        self.prob, self.switch_prob, self.mode = float(prob), float(switch_prob), mode
        self.correct_lam, self.label_smoothing, self.num_classes = correct_lam, float(label_smoothing), num_classes
        self.last_targets: torch.Tensor | None = None  # the soft targets of the last mixed batch

    def _draw(self) -> tuple[float, bool]:
        if random.random() >= self.prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = random.random() < self.switch_prob
            return _beta(self.cutmix_alpha if cutmix else self.mixup_alpha), cutmix
        if self.mixup_alpha > 0:
            return _beta(self.mixup_alpha), False
        return _beta(self.cutmix_alpha), True

    def _box(self, height: int, width: int, lam: float) -> tuple[tuple[int, int, int, int], float]:
        if self.cutmix_minmax is not None:
            lo, hi = self.cutmix_minmax
            cut_h = int(np.random.randint(int(height * lo), int(height * hi)))
            cut_w = int(np.random.randint(int(width * lo), int(width * hi)))
            top, left = int(np.random.randint(0, height - cut_h)), int(np.random.randint(0, width - cut_w))
            box = (top, top + cut_h, left, left + cut_w)
        else:
            ratio = math.sqrt(1.0 - lam)
            cut_h, cut_w = int(height * ratio), int(width * ratio)
            cy, cx = int(np.random.randint(0, height)), int(np.random.randint(0, width))
            box = (max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height),
                   max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width))
        if self.correct_lam or self.cutmix_minmax is not None:
            lam = 1.0 - (box[1] - box[0]) * (box[3] - box[2]) / float(height * width)
        return box, lam

    def mix(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if len(x) % 2 != 0:
            raise UsageError(f"mixup/cutmix needs an even batch size, got {len(x)}")
        height, width = x.shape[-2:]
        if self.mode == "batch":
            lam, cutmix = self._draw()
            if lam < 1.0:
                if cutmix:
                    (y0, y1, x0, x1), lam = self._box(height, width, lam)
                    x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
                else:
                    flipped = x.flip(0).mul_(1.0 - lam)  # a copy, taken before x changes
                    x.mul_(lam).add_(flipped)
            lam_t = lam
        else:
            source = x.clone()
            n = len(x) // 2 if self.mode == "pair" else len(x)
            lams = torch.ones(len(x))
            for i in range(n):
                j = len(x) - 1 - i
                lam, cutmix = self._draw()
                if lam < 1.0:
                    if cutmix:
                        (y0, y1, x0, x1), lam = self._box(height, width, lam)
                        x[i, ..., y0:y1, x0:x1] = source[j, ..., y0:y1, x0:x1]
                        if self.mode == "pair":
                            x[j, ..., y0:y1, x0:x1] = source[i, ..., y0:y1, x0:x1]
                    else:
                        x[i] = source[i] * lam + source[j] * (1.0 - lam)
                        if self.mode == "pair":
                            x[j] = source[j] * lam + source[i] * (1.0 - lam)
                lams[i] = lam
                if self.mode == "pair":
                    lams[j] = lam
            lam_t = lams
        self.last_targets = mixup_target(labels, self.num_classes, lam_t, self.label_smoothing)
        return self.last_targets

    def __repr__(self) -> str:
        return (f"Mixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
                f"cutmix_minmax={self.cutmix_minmax}, prob={self.prob}, switch_prob={self.switch_prob}, "
                f"mode={self.mode!r}, label_smoothing={self.label_smoothing})")
