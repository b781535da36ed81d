"""Exact outputs of the three resize strategies, and RGB conversion of every PIL mode."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from prism_plugin_timm_vision.transforms import PrismImageTransform, letterbox_pad, to_rgb

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def transform(resize: str, size: int = 32, crop_pct: float = 1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    return PrismImageTransform(image_size=size, resize=resize, mean=mean, std=std, interpolation="bicubic",
                               crop_pct=crop_pct)


def normalised(rgb: np.ndarray, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> torch.Tensor:
    """The expected tensor for an ``[H, W, 3]`` uint8 array."""
    t = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    return (t - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def column_coded(width: int, height: int) -> Image.Image:
    """Red channel = column index, green = row index: crops are read off exactly."""
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([xs, ys, np.full_like(xs, 7)], axis=-1).astype(np.uint8))


def test_resize_naive_stretches_to_a_square_like_pil_bicubic() -> None:
    image = column_coded(64, 20)
    expected = np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC))
    torch.testing.assert_close(transform("resize-naive")(image), normalised(expected), rtol=0, atol=0)


def test_resize_crop_keeps_the_centre_of_the_long_side() -> None:
    out = transform("resize-crop")(column_coded(64, 32))  # shorter side is already 32: crop columns 16..47
    expected = np.asarray(column_coded(64, 32))[:, 16:48]
    torch.testing.assert_close(out, normalised(expected), rtol=0, atol=0)


def test_resize_crop_scales_to_size_over_crop_pct_first() -> None:
    # floor(16 / 0.5) = 32 = the shorter side: no resampling, then the central 16 × 16 of 32 × 64.
    out = transform("resize-crop", size=16, crop_pct=0.5)(column_coded(32, 64))
    expected = np.asarray(column_coded(32, 64))[24:40, 8:24]
    torch.testing.assert_close(out, normalised(expected), rtol=0, atol=0)


@pytest.mark.parametrize(("height", "top", "bottom"), [(16, 8, 8), (15, 8, 9)])
def test_letterbox_pads_with_the_mean_colour(height: int, top: int, bottom: int) -> None:
    red = Image.new("RGB", (32, height), (200, 0, 0))
    out = transform("letterbox", mean=CLIP_MEAN, std=CLIP_STD)(red)
    fill = np.array([122, 116, 104], dtype=np.uint8)  # int(255 × CLIP mean), as the original
    expected = np.empty((32, 32, 3), dtype=np.uint8)
    expected[:] = fill
    expected[top:32 - bottom] = (200, 0, 0)
    torch.testing.assert_close(out, normalised(expected, CLIP_MEAN, CLIP_STD), rtol=0, atol=0)


def test_letterbox_pads_columns_of_a_tall_image_and_leaves_squares_alone() -> None:
    padded = np.asarray(letterbox_pad(Image.new("RGB", (3, 8), (9, 9, 9)), (1, 2, 3)))
    assert padded.shape == (8, 8, 3)
    assert (padded[:, :2] == (1, 2, 3)).all() and (padded[:, 2:5] == 9).all() and (padded[:, 5:] == (1, 2, 3)).all()
    square = Image.new("RGB", (5, 5))
    assert letterbox_pad(square, (0, 0, 0)) is square


def test_grey_16_bit_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)  # fromarray gives mode I;16
    rgb = np.asarray(to_rgb(Image.fromarray(values)))
    assert rgb[0, :, 0].tolist() == [0, 128, 255] and (rgb[..., 0] == rgb[..., 2]).all()


def test_transparency_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))
    assert np.asarray(to_rgb(rgba)).tolist() == [[[255, 0, 0], [255, 255, 255]]]
    assert np.asarray(to_rgb(Image.new("LA", (1, 1), (0, 0)))).tolist() == [[[255, 255, 255]]]


def test_palette_and_cmyk_become_their_rgb_colours() -> None:
    palette = Image.new("P", (1, 1), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30])
    assert np.asarray(to_rgb(palette))[0, 0].tolist() == [10, 200, 30]
    cyan = Image.new("CMYK", (1, 1), (255, 0, 0, 0))
    assert np.asarray(to_rgb(cyan))[0, 0].tolist() == [0, 255, 255]


@pytest.mark.parametrize("resize", ["resize-naive", "resize-crop", "letterbox"])
@pytest.mark.parametrize(("mode", "size"), [("L", (7, 3)), ("LA", (3, 7)), ("P", (5, 5)), ("RGBA", (1, 1)),
                                            ("CMYK", (2, 9)), ("I;16", (4, 4)), ("1", (3, 2)), ("RGB", (1, 2000))])
def test_any_mode_and_size_gives_a_normalised_square(resize: str, mode: str, size: tuple[int, int]) -> None:
    out = transform(resize)(Image.new(mode, size))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1


def test_transform_is_marked_and_survives_pickling_for_loader_workers() -> None:
    t = transform("letterbox")
    assert t.is_prismatic is True
    image = column_coded(40, 24)
    assert torch.equal(pickle.loads(pickle.dumps(t))(image), t(image))


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="corner-pad"):
        transform("corner-pad")
