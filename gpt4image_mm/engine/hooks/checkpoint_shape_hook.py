"""A checkpoint whose tensors do not fit the model is an error, not a warning
(MMEngine loads with ``strict=False``)."""
from __future__ import annotations

import re
from typing import Any, Tuple

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from gpt4image_mm.engine.preflight import PreflightError, checkpoint_name


@HOOKS.register_module()
class CheckpointShapeHook(Hook):
    """Refuse a checkpoint whose tensors do not fit the model.

    MMEngine loads with ``strict=False`` and only warns on a size mismatch,
    so a checkpoint of a 10-class head tested with a 7-class config reports
    a random head's accuracy. ``evaluated_only`` (``tools/test.py``) ignores
    the training-only parts (alignment neck, loss, teacher), which testing
    never runs.
    """

    priority = 'LOW'  # after hooks that rewrite the loaded checkpoint (EMA)

    def __init__(self, evaluated_only: bool = False):
        self.evaluated_only = evaluated_only

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        from gpt4image_mm.engine.checkpoint import TRAINING_ONLY_PREFIXES
        state = checkpoint.get('state_dict', checkpoint)
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        own = model.state_dict()
        bad = []
        for key, value in state.items():
            key = re.sub(r'^module\.', '', key)  # as MMEngine's loader
            if self.evaluated_only and key.startswith(TRAINING_ONLY_PREFIXES):
                continue
            if (key in own and hasattr(value, 'shape')
                    and tuple(value.shape) != tuple(own[key].shape)):
                bad.append((key, tuple(value.shape), tuple(own[key].shape)))
        if not bad:
            return
        key, theirs, ours = bad[0]
        more = f' (and {len(bad) - 1} more tensors)' if len(bad) > 1 else ''
        raise PreflightError(
            f'{checkpoint_name(runner)}: {key} is {theirs} in the checkpoint '
            f'but {ours} in the model{more} -- '
            f'{_shape_fix(model, key, theirs, ours)}')


def _shape_fix(model: Any, key: str, theirs: Tuple[int, ...],
               ours: Tuple[int, ...]) -> str:
    num_classes = getattr(getattr(model, 'head', None), 'num_classes', None)
    if key.startswith('head.') and theirs and ours and ours[0] == num_classes:
        return (f'the checkpoint was trained for {theirs[0]} classes: set '
                f'model.head.num_classes={theirs[0]}, or load only the '
                "backbone (model.backbone.init_cfg=dict(type='Pretrained', "
                "checkpoint=..., prefix='backbone.'))")
    return 'use the config the checkpoint was trained with'
