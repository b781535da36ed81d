"""Image transforms: a PIL image of any mode and size → a normalised ``[3, S, S]`` float tensor.

The three resize strategies of the original (``resize-naive``, ``resize-crop``, ``letterbox``) over torchvision's
functional ops. Objects here are picklable (data-loader workers copy them) and carry ``is_prismatic = True``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
    "lanczos": InterpolationMode.LANCZOS,
    "box": InterpolationMode.BOX,
    "hamming": InterpolationMode.HAMMING,
}
# PIL reads 16-bit greyscale PNG/TIFF into these; its own convert("RGB") clips them at 255 instead of scaling.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# resize-crop keeps at most the central `short side` of the long side; cropping a degenerate strip (e.g. 1×5000)
# to this aspect ratio first keeps the intermediate resize from allocating a huge image.
MAX_ASPECT_BEFORE_CROP = 8


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16-bit greyscale scaled by 255/65535, transparency over white."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def letterbox_pad(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad an RGB image to a square with ``fill``, centred; an odd difference puts the extra pixel right/bottom.

    (The original split an odd difference by integer division on both sides, so its "square" lost a pixel.)
    """
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class PrismImageTransform:
    """PIL image → ``[3, image_size, image_size]`` tensor normalised with the backbone's mean and std.

    - ``resize-naive``: ``Resize((S, S))``, ignoring the aspect ratio (all Prism models).
    - ``resize-crop``: shorter side to ``floor(S / crop_pct)``, then centre crop ``S × S`` (timm's eval transform).
    - ``letterbox``: pad to a square with ``fill = int(255 × mean)``, then as ``resize-crop``.
    """

    is_prismatic = True

    def __init__(self, *, image_size: int, resize: str, mean: Sequence[float], std: Sequence[float],
                 interpolation: str = "bicubic", crop_pct: float = 1.0) -> None:
        if resize not in ("resize-naive", "resize-crop", "letterbox"):
            raise ValueError(f"unknown resize strategy {resize!r} (resize-naive, resize-crop, letterbox)")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {interpolation!r} ({', '.join(INTERPOLATIONS)})")
        self.image_size = image_size
        self.resize = resize
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation
        self.crop_pct = crop_pct
        self.fill: tuple[int, int, int] = tuple(int(255 * m) for m in self.mean)  # type: ignore[assignment]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        size, mode = self.image_size, INTERPOLATIONS[self.interpolation]
        image = to_rgb(image)
        if self.resize == "resize-naive":
            image = TF.resize(image, [size, size], interpolation=mode)
        else:
            if self.resize == "letterbox":
                image = letterbox_pad(image, self.fill)
            image = _crop_degenerate_aspect(image)
            image = TF.resize(image, math.floor(size / self.crop_pct), interpolation=mode)
            image = TF.center_crop(image, [size, size])
        return TF.normalize(TF.to_tensor(image), self.mean, self.std)

    def __repr__(self) -> str:
        return (f"PrismImageTransform(image_size={self.image_size}, resize={self.resize!r}, mean={self.mean}, "
                f"std={self.std}, interpolation={self.interpolation!r}, crop_pct={self.crop_pct})")


def _crop_degenerate_aspect(image: Image.Image) -> Image.Image:
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if long <= short * MAX_ASPECT_BEFORE_CROP:
        return image
    keep = short * MAX_ASPECT_BEFORE_CROP
    return TF.center_crop(image, [height, keep] if width > height else [keep, width])
