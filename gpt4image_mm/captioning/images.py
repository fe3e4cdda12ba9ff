"""Load, downscale and encode images for upload.

Downscaling before upload is the main cost lever of API captioning: most
providers bill images by size, and ImageNet photos are ~400x350 anyway. A bad
image (corrupt, truncated, not an image) raises :class:`ImageError` naming
the file; the runner records it as a failure and goes on.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Tuple, Union

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif',
                    '.tiff', '.ppm', '.pgm')


class ImageError(ValueError):
    """An image could not be read; the message names the file."""


def open_rgb(source: Union[str, Any], name: str = '') -> Image.Image:
    """Decode ``source`` (a path or an HxW[xC] uint8 array) fully to RGB."""
    label = name or (source if isinstance(source, str) else 'array image')
    try:
        if isinstance(source, str):
            with Image.open(source) as im:
                im.load()  # decode now: truncation shows up here, not later
                return im.convert('RGB')
        import numpy as np
        arr = np.asarray(source)
        if arr.dtype != np.uint8:
            arr = arr.astype(np.uint8)
        return Image.fromarray(arr).convert('RGB')
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError,
            TypeError) as e:
        raise ImageError(f'{label}: cannot read image '
                         f'({type(e).__name__}: {e})') from None


def downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink so that the longest side is at most ``max_side`` (0: keep)."""
    if max_side and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return img


def encode_jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format='JPEG', quality=int(quality), optimize=False)
    return buf.getvalue()


def to_data_url(data: bytes, mime: str = 'image/jpeg') -> str:
    return f'data:{mime};base64,' + base64.b64encode(data).decode('ascii')


def prepare_image(source: Union[str, Any], max_side: int = 512,
                  quality: int = 85, name: str = '') -> Tuple[str, Tuple[int,
                                                                       int]]:
    """``(data URL, (width, height))`` of the downscaled JPEG to upload."""
    img = downscale(open_rgb(source, name), max_side)
    return to_data_url(encode_jpeg(img, quality)), img.size


def image_size(source: Union[str, Any], max_side: int = 512) -> Tuple[int,
                                                                      int]:
    """Size after downscaling, reading only the header (for --dry-run)."""
    try:
        if isinstance(source, str):
            with Image.open(source) as im:
                w, h = im.size
        else:
            h, w = source.shape[:2]
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageError(f'{source}: cannot read image ({e})') from None
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    return w, h
