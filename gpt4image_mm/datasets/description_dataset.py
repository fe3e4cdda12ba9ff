"""The description-fetching dataset wrapper."""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.logging import MMLogger
from mmpretrain.registry import DATASETS

from gpt4image_mm.datasets.store import EmbeddingStore, StoreError
from gpt4image_mm.utils.descriptions import read_descriptions, read_source
from gpt4image_mm.utils.errors import InputError, ToolError
from gpt4image_mm.utils.keys import (
    CLASS_PREFIX,
    base_key,
    class_key,
    class_names,
    dataset_keys,
    dataset_source,
    sample_key,
)

_POLICIES = ('error', 'drop', 'zero')


class SampleLoadError(ToolError):
    """A sample of the wrapped dataset failed to load (key and file named):
    the user's data to fix, so one line and exit 2, not a traceback."""

    def __str__(self) -> str:
        # Re-raised from a DataLoader worker, the message is that worker's
        # whole traceback; its last line is ours: the sample and its file.
        text = super().__str__()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1:
            last = lines[-1]
            return last.split(f'{type(self).__name__}: ', 1)[-1]
        return text


def _group_rows(row_keys: Sequence[str], wanted: Sequence[str]):
    """CSR of the rows of every wanted base key: (group per sample, indptr,
    rows). Resolved once, so workers hold only integer arrays."""
    if not any('#' in key for key in row_keys):
        row_of = {key: row for row, key in enumerate(row_keys)}
        if len(row_of) == len(row_keys):
            # One row per key (every per-image store): group g is row g, so
            # a single dict lookup per sample -- ImageNet-sized stores join
            # in seconds (benchmarks/bench_store_scale.py).
            groups = np.fromiter((row_of.get(key, -1) for key in wanted),
                                 np.int64, len(wanted))
            return (groups, np.arange(len(row_keys) + 1, dtype=np.int64),
                    np.arange(len(row_keys), dtype=np.int64))
    rows_of: Dict[str, List[int]] = defaultdict(list)
    for row, key in enumerate(row_keys):
        rows_of[base_key(key) if '#' in key else key].append(row)
    group_of: Dict[str, int] = {}
    indptr, rows = [0], []
    groups = np.full(len(wanted), -1, dtype=np.int64)
    for i, key in enumerate(wanted):
        g = group_of.get(key)
        if g is None and key in rows_of:
            g = group_of[key] = len(indptr) - 1
            rows.extend(rows_of[key])
            indptr.append(len(rows))
        if g is not None:
            groups[i] = g
    return groups, np.asarray(indptr, np.int64), np.asarray(rows, np.int64)


