"""Bring descriptions and embeddings from elsewhere into our formats.

The official GPT4Image files (huawei-noah/Efficient-Computing, GPT4Image/),
both in torchvision ``ImageFolder`` order (sorted class folders, then
``sorted(os.walk(...))`` and sorted file names), re-keyed here to the
dataset's own keys:

* the released description set ``minigpt4_caption_imagenet_train_*.pth``: a
  torch-saved list of strings (what description2embedding.py:20 loads)
  -> descriptions JSONL (:func:`import_gpt4image`);
* the text-embedding tensor that description2embedding.py:40-42 saves and the
  training scripts load (resnet/utils.py:176, deit/utils.py:263): N x D,
  CLIP RN50 (1024-d) by default -> an embedding store
  (:func:`import_gpt4image_embeddings`).

Also CSV / JSON maps of key -> text (or key -> [texts], several descriptions
per key, e.g. per-class description files).

Output goes to a temporary file or directory renamed into place: a crash
never leaves a half import that embed.py or training would take for whole.
"""
from __future__ import annotations

import os
import time
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from gpt4image_mm.utils.descriptions import DescriptionWriter, is_descriptions_file
from gpt4image_mm.utils.errors import InputError
from gpt4image_mm.utils.files import atomic_path, check_replaceable
from gpt4image_mm.utils.image_files import image_folder_keys
from gpt4image_mm.utils.keys import check_key

# description2embedding.py:48 default --model RN50 (CLIP), as open_clip names
# it; its text tower is 1024-d. ViT-L/14 (the other choice there) is 768-d.
OFFICIAL_ENCODER = 'open_clip:RN50/openai'

class ImportSourceError(InputError):
    """An import source that does not fit its target (says how)."""


def imagefolder_sort_key(key: str) -> Tuple[str, str, str]:
    """Where torchvision's ImageFolder puts the file ``key`` (``class/...``).

    ImageFolder sorts class folders by name, walks each with
    ``sorted(os.walk(class_dir))`` (directories by their full path) and sorts
    file names; comparing ``(class, sub-path, file)`` reproduces that, where
    sorting the joined path would not (``'a-b/x' < 'a/x'`` as strings).
    """
    parts = key.split('/')
    if len(parts) < 2:
        raise ImportSourceError(f'key {key!r} is not <class folder>/<file>: the '
                           'release is in ImageFolder order, which needs '
                           'file keys of a class-folder dataset')
    sub = ''.join('/' + p for p in parts[1:-1])
    return parts[0], sub, parts[-1]


def imagefolder_order(keys: Sequence[str]) -> List[int]:
    """Indices of ``keys`` in ImageFolder order."""
    return sorted(range(len(keys)), key=lambda i: imagefolder_sort_key(keys[i]))


def write_records(records: Iterable[dict], out: str,
                  force: bool = False) -> int:
    """Write description records to ``out`` atomically; returns the count."""
    if os.path.exists(out) and not force:
        raise ImportSourceError(f'{out} exists; pass force (--force) to replace')
    check_replaceable(out, is_descriptions_file, 'a descriptions file',
                      ImportSourceError)
    n = 0
    with atomic_path(out) as tmp, \
            DescriptionWriter(tmp, fsync_every=1 << 30) as w:
        for rec in records:
            w.write(rec)
            n += 1
    return n


def _clean_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise ImportSourceError(f'{where}: text must be a string, got '
                           f'{type(text).__name__}')
    text = text.strip()
    if not text:
        raise ImportSourceError(f'{where}: empty description')
    return text


def load_gpt4image_file(path: str) -> object:
    """An official GPT4Image .pth file, loaded safely (``weights_only``)."""
    import torch
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors vary
        raise ImportSourceError(f'{path}: not a torch-saved description list '
                                f'or embedding tensor ({type(e).__name__}: '
                                f'{e})') from None


def _is_tensor(obj: object) -> bool:
    import torch
    return isinstance(obj, torch.Tensor)


def load_gpt4image_release(path: str) -> List[str]:
    """The paper's torch-saved list of description strings (safe loading)."""
    texts = load_gpt4image_file(path)
    if _is_tensor(texts):
        raise ImportSourceError(
            f'{path}: an embedding tensor (description2embedding.py output), '
            'not descriptions: use import-gpt4image-embeddings')
    if isinstance(texts, tuple):
        texts = list(texts)
    if not isinstance(texts, list) or not all(isinstance(t, str)
                                              for t in texts):
        raise ImportSourceError(f'{path}: expected a list of strings, got '
                                f'{type(texts).__name__}')
    return texts


def load_gpt4image_embeddings(path: str) -> np.ndarray:
    """The official N x D text-embedding tensor (fp16 or fp32) as float32."""
    emb = load_gpt4image_file(path)
    if isinstance(emb, list):
        raise ImportSourceError(
            f'{path}: a description list, not embeddings: use '
            'import-gpt4image, then tools/embed.py --encoder '
            f'{OFFICIAL_ENCODER}')
    if not _is_tensor(emb) or emb.dim() != 2 or not emb.is_floating_point():
        shape = tuple(emb.shape) if _is_tensor(emb) else type(emb).__name__
        raise ImportSourceError(f'{path}: expected an N x D float tensor, '
                                f'got {shape}')
    return emb.float().numpy()


