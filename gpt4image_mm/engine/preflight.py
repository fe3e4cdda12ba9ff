"""Check what training (or testing) is about to do before it starts.

A config mistake the Runner finds surfaces after the model is built and the
first batch ran, below a config dump and a traceback. What the config, the
datasets and the store's manifest can tell is checked here first, before the
Runner exists: one line naming the fix, exit 2, in seconds. What needs the
built model (a checkpoint's tensor shapes) or the checkpoint being resumed
(the store it was trained against) is checked by two hooks the moment the
Runner loads the checkpoint, before any iteration.

``tools/train.py`` and ``tools/test.py`` call :func:`train_checks` and
:func:`test_checks` (``gpt4image_mm/engine/runner.py``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from gpt4image_mm.datasets.store import StoreError, read_manifest
from gpt4image_mm.utils.errors import ToolError

# Manifest fields that say which vectors a store holds (store.py); the path
# is not one of them: a copied or moved store is the same store.
_IDENTITY_FIELDS = ('encoder', 'encoder_revision', 'encoder_settings', 'dim',
                    'dtype', 'normalized', 'count', 'source_checksum',
                    'keys_sha256')
META_KEY = 'gpt4image_store'  # where checkpoints record their store
# Exceptions a dataset build raises on a bad config or missing files.
_DATASET_ERRORS = (ValueError, OSError, RuntimeError, KeyError, TypeError,
                   AssertionError)


class PreflightError(ToolError):
    """Training or testing would go wrong: one line naming the fix, exit 2."""


def train_checks(cfg: Any, allow_store_change: bool = False) -> None:
    """Check a train config before the Runner is built; add the hooks that
    check checkpoints as they load and keep progress visible."""
    import gpt4image_mm.engine  # noqa: F401  (registers the hooks it adds)
    desc_cfg = _description_cfg((cfg.get('train_dataloader') or {}).get(
        'dataset'))
    _check_alignment(cfg, desc_cfg)
    _check_checkpoint_file(cfg.get('load_from'), 'load_from')
    train_set = _check_dataset(cfg, 'train_dataloader')
    if cfg.get('val_cfg') is not None and cfg.get('val_dataloader'):
        _check_dataset(cfg, 'val_dataloader')
    store = next((d.store for d in _walk(train_set)
                  if getattr(d, 'store', None) is not None), None)
    _add_hooks(cfg, [
        dict(type='StoreIdentityHook',
             store=store_identity(store.path, store.manifest)
             if store is not None else None,
             allow_change=allow_store_change),
        dict(type='CheckpointShapeHook', evaluated_only=False),
        dict(type='TrainProgressHook')])


def test_checks(cfg: Any) -> None:
    """Check a test config before the Runner is built; add the hook that
    refuses a checkpoint whose evaluated tensors do not fit the model."""
    _check_checkpoint_file(cfg.get('load_from'), 'the checkpoint')
    _check_dataset(cfg, 'test_dataloader')
    _add_hooks(cfg, [dict(type='CheckpointShapeHook', evaluated_only=True)])


def _add_hooks(cfg: Any, hooks: List[dict]) -> None:
    """Add this run's check hooks, replacing any of the same type: a config
    MMEngine dumped into a work dir (what users resume or test from) holds
    the previous run's, whose recorded store may no longer be this one."""
    ours = {h['type'] for h in hooks}
    kept = [h for h in cfg.get('custom_hooks') or []
            if _type_name(h) not in ours]
    cfg.custom_hooks = kept + hooks


# -- the config, the datasets and the store's manifest -----------------------

def _type_name(node: Any) -> str:
    kind = node.get('type') if isinstance(node, dict) else None
    return kind if isinstance(kind, str) else getattr(kind, '__name__', '')


def _description_cfg(ds_cfg: Any) -> Optional[dict]:
    """The ``DescriptionDataset`` config inside a dataset config (through
    wrappers such as ``RepeatDataset``), or None."""
    while isinstance(ds_cfg, dict):
        if _type_name(ds_cfg).split('.')[-1] == 'DescriptionDataset':
            return ds_cfg
        ds_cfg = ds_cfg.get('dataset')
    return None


def _check_alignment(cfg: Any, desc_cfg: Optional[dict]) -> None:
    """The model aligns to text the train set provides, at the store's
    width (read from the manifest: no store row is touched)."""
    neck = (cfg.get('model') or {}).get('align_neck')
    if not neck:
        return
    if desc_cfg is None:
        raise PreflightError(
            'the model has an align_neck but train_dataloader.dataset is not '
            'a DescriptionDataset, so no sample carries a text embedding -- '
            "wrap it: dataset=dict(type='DescriptionDataset', dataset=..., "
            "store='path/to/store')")
    if not desc_cfg.get('store'):
        return  # raw descriptions: the teacher's width is the model's own
    try:
        manifest = read_manifest(desc_cfg['store'])
    except StoreError as e:
        raise PreflightError(f'train_dataloader.dataset.store: {e}') from None
    width = neck.get('out_channels')
    if width is not None and int(width) != int(manifest['dim']):
        raise PreflightError(
            f'{desc_cfg["store"]}: the store holds {manifest["dim"]}-d '
            f'vectors (encoder {manifest["encoder"]!r}) but '
            f'model.align_neck.out_channels is {width} -- set '
            f'align_neck=dict(type=\'AlignmentNeck\', out_channels='
            f'{manifest["dim"]}) or use a store of a {width}-d encoder')