@DATASETS.register_module()
class DescriptionDataset(torch.utils.data.Dataset):
    """Wrap any mmpretrain dataset and attach each sample's description.

    Every sample is joined by its stable key (:mod:`gpt4image_mm.utils.keys`) to an
    embedding store; its vector becomes ``DataSample.text_embedding``. With
    ``descriptions=`` (a JSONL file) instead of ``store=`` the raw text is
    attached as ``DataSample.text`` for a model with an online teacher.

    Args:
        dataset (dict | Dataset): The wrapped dataset or its config.
        store (str, optional): Embedding store directory (see
            :mod:`.store`). Exactly one of ``store`` and ``descriptions``.
            Defaults to None.
        descriptions (str, optional): Descriptions JSONL, for online
            encoding by a teacher. Defaults to None.
        per_class (bool): Join by the sample's class (``class:<name>`` keys)
            instead of the sample key: class-level descriptions. Defaults to
            False.
        on_missing (str): Samples without a description: ``'error'`` (names
            how many and which), ``'drop'`` them, or ``'zero'``: keep them
            with ``align_weight`` 0 (classification loss only). Defaults to
            ``'error'``.
        verify_store (bool): Scan all store rows for NaN/zero vectors at
            start-up (rows are always checked when read). Defaults to False.
        encoder (str, optional): If set, the store's manifest must name this
            encoder (a store embedded by another text encoder is refused).
            Defaults to None.
        check_source (bool): Refuse a store whose manifest says its
            descriptions were made from another image root / split than the
            wrapped dataset's (same keys, other images). Set False when the
            data really moved (a copy on another machine at another path).
            Defaults to True.

    A sample that fails to load (a corrupt, truncated or missing image)
    raises :class:`SampleLoadError` naming its key and file: it is never
    skipped silently, since that would train on a different dataset.

    Several rows per key (``<key>#<k>``, e.g. K descriptions per class) are
    sampled uniformly each time the sample is loaded, i.e. once per epoch.
    """

    def __init__(self, dataset: Union[dict, Any], store: Optional[str] = None,
                 descriptions: Optional[str] = None, per_class: bool = False,
                 on_missing: str = 'error', verify_store: bool = False,
                 encoder: Optional[str] = None, check_source: bool = True):
        if (store is None) == (descriptions is None):
            raise InputError('DescriptionDataset needs exactly one of store= '
                             'or descriptions=')
        if on_missing not in _POLICIES:
            raise InputError(f'on_missing must be one of {_POLICIES}, got '
                             f'{on_missing!r}')
        self.dataset = DATASETS.build(dataset) if isinstance(
            dataset, dict) else dataset
        self.on_missing = on_missing
        self.per_class = per_class
        self.store: Optional[EmbeddingStore] = None
        self.texts: Optional[List[str]] = None
        if store is not None:
            self.store = EmbeddingStore(store, expected_encoder=encoder)
            if verify_store:
                self.store.verify()
            if check_source:
                self._check_source(
                    self.store.manifest.get('source_datasets') or [],
                    self.store.path)
            row_keys = self.store.keys()
            source = self.store.path
        else:
            if check_source:
                self._check_source([read_source(descriptions)], descriptions)
            recs = read_descriptions(descriptions)
            row_keys = list(recs)
            self.texts = [r['text'] for r in recs.values()]
            source = descriptions
        wanted = self._wanted_keys()
        self._groups, self._indptr, self._rows = _group_rows(row_keys, wanted)
        self._indices = self._resolve_missing(wanted, source, row_keys)
        self._source = source

    def _check_source(self, recorded: List[Optional[dict]],
                      where: str) -> None:
        """The descriptions must be of this dataset, not a look-alike:
        compare the datasets they were made from (root, split) with ours."""
        recorded = [r for r in recorded if r]
        self.dataset.full_init()
        if self.per_class or not recorded or not len(self.dataset):
            return
        ours = dataset_source(self.dataset)
        for src in recorded:
            if all(src.get(k) is None or ours.get(k) is None
                   or src.get(k) == ours.get(k) for k in ('root', 'split')):
                return
        raise StoreError(
            f'{where}: made from descriptions of {recorded}, but '
            f'this dataset is {ours} (same keys, other images?); use the '
            'store of this dataset, or set check_source=False in the '
            'DescriptionDataset config if the data only moved')

    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self.dataset.metainfo)

    def full_init(self) -> None:
        """Already done in ``__init__`` (the key join needs the samples)."""

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(self._inner_index(idx))

    def _wanted_keys(self) -> List[str]:
        self.dataset.full_init()
        if not self.per_class:
            return dataset_keys(self.dataset)
        names = class_names(self.dataset)
        labels = self.dataset.get_gt_labels()
        return [class_key(names[int(lb)]) for lb in labels]

    def _resolve_missing(self, wanted: List[str], source: str,
                         row_keys: Sequence[str]) -> Optional[np.ndarray]:
        missing = np.flatnonzero(self._groups < 0)
        if not len(missing):
            return None
        examples = ', '.join(repr(wanted[i]) for i in missing[:5])
        msg = (f'{len(missing)} of {len(wanted)} samples have no description '
               f'in {source} (e.g. {examples})')
        if (len(missing) == len(wanted) and len(row_keys)
                and not self.per_class
                and str(row_keys[0]).startswith(CLASS_PREFIX)):
            raise StoreError(
                f'{msg}; its keys look like {row_keys[0]!r}: class-level '
                'descriptions (caption.py --per-class). Set per_class=True '
                "in the DescriptionDataset config (and positives='label' in "
                'the alignment loss)')
        if len(missing) == len(wanted) and len(row_keys):
            msg += (f'; no key matches: its keys look like {row_keys[0]!r} -- '
                    'made from another dataset config or image root?')
        if self.on_missing == 'error':
            raise StoreError(msg + "; caption them, or set on_missing='drop' "
                             "or 'zero' in the DescriptionDataset config")
        MMLogger.get_current_instance().warning(
            f'{msg}; on_missing={self.on_missing!r}')
        if self.on_missing == 'drop':
            return np.flatnonzero(self._groups >= 0)
        return None

    def _inner_index(self, idx: int) -> int:
        return int(self._indices[idx]) if self._indices is not None else idx

    def __len__(self) -> int:
        if self._indices is not None:
            return len(self._indices)
        return len(self._groups)

    def _pick_row(self, group: int) -> int:
        start, end = self._indptr[group], self._indptr[group + 1]
        if end - start == 1:
            return int(self._rows[start])
        return int(self._rows[np.random.randint(start, end)])

    def _load_error(self, i: int, err: Exception) -> str:
        """One line naming the sample that failed, its file and the cause."""
        try:
            key = sample_key(self.dataset, i)
            path = self.dataset.get_data_info(i).get('img_path')
        except Exception:  # noqa: BLE001  (naming must not mask the error)
            key, path = f'index {i}', None
        where = f' ({path})' if path else ''
        cause = (str(err).strip().splitlines() or [''])[0]
        return (f'sample {key!r}{where} of {type(self.dataset).__name__} '
                f'failed to load: {type(err).__name__}: {cause} -- fix or '
                'remove the file (bad samples are not skipped)')

    def __getitem__(self, idx: int) -> Any:
        i = self._inner_index(idx)
        try:
            results = self.dataset[i]
        except Exception as err:
            raise SampleLoadError(self._load_error(i, err)) from err
        sample = results['data_samples']
        group = self._groups[i]
        if self.on_missing == 'zero':
            sample.set_field(torch.tensor([float(group >= 0)]), 'align_weight')
        if self.texts is not None:
            sample.set_field(self.texts[self._pick_row(group)]
                             if group >= 0 else '', 'text', field_type='metainfo')
            return results
        if group < 0:
            vec = torch.zeros(self.store.dim)
        else:
            vec = torch.from_numpy(self._store_row(self._pick_row(group)))
        sample.set_field(vec, 'text_embedding')
        return results

    def _store_row(self, row: int) -> np.ndarray:
        """A store row; a bad one is named by its key (read only then)."""
        try:
            return self.store.row(row)
        except StoreError:
            key = self.store.keys()[row]
            self.store.row(row, key=key)  # raises, naming the key
            raise

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({len(self)} samples, source='
                f'{self._source!r}, per_class={self.per_class}, '
                f'on_missing={self.on_missing!r}, dataset='
                f'{type(self.dataset).__name__})')
