"""gpt4image-mm: GPT4Image's cross-modal supervision for any MMPretrain model.

``import gpt4image_mm`` (or ``custom_imports=dict(imports=['gpt4image_mm'])``
in a config) registers the components into mmpretrain's registries and lets
torch's safe loading read MMEngine checkpoints (and enforces it).
"""
from .safe_loading import allow_mmengine_checkpoints, enforce_safe_mmengine_loading
from .version import __version__

allow_mmengine_checkpoints()
enforce_safe_mmengine_loading()

from . import datasets, models  # noqa: E402,F401  (register components)

__all__ = ['__version__', 'datasets', 'models']
