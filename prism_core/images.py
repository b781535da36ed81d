"""Reading image files with errors that name the file (PIL only, no torch): shared by data sets and backbones."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image


class ImageLoadError(ValueError):
    """An image file is missing, corrupt, truncated or not an image; the message starts with its path."""


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode an image file, so a corrupt or truncated file fails here rather than mid-batch.

    Returns the image in its stored mode (the backbone transforms convert any mode to RGB).
    Raises ``ImageLoadError`` naming ``path`` for a missing, unreadable, corrupt or truncated file.
    """
    path = Path(path)
    image = None
    try:
        image = Image.open(path)
        # `open` reads only the header; decoding everything is what finds truncation and corruption.
        image.load()
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: missing image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if image is not None:
            image.close()
        raise ImageLoadError(f"{path}: corrupt image ({type(exc).__name__}: {exc})") from exc
    return image
