"""gpt4image-mm: GPT4Image's cross-modal supervision for any MMPretrain model.

``import gpt4image_mm`` (or ``custom_imports=dict(imports=['gpt4image_mm'])``
in a config) registers the components into mmpretrain's registries and lets
torch's safe loading read MMEngine checkpoints.
"""
from .safe_loading import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

from . import datasets, models  # noqa: E402,F401  (register components)

__all__ = ['__version__', 'datasets', 'models']
