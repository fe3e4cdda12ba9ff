"""A schedule for a run on fewer images: one that ends where the full
run's ends.

An epoch-based recipe on a K-shot subset takes as many epochs as on the
full set, hence far fewer optimizer steps: its learning rate reaches the
end of its cosine while the model is still on the way up, and a data-size
curve then compares arms before they converged. The rule here (the same
for ``tools/experiment.py --shots`` and the demo's ``--num-train``):

    r = round(iterations per epoch of the full set /
              iterations per epoch of the subset), 1 <= r <= MAX_STRETCH

and every length counted in epochs is multiplied by ``r``: ``max_epochs``,
the validation and checkpoint intervals, and the ``begin`` / ``end`` /
``T_max`` of every epoch-based parameter scheduler (warm-up included).
The subset run then makes (up to rounding) the same number of optimizer
steps as the full run, on the same lr curve, with the same number of
validations. ``MAX_STRETCH`` bounds the cost (a 1-shot run of a
1,000-class set would otherwise train as long as the full one); where the
cap binds, the report's convergence check tells whether it was enough.
Iteration-based recipes are left alone: their steps do not depend on the
data size.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Dict, List, Tuple

logger = logging.getLogger(__name__)
MAX_STRETCH = 10  # at most 10x the full run's epochs
_UNBOUNDED = 1e8  # mmengine's "until the end" (INF) for scheduler ends


def iterations_per_epoch(images: int, batch_size: int,
                         drop_last: bool = False) -> int:
    """Optimizer steps in one epoch of ``images`` at ``batch_size``."""
    steps = images // batch_size if drop_last else math.ceil(
        images / batch_size)
    return max(1, steps)


def stretch_factor(full_images: int, subset_images: int, batch_size: int,
                   drop_last: bool = False, cap: int = MAX_STRETCH) -> int:
    """``r``: how many times more epochs the subset run needs to make the
    full run's optimizer steps (module docstring), at most ``cap``."""
    ratio = iterations_per_epoch(full_images, batch_size, drop_last) / \
        iterations_per_epoch(subset_images, batch_size, drop_last)
    return int(max(1, min(cap, round(ratio))))


def config_stretch_factor(cfg: Any, full_images: int,
                          subset_images: int) -> int:
    """``r`` for a config's own train loader (1 for iteration-based
    recipes)."""
    if not _epoch_based(cfg):
        return 1
    loader = cfg.train_dataloader
    return stretch_factor(full_images, subset_images,
                          int(loader.get('batch_size', 1)),
                          bool(loader.get('drop_last', False)))


def _epoch_based(cfg: Any) -> bool:
    train_cfg = cfg.get('train_cfg') or {}
    return bool(train_cfg.get('by_epoch', True)) and \
        train_cfg.get('max_epochs') is not None


def stretch_options(cfg: Any, factor: int) -> Dict[str, Any]:
    """The ``--cfg-options`` (dotted keys) that multiply every epoch
    length of ``cfg`` by ``factor``; empty for 1 or an iteration-based
    recipe."""
    if factor <= 1 or not _epoch_based(cfg):
        return {}
    out: Dict[str, Any] = {
        'train_cfg.max_epochs': int(cfg.train_cfg.max_epochs) * factor}
    if cfg.train_cfg.get('val_interval'):
        out['train_cfg.val_interval'] = int(
            cfg.train_cfg.val_interval) * factor
    ckpt = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    if ckpt.get('by_epoch', True) and ckpt.get('interval', -1) > 0:
        out['default_hooks.checkpoint.interval'] = int(
            ckpt['interval']) * factor
    scheds = cfg.get('param_scheduler')
    listed = isinstance(scheds, (list, tuple))
    for i, sched in enumerate(_scheduler_list(scheds)):
        if not sched.get('by_epoch', True):
            continue  # counted in iterations already
        prefix = f'param_scheduler.{i}' if listed else 'param_scheduler'
        for key in ('begin', 'end', 'T_max'):
            value = sched.get(key)
            if isinstance(value, (int, float)) and 0 < value < _UNBOUNDED:
                out[f'{prefix}.{key}'] = int(value) * factor
    return out


def _scheduler_list(scheds: Any) -> List[Any]:
    if not scheds:
        return []
    return list(scheds) if isinstance(scheds, (list, tuple)) else [scheds]


def fit_schedule_to_subset(cfg: Any, full_images: int,
                           subset_images: int) -> int:
    """Stretch ``cfg`` (in place) for a run on ``subset_images`` of the
    full set's ``full_images``; returns the factor used."""
    factor = config_stretch_factor(cfg, full_images, subset_images)
    options = stretch_options(cfg, factor)
    if options:
        cfg.merge_from_dict(options)
        logger.debug('subset of %d / %d images: schedule x%d (%s)',
                     subset_images, full_images, factor, options)
    return factor


def as_cfg_options(options: Dict[str, Any]) -> List[str]:
    """``{key: value}`` as ``key=value`` strings."""
    return [f'{k}={v}' for k, v in options.items()]


@functools.lru_cache(maxsize=8)
def train_images(config: str, options: Tuple[str, ...] = ()) -> int:
    """Images in a config's training set (with the experiment's options:
    ``train_dataloader.dataset.indices`` counts): the full run's size."""
    from gpt4image_mm.datasets.from_config import build_split_dataset
    from gpt4image_mm.experiment.plan import parse_options
    return len(build_split_dataset(config, 'train',
                                   parse_options(list(options))))
