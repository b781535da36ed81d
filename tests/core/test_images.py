from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from prism_core.images import ImageLoadError, load_image


def write_png(path: Path) -> bytes:
    Image.new("RGB", (64, 48), (10, 20, 30)).save(path)
    return path.read_bytes()


def test_loads_a_good_image_fully(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    write_png(path)
    image = load_image(path)
    assert image.size == (64, 48) and image.getpixel((3, 3)) == (10, 20, 30)


def test_truncated_file_fails_naming_the_file(tmp_path: Path) -> None:
    good = Image.effect_noise((256, 256), 60).convert("RGB")  # noise: the compressed body is large
    path = tmp_path / "cut.jpg"
    good.save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg"):
        load_image(path)


def test_corrupt_and_missing_files_fail_naming_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "garbage.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    with pytest.raises(ImageLoadError, match=r"garbage\.png"):
        load_image(corrupt)
    with pytest.raises(ImageLoadError, match=r"absent\.png: missing image file"):
        load_image(tmp_path / "absent.png")