def _unit_rows(emb: np.ndarray, keys: Sequence[str], path: str) -> np.ndarray:
    """L2-normalise rows; a zero or non-finite row is an error naming it."""
    norms = np.linalg.norm(emb, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if len(bad):
        i = int(bad[0])
        raise ImportSourceError(f'{path}: row {i} (image {keys[i]!r}) is zero '
                                f'or not finite ({len(bad)} such rows)')
    return emb / norms[:, None]


def _check_replaceable(out: str, force: bool) -> None:
    """``force`` replaces a store, never another directory or file."""
    from gpt4image_mm.datasets.store import is_store
    if os.path.exists(out) and not force:
        raise ImportSourceError(f'{out} exists; pass --force to replace it')
    check_replaceable(out, is_store, 'an embedding store', ImportSourceError)


def _check_count(path: str, n: int, what: str, n_keys: int, where: str,
                 unit: str, flag: str) -> None:
    """The official files cover the ImageNet-1k train split in ImageFolder
    order; another count would pair every row with the wrong image."""
    if n != n_keys:
        raise ImportSourceError(
            f'{path} holds {n} {what} but {where} {n_keys} {unit}; the '
            'official files cover the ImageNet-1k train split (1,281,167 '
            f'images) in ImageFolder order -- point {flag} at that split')


def import_gpt4image_embeddings(path: str, images_root: str, out: str,
                                encoder_name: str = OFFICIAL_ENCODER,
                                store_dtype: str = 'float16',
                                force: bool = False) -> dict:
    """Turn the official embedding tensor into a store keyed like our
    datasets (row i = ImageFolder index i of ``images_root``).

    The row count must equal the image count: the official loaders never
    check it (resnet/utils.py:177 has the assert commented out), and a
    different tree pairs every image with another image's text. Nothing is
    written unless every check passes. Returns the manifest.
    """
    from gpt4image_mm.datasets.store import read_manifest, write_store
    _check_replaceable(out, force)
    keys = image_folder_keys(images_root)
    emb = load_gpt4image_embeddings(path)
    _check_count(path, len(emb), 'embeddings', len(keys),
                 f'{images_root} has', 'images', '--images')
    rows = _unit_rows(emb, keys, path)
    write_store(out, keys, rows, encoder=encoder_name, dtype=store_dtype,
                normalized=True, overwrite=force,
                source=f'gpt4image-embeddings:{os.path.basename(path)}',
                images_root=os.path.abspath(images_root))
    return read_manifest(out)


def import_gpt4image(path: str, keys: Sequence[str], out: str,
                     order: str = 'imagefolder', force: bool = False,
                     model: str = 'gpt4image-release') -> int:
    """Key the paper's description list to ``keys`` and write JSONL.

    ``keys``: the dataset's keys (:func:`gpt4image_mm.utils.keys.dataset_keys` or
    :func:`image_folder_keys`). ``order='imagefolder'`` (the release's
    order) re-sorts them as torchvision did; ``'dataset'`` takes them as
    given. The counts must match: a different subset of ImageNet would pair
    every text with the wrong image.
    """
    texts = load_gpt4image_release(path)
    _check_count(path, len(texts), 'descriptions', len(keys),
                 'the dataset has', 'samples', 'the config/--images')
    if order == 'imagefolder':
        idx = imagefolder_order(keys)
    elif order == 'dataset':
        idx = list(range(len(keys)))
    else:
        raise ImportSourceError(f'unknown order {order!r} (imagefolder, dataset)')
    now = time.time()

    def records():
        for text, i in zip(texts, idx):
            key = check_key(keys[i])
            yield dict(key=key, text=_clean_text(text, key), model=model,
                       prompt_id='gpt4image-release', time=now)
    return write_records(records(), out, force)


def read_map(path: str) -> List[Tuple[str, str]]:
    """(key, text) pairs of a caption file in any format
    :mod:`.caption_sources` reads; a list of texts gives ``key#k`` keys."""
    from gpt4image_mm.embedding.map_import import read_map as read
    return read(path)


def import_map(path: str, out: str, class_level: bool = False,
               force: bool = False, model: Optional[str] = None,
               fmt: str = 'auto', max_record: Optional[int] = None) -> int:
    """Write a caption file as descriptions JSONL keyed by its names
    (:func:`gpt4image_mm.embedding.map_import.import_map`)."""
    from gpt4image_mm.embedding.map_import import DEFAULT_MAX_RECORD
    from gpt4image_mm.embedding.map_import import import_map as write
    return write(path, out, class_level=class_level, force=force,
                 model=model, fmt=fmt,
                 max_record=max_record or DEFAULT_MAX_RECORD)
