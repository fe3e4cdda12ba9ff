"""Build the very dataset a training config sees, for the offline tools.

caption.py and embed.py take the same config as tools/train.py, so the keys
they write are the keys the :class:`DescriptionDataset` wrapper looks up.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from gpt4image_mm.utils.errors import InputError

_SPLITS = {'train': 'train_dataloader', 'val': 'val_dataloader',
           'test': 'test_dataloader'}
# Wrappers whose ``dataset`` field holds the dataset that names the samples.
_WRAPPERS = ('DescriptionDataset', 'RepeatDataset', 'ClassBalancedDataset',
             'KFoldDataset')


def dataset_cfg_of(cfg: Any, split: str = 'train') -> dict:
    """The innermost dataset config of ``split`` (wrappers removed)."""
    if split not in _SPLITS:
        raise InputError(f'unknown split {split!r}; one of {list(_SPLITS)}')
    loader = cfg.get(_SPLITS[split])
    if not loader or 'dataset' not in loader:
        raise InputError(f'the config has no {_SPLITS[split]}.dataset')
    ds = copy.deepcopy(loader['dataset'])
    while ds.get('type') in _WRAPPERS or (
            isinstance(ds.get('type'), type)
            and ds['type'].__name__ in _WRAPPERS):
        ds = ds['dataset']
    return ds


def build_split_dataset(config: str, split: str = 'train',
                        cfg_options: Optional[dict] = None) -> Any:
    """The raw (pipeline-free) dataset of ``split`` in an mmpretrain config."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    from gpt4image_mm.utils import register_all_modules
    from gpt4image_mm.utils.config import load_config
    register_all_modules()  # our components, also under gpt4image's light start

    cfg = load_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    ds_cfg = dataset_cfg_of(cfg, split)
    ds_cfg['pipeline'] = []
    ds_cfg['lazy_init'] = False
    return DATASETS.build(ds_cfg)
