"""Bring descriptions from elsewhere into the descriptions JSONL format.

* the description set released with the GPT4Image paper: a torch-saved list
  of strings, one per ImageNet training image in torchvision ``ImageFolder``
  order (sorted class folders, then ``sorted(os.walk(...))`` and sorted
  file names) -- re-keyed here to the dataset's own keys;
* CSV / JSON maps of key -> text (or key -> [texts], several descriptions
  per key, e.g. per-class description files).

Output goes to a temporary file renamed into place: a crash never leaves a
half import that embed.py would take for the whole.
"""
from __future__ import annotations

import csv
import json
import os
import time
from typing import Iterable, List, Optional, Sequence, Tuple

from ..descriptions import DescriptionWriter, is_descriptions_file
from ..files import check_replaceable
from ..keys import check_key, class_key, description_key

# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                  '.tiff', '.webp')


class ImportSourceError(ValueError):
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


def image_folder_keys(root: str) -> List[str]:
    """Keys of an ImageFolder tree, exactly as torchvision enumerates it."""
    keys = []
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    for cls in classes:
        cdir = os.path.join(root, cls)
        for dirpath, _, fnames in sorted(os.walk(cdir, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    rel = os.path.relpath(os.path.join(dirpath, fname), root)
                    keys.append(rel.replace(os.sep, '/'))
    return keys


def write_records(records: Iterable[dict], out: str,
                  force: bool = False) -> int:
    """Write description records to ``out`` atomically; returns the count."""
    if os.path.exists(out) and not force:
        raise ImportSourceError(f'{out} exists; pass force (--force) to replace')
    check_replaceable(out, is_descriptions_file, 'a descriptions file',
                      ImportSourceError)
    tmp = f'{out}.tmp-{os.getpid()}'
    n = 0
    try:
        with DescriptionWriter(tmp, fsync_every=1 << 30) as w:
            for rec in records:
                w.write(rec)
                n += 1
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return n


def _clean_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise ImportSourceError(f'{where}: text must be a string, got '
                           f'{type(text).__name__}')
    text = text.strip()
    if not text:
        raise ImportSourceError(f'{where}: empty description')
    return text


def load_gpt4image_release(path: str) -> List[str]:
    """The paper's torch-saved list of description strings (safe loading)."""
    import torch
    try:
        texts = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors vary
        raise ImportSourceError(f'{path}: not a torch-saved list of strings '
                           f'({type(e).__name__}: {e})') from None
    if isinstance(texts, tuple):
        texts = list(texts)
    if not isinstance(texts, list) or not all(isinstance(t, str)
                                              for t in texts):
        raise ImportSourceError(f'{path}: expected a list of strings, got '
                           f'{type(texts).__name__}')
    return texts


def import_gpt4image(path: str, keys: Sequence[str], out: str,
                     order: str = 'imagefolder', force: bool = False,
                     model: str = 'gpt4image-release') -> int:
    """Key the paper's description list to ``keys`` and write JSONL.

    ``keys``: the dataset's keys (:func:`gpt4image_mm.keys.dataset_keys` or
    :func:`image_folder_keys`). ``order='imagefolder'`` (the release's
    order) re-sorts them as torchvision did; ``'dataset'`` takes them as
    given. The counts must match: a different subset of ImageNet would pair
    every text with the wrong image.
    """
    texts = load_gpt4image_release(path)
    if len(texts) != len(keys):
        raise ImportSourceError(
            f'{path} holds {len(texts)} descriptions but the dataset has '
            f'{len(keys)} samples; the release covers the full ImageNet-1k '
            'train split (1,281,167 images) in ImageFolder order -- point '
            'the config/--images at that split')
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
    """(key, text) pairs from a CSV (columns ``key,text``, or the first two)
    or JSON file (``{key: text}``, ``{key: [texts]}`` or a list of
    ``{"key", "text"}`` objects). A list of texts gives ``key#k`` keys."""
    pairs: List[Tuple[str, object]] = []
    if path.lower().endswith(('.json', '.jsonl')):
        with open(path, encoding='utf-8') as f:
            if path.lower().endswith('.jsonl'):
                data: object = [json.loads(line) for line in f if line.strip()]
            else:
                data = json.load(f)
        if isinstance(data, dict):
            pairs = list(data.items())
        elif isinstance(data, list) and all(isinstance(r, dict) and 'key' in r
                                            and 'text' in r for r in data):
            pairs = [(r['key'], r['text']) for r in data]
        else:
            raise ImportSourceError(f'{path}: expected {{key: text}} or a list of '
                               '{"key": ..., "text": ...}')
    else:
        with open(path, encoding='utf-8', newline='') as f:
            rows = list(csv.reader(f))
        if rows and [c.strip().lower() for c in rows[0][:2]] == ['key',
                                                                 'text']:
            rows = rows[1:]
        for n, row in enumerate(rows, 1):
            if len(row) < 2:
                raise ImportSourceError(f'{path}: row {n} has no text column')
            pairs.append((row[0], row[1]))
    out: List[Tuple[str, str]] = []
    for key, text in pairs:
        if isinstance(text, list):
            for k, t in enumerate(text):
                out.append((description_key(str(key), k),
                            _clean_text(t, f'{path}: {key}#{k}')))
        else:
            out.append((str(key), _clean_text(text, f'{path}: {key}')))
    return out


def import_map(path: str, out: str, class_level: bool = False,
               force: bool = False, model: Optional[str] = None) -> int:
    """Write a key -> text map as descriptions JSONL.

    ``class_level``: the keys are class names; they become ``class:<name>``
    (per-class descriptions for ``DescriptionDataset(per_class=True)``).
    """
    pairs = read_map(path)
    seen = set()
    now = time.time()
    recs = []
    for key, text in pairs:
        if class_level:
            key = class_key(key)
        check_key(key, f'{path}: ')
        if key in seen:
            raise ImportSourceError(f'{path}: key {key!r} appears twice')
        seen.add(key)
        recs.append(dict(key=key, text=text,
                         model=model or f'import:{os.path.basename(path)}',
                         prompt_id='imported', time=now))
    if not recs:
        raise ImportSourceError(f'{path}: no descriptions')
    return write_records(recs, out, force)
