"""Load, downscale and encode images for upload.

Downscaling before upload is the main cost lever of API captioning: most
providers bill images by size, and ImageNet photos are ~400x350 anyway. A bad
image (corrupt, truncated, not an image, a decompression bomb) raises
:class:`ImageError` naming the file; the runner records it as a failure and
goes on. :func:`open_image` is the one place that opens an image file.
"""
from __future__ import annotations

import base64
import contextlib
import io
import os
import stat
from typing import Any, Iterator, Tuple, Union

from PIL import Image

from gpt4image_mm.utils.errors import InputError


class ImageError(InputError):
    """An image could not be read; the message names the file."""


@contextlib.contextmanager
def image_errors(label: str) -> Iterator[None]:
    """Turn any failure of decoding one image into :class:`ImageError`.

    PIL raises many types for hostile files: ``DecompressionBombError`` (a
    header claiming more than twice ``Image.MAX_IMAGE_PIXELS`` pixels),
    ``OSError``, ``SyntaxError``, ``struct.error``, ``MemoryError``, ...; one
    sample must never end a run, so every ``Exception`` becomes one.
    """
    try:
        yield
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001  (see docstring)
        kind = ('decompression bomb' if isinstance(
            e, Image.DecompressionBombError) else 'cannot read image')
        raise ImageError(f'{label}: {kind} ({type(e).__name__}: {e})') \
            from None


@contextlib.contextmanager
def open_image(path: str, name: str = '') -> Iterator[Image.Image]:
    """``Image.open`` with every decoding failure as :class:`ImageError`;
    only a regular file is read (a FIFO or device would block for ever)."""
    with image_errors(name or path), _regular_file(path, name or path) as f, \
            Image.open(f) as im:
        yield im


@contextlib.contextmanager
def _regular_file(path: str, label: str) -> Iterator[Any]:
    """``path`` opened for reading, refused unless a regular file. The open
    itself does not block (``O_NONBLOCK``: opening a FIFO waits for a
    writer) and the check is on the opened file, not on a name that could
    be swapped in between."""
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(f'{label}: not a regular file (a FIFO, socket '
                             'or device)')
        os.set_blocking(fd, True)
        f = os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def open_rgb(source: Union[str, Any], name: str = '') -> Image.Image:
    """Decode ``source`` (a path or an HxW[xC] uint8 array) fully to RGB."""
    label = name or (source if isinstance(source, str) else 'array image')
    if isinstance(source, str):
        with open_image(source, label) as im, image_errors(label):
            im.load()  # decode now: truncation shows up here, not later
            return im.convert('RGB')
    with image_errors(label):
        import numpy as np
        arr = np.asarray(source)
        if arr.dtype != np.uint8:
            arr = arr.astype(np.uint8)
        return Image.fromarray(arr).convert('RGB')


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
    if isinstance(source, str):
        with open_image(source) as im:
            w, h = im.size
    else:
        with image_errors('array image'):
            h, w = source.shape[:2]
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    return w, h