def _check_dataset(cfg: Any, field: str) -> Any:
    """Build ``field``'s dataset as the Runner will (no sample is loaded)
    and check it has samples whose labels the head can hold."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    loader = cfg.get(field)
    if not loader or not loader.get('dataset'):
        return None
    init_default_scope(cfg.get('default_scope') or 'mmpretrain')
    ds_cfg = loader['dataset']
    try:
        dataset = DATASETS.build(ds_cfg)
    except StoreError as e:  # the wrapper's own messages name the fix
        raise PreflightError(f'{field}.dataset: {_first_line(e)}') from None
    except _DATASET_ERRORS as e:
        raise PreflightError(
            f'{field}.dataset ({_type_name(ds_cfg)}): {_first_line(e)} -- '
            f'fix {field}.dataset in the config ({_where(ds_cfg)})') from None
    if not len(dataset):
        raise PreflightError(
            f'{field}.dataset ({_type_name(ds_cfg)}) has no samples -- '
            f'check its data_root/ann_file ({_where(ds_cfg)})')
    _check_labels(cfg, dataset, field)
    _check_image_files(dataset, field)
    return dataset


def _check_checkpoint_file(path: Any, what: str) -> None:
    """A local checkpoint path must name a file (a URL or another scheme is
    MMEngine's to fetch)."""
    if not isinstance(path, str) or '://' in path or os.path.isfile(path):
        return
    raise PreflightError(f'{what} {path}: no such checkpoint file -- check '
                         'the path')


def _image_paths(dataset: Any) -> Iterator[str]:
    """The image file of every sample of a file dataset (none for array
    datasets such as MNIST): read from its file list, nothing decoded."""
    leaves = [d for d in _walk(dataset)
              if getattr(d, 'dataset', None) is None
              and not getattr(d, 'datasets', None)]
    for leaf in leaves:
        if not hasattr(leaf, 'get_data_info') or not len(leaf):
            continue
        if not isinstance(leaf.get_data_info(0).get('img_path'), str):
            continue
        infos = getattr(leaf, 'data_list', None) or (
            leaf.get_data_info(i) for i in range(len(leaf)))
        for info in infos:
            path = info.get('img_path')
            if isinstance(path, str) and '://' not in path:
                yield path


def _check_image_files(dataset: Any, field: str) -> None:
    """An empty (0-byte) or missing image file is named before training,
    not found by the decoder mid-epoch: one ``stat`` per file, the cost of
    listing them (an undecodable image that is not empty is named by
    ``DescriptionDataset`` when it is loaded)."""
    bad = []
    for path in _image_paths(dataset):
        try:
            empty = os.stat(path).st_size == 0
        except OSError as e:
            bad.append(f'{path} ({e.strerror.lower()})')
            continue
        if empty:
            bad.append(f'{path} (0 bytes)')
    if bad:
        more = f' and {len(bad) - 1} more' if len(bad) > 1 else ''
        raise PreflightError(
            f'{field}.dataset: {len(bad)} image file(s) cannot be loaded: '
            f'{bad[0]}{more} -- replace or remove them (bad samples are '
            'not skipped)')


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _where(ds_cfg: Any) -> str:
    """The data location fields of the innermost dataset config."""
    while isinstance(ds_cfg, dict) and isinstance(ds_cfg.get('dataset'),
                                                  dict):
        ds_cfg = ds_cfg['dataset']
    fields = [f'{k}={ds_cfg[k]!r}' for k in ('data_root', 'data_prefix',
                                             'ann_file')
              if isinstance(ds_cfg, dict) and ds_cfg.get(k)]
    return ', '.join(fields) or 'no data_root set'


def _walk(dataset: Any) -> Iterator[Any]:
    """A dataset and every dataset it wraps."""
    while dataset is not None:
        yield dataset
        for inner in getattr(dataset, 'datasets', None) or []:
            yield from _walk(inner)
        dataset = getattr(dataset, 'dataset', None)


def _check_labels(cfg: Any, dataset: Any, field: str) -> None:
    """``model.head.num_classes`` must be positive and hold every label."""
    head = (cfg.get('model') or {}).get('head') or {}
    num = head.get('num_classes')
    if num is None:
        return
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    named = f' ({len(classes)} classes)' if classes else ''
    if int(num) < 1:
        raise PreflightError(
            f'model.head.num_classes is {num} but {field}.dataset'
            f'{named} has {len(dataset)} samples -- set model.head.'
            f'num_classes to the number of classes'
            + (f' ({len(classes)})' if classes else ''))
    labels = next((d.get_gt_labels() for d in _walk(dataset)
                   if hasattr(d, 'get_gt_labels')), None)
    if labels is None or not len(labels):
        return
    top = int(np.max(labels))
    if top >= int(num):
        raise PreflightError(
            f'{field}.dataset{named} has labels up to {top} but model.head.'
            f'num_classes is {num} -- set model.head.num_classes='
            f'{len(classes) if classes else top + 1}')


# -- the store a checkpoint was trained against ------------------------------

def store_identity(path: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """What a checkpoint records of its store: the manifest's identifying
    fields, plus the path (to name it) and its creation time (compared only
    when the manifest has no checksum of its descriptions)."""
    ident = {k: manifest.get(k) for k in _IDENTITY_FIELDS}
    ident.update(path=path, created=manifest.get('created'))
    return ident


def identity_changes(old: Dict[str, Any],
                     new: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """The identifying fields in which two store identities differ."""
    fields = list(_IDENTITY_FIELDS)
    if old.get('source_checksum') is None or new.get('source_checksum') is None:
        fields.append('created')
    return [(k, old.get(k), new.get(k)) for k in fields
            if old.get(k) != new.get(k)]


def checkpoint_name(runner: Any) -> str:
    return str(runner.cfg.get('load_from') or
               f'the latest checkpoint in {runner.work_dir}')
