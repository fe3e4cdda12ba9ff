"""gpt4image-mm: GPT4Image's cross-modal supervision for any MMPretrain model.

Importing the package loads nothing but its version: the command-line tools
(:mod:`gpt4image_mm.cli`) and the torch-free helpers (:mod:`gpt4image_mm.utils`)
start without torch, MMEngine or mmpretrain. The MMEngine components register
into mmpretrain's registries when their modules are imported:

* a config does it with
  ``custom_imports = dict(imports=['gpt4image_mm.engine'])``, as
  ``gpt4image_mm::_base_/gpt4image.py`` does, or by naming the scope
  (``gpt4image_mm::`` bases, ``_scope_='gpt4image_mm'``), which makes MMEngine
  import :mod:`gpt4image_mm.registry` and the plugin by itself;
* a script calls :func:`gpt4image_mm.utils.register_all_modules`.

The package reports through :mod:`logging` (one logger per module, under
``gpt4image_mm``) and prints nothing unless the caller configures logging,
e.g. ``logging.basicConfig()``; the commands show the records on stderr.
Training reports through MMEngine's logger, as every OpenMMLab runner does.
docs/architecture.md maps the package.
"""
import logging

from gpt4image_mm.version import __version__

# A library stays silent until its user configures logging (without a
# handler, Python's last resort would print every warning on stderr).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ['__version__']
