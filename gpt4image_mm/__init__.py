"""gpt4image-mm: GPT4Image's cross-modal supervision for any MMPretrain model.

``import gpt4image_mm`` (or ``custom_imports=dict(imports=['gpt4image_mm'])``
in a config) registers the components into mmpretrain's registries and lets
torch's safe loading read MMEngine checkpoints (and enforces it).
"""
import warnings

from .safe_loading import allow_mmengine_checkpoints, enforce_safe_mmengine_loading
from .version import __version__

allow_mmengine_checkpoints()
enforce_safe_mmengine_loading()


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


_import_mmcv_lite_quietly()

from . import datasets, models  # noqa: E402,F401  (register components)

__all__ = ['__version__', 'datasets', 'models']
