"""The join key of a sample: the one home for how samples are named.

caption.py, embed.py and :class:`DescriptionDataset` all call these functions,
so descriptions written on one machine join the samples trained on another.

* file datasets (ImageNet, CustomDataset, CUB, ...): the image path relative to
  the dataset's image prefix, with ``/`` separators -- for ImageNet that is
  ``n01440764/n01440764_10026.JPEG``, the same relative path torchvision's
  ``ImageFolder`` and ``caption.py --images DIR`` produce;
* array datasets (MNIST, Fashion-MNIST, CIFAR): ``<split>/<index>``;
* class-level descriptions: ``class:<class name>``;
* the k-th of several descriptions of one base key: ``<base>#<k>``.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from gpt4image_mm.utils.errors import InputError

CLASS_PREFIX = 'class:'
_MULTI = re.compile(r'^(.*)#(\d+)$')


def class_key(class_name: str) -> str:
    """Key of the descriptions of a whole class (class-level mode)."""
    return f'{CLASS_PREFIX}{class_name}'


def description_key(base: str, k: int) -> str:
    """Key of the k-th description of ``base`` (several per image/class)."""
    return f'{base}#{k}'


def base_key(key: str) -> str:
    """Strip a ``#<k>`` suffix: the sample or class a description belongs to."""
    m = _MULTI.match(key)
    return m.group(1) if m else key


def check_key(key: str, where: str = '') -> str:
    """Reject keys that would corrupt the line-based key files."""
    if not isinstance(key, str) or not key or '\n' in key or '\r' in key:
        raise InputError(f'{where}invalid sample key {key!r}: keys are '
                         'non-empty strings without line breaks')
    return key


def file_key(img_path: str, root: Optional[str]) -> str:
    """Key of an image file: its path relative to ``root``, ``/``-separated."""
    return _file_keyer(root)(img_path)


def _file_keyer(root: Optional[str]) -> Callable[[str], str]:
    """:func:`file_key` for one ``root``, made once per dataset.

    A path that plainly lies under the root (the normalised root, a separator,
    then an already normalised rest) is keyed by string slicing: the same
    result as ``os.path.relpath`` at a fraction of its cost, which dominates
    the start-up of ImageNet-sized datasets. Anything else takes ``relpath``.
    """
    if not root:
        return lambda path: os.path.normpath(path).replace(os.sep, '/')
    prefix = os.path.normpath(root)
    if not prefix.endswith(os.sep):
        prefix += os.sep
    cut = len(prefix)

    def key(path: str) -> str:
        if path.startswith(prefix):
            rel = path[cut:]
            if rel and rel[0] != os.sep and _is_normal(rel):
                return rel.replace(os.sep, '/')
        return os.path.relpath(path, root).replace(os.sep, '/')
    return key


def _is_normal(rel: str) -> bool:
    """``os.path.normpath(rel) == rel`` for a relative path, with a cheap
    test first (no ``//``, no component starting with ``.``, no trailing
    separator) that settles the common case."""
    sep = os.sep
    if (rel[0] != '.' and sep + '.' not in rel and sep + sep not in rel
            and rel[-1] != sep):
        return True
    return os.path.normpath(rel) == rel


def _image_root(dataset: Any) -> Optional[str]:
    prefix = getattr(dataset, 'data_prefix', None) or {}
    root = prefix.get('img_path') if isinstance(prefix, dict) else None
    return root or getattr(dataset, 'data_root', None) or None


def _split_name(dataset: Any) -> str:
    split = getattr(dataset, 'split', None)
    if split:
        return str(split)
    return 'test' if getattr(dataset, 'test_mode', False) else 'train'


def dataset_source(dataset: Any) -> Dict[str, Optional[str]]:
    """What a dataset's keys are relative to: the real path of its image root
    (file datasets) or data root (array datasets), and its split. Keys alone
    cannot tell two image folders of the same layout apart; this can."""
    root = _image_root(dataset)
    first = dataset.get_data_info(0) if len(dataset) else {}
    return {'root': os.path.realpath(root) if root else None,
            'split': None if 'img_path' in first else _split_name(dataset)}


def sample_key(dataset: Any, index: int) -> str:
    """The stable key of sample ``index`` of an (unwrapped) mmpretrain dataset."""
    info = dataset.get_data_info(index)
    if 'img_path' in info:
        return file_key(info['img_path'], _image_root(dataset))
    return f'{_split_name(dataset)}/{index}'


def dataset_keys(dataset: Any) -> List[str]:
    """Keys of every sample of an mmpretrain dataset, in index order."""
    dataset.full_init()
    indices = getattr(dataset, '_indices', None)
    if indices is not None and not isinstance(indices, int):
        first = dataset.get_data_info(0) if len(dataset) else {}
        if 'img_path' not in first:
            raise InputError(
                f'{type(dataset).__name__}: array datasets are keyed by '
                'position, so `indices` must be an int (the first N samples), '
                f'not a list; got {type(indices).__name__}')
    keyer, split = _file_keyer(_image_root(dataset)), _split_name(dataset)
    keys = []
    for i, info in enumerate(_data_infos(dataset)):  # as sample_key
        keys.append(keyer(info['img_path']) if 'img_path' in info
                    else f'{split}/{i}')
    return keys


def _data_infos(dataset: Any) -> Iterator[dict]:
    """``dataset.get_data_info(i)`` for every ``i``, in order.

    For MMEngine's ``BaseDataset`` (``get_data_info`` not overridden) the
    records are read in one pass over its serialised buffer: the per-call
    overhead of ``get_data_info`` is most of the key join's time on
    ImageNet-sized datasets.
    """
    from mmengine.dataset import BaseDataset
    if (isinstance(dataset, BaseDataset)
            and type(dataset).get_data_info is BaseDataset.get_data_info):
        if not dataset.serialize_data:
            yield from dataset.data_list
            return
        data = memoryview(dataset.data_bytes)
        start = 0
        for end in dataset.data_address.tolist():
            yield pickle.loads(data[start:end])
            start = end
        return
    for i in range(len(dataset)):
        yield dataset.get_data_info(i)


def class_names(dataset: Any) -> Sequence[str]:
    """The class names of a dataset (``CLASSES`` / ``metainfo['classes']``)."""
    names = (getattr(dataset, 'metainfo', {}) or {}).get('classes')
    if not names:
        raise InputError(f'{type(dataset).__name__} declares no class names; '
                         'set metainfo=dict(classes=[...]) in its config')
    return list(names)


def read_key_file(path: str) -> frozenset:
    """The keys of a key file, one per line (``analyze``'s flagged keys,
    ``caption.py --redo-keys``); blank lines are skipped. A FIFO or device
    is refused, never waited on (:func:`~gpt4image_mm.utils.files.open_regular`)."""
    from gpt4image_mm.utils.files import open_regular
    with open_regular(path) as f:
        try:
            keys = frozenset(ln.rstrip('\r\n') for ln in f if ln.strip())
        except UnicodeDecodeError as e:
            raise InputError(f'{path}: not UTF-8 text ({e.reason}) -- a key '
                             'file holds one key a line, as analyze writes '
                             'it') from None
    if not keys:
        raise InputError(f'{path}: no keys in the file')
    return keys


def write_key_file(path: str, keys: Iterator[str]) -> int:
    """Write keys one per line, atomically; returns how many."""
    from gpt4image_mm.utils.files import atomic_path
    n = 0
    with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        for key in keys:
            f.write(check_key(key, f'{path}: ') + '\n')
            n += 1
    return n
