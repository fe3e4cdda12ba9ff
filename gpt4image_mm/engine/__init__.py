"""The MMEngine side of the plugin: pre-flight checks, hooks, checkpoints,
safe loading and the train/test entry points (:mod:).

Importing it registers the hooks (a config MMEngine dumped into a work dir
names them, and testing that config must find them) and makes torch's safe
loading read, and MMEngine always use, ``weights_only=True``.
"""
import warnings

from gpt4image_mm.engine.safe_loading import (
    allow_mmengine_checkpoints,
    enforce_safe_mmengine_loading,
)


def _import_mmcv_lite_quietly() -> None:
    """mmcv-lite has no compiled ops, and mmcv warns on import that
    ``MultiScaleDeformableAttention`` (a detection op mmpretrain never uses)
    is missing: noise no user of this package can act on. Only that one
    message, only during this import."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            'ignore', message='Fail to import ``MultiScaleDeformableAttention',
            category=UserWarning)
        try:
            import mmcv.cnn.bricks.transformer  # noqa: F401
        except ImportError:
            pass  # no mmcv at all: mmpretrain's import says so below


allow_mmengine_checkpoints()
enforce_safe_mmengine_loading()
_import_mmcv_lite_quietly()

from gpt4image_mm import datasets, models  # noqa: E402,F401  (registers them)
from gpt4image_mm.engine.hooks import (  # noqa: E402  (after mmcv's import)
    CheckpointShapeHook,
    StoreIdentityHook,
    TrainProgressHook,
)

__all__ = ['CheckpointShapeHook', 'StoreIdentityHook', 'TrainProgressHook']
