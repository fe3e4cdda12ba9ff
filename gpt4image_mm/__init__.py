"""gpt4image-mm: GPT4Image's cross-modal supervision for any MMPretrain model.

``import gpt4image_mm`` (or ``custom_imports=dict(imports=['gpt4image_mm'])``
in a config) registers the components into mmpretrain's registries and lets
torch's safe loading read MMEngine checkpoints (and enforces it).

The ``gpt4image`` command (``gpt4image_cli.py``) alone imports this package
with :data:`DEFER_REGISTRATION` set: its text-only commands need none of
torch, mmengine or mmpretrain (seconds of start-up, ~900 MB), and the ones
that do call :func:`register_all_modules` first.

The package reports through :mod:`logging` (one logger per module, under
``gpt4image_mm``) and prints nothing unless the caller configures logging,
e.g. ``logging.basicConfig()``; the commands show the records on stderr.
Training reports through MMEngine's logger, as every OpenMMLab runner does.
"""
import logging
import os
import warnings

from .version import __version__

# A library stays silent until its user configures logging (without a
# handler, Python's last resort would print every warning on stderr).
logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Set to ``1`` (by ``gpt4image_cli`` only, during its import of this
#: package) to import the package without registering; never inherited.
DEFER_REGISTRATION = 'GPT4IMAGE_MM_DEFER_REGISTRATION'


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


def register_all_modules() -> None:
    """Register every component into mmpretrain's registries and enforce
    safe checkpoint loading (imports torch, mmengine, mmpretrain). What
    ``import gpt4image_mm`` does; a second call costs nothing."""
    from .safe_loading import allow_mmengine_checkpoints, enforce_safe_mmengine_loading
    allow_mmengine_checkpoints()
    enforce_safe_mmengine_loading()
    _import_mmcv_lite_quietly()
    # the hooks tools/train.py adds: a config MMEngine dumped into a work
    # dir names them, and tools/test.py on that config must find them
    from . import datasets, models, preflight, progress  # noqa: F401  (register components)  # noqa: F401


if os.environ.get(DEFER_REGISTRATION) != '1':
    register_all_modules()

__all__ = ['__version__', 'register_all_modules']
