"""The one way the package reads a config: a file, ``mmpretrain::x.py`` or
``gpt4image_mm::x.py``, with ``_base_`` entries of any of these."""
import os
from typing import Any

from gpt4image_mm.utils.errors import InputError


class ConfigNotFound(InputError, FileNotFoundError):
    """A config path that names no config: the user's one line, exit 2."""


def load_config(path: str) -> Any:
    """An MMEngine ``Config`` (``pkg::path`` through MMEngine's
    ``get_config``, as ``_base_`` entries resolve). The plugin's registry
    module is imported first: it teaches MMEngine the ``gpt4image_mm::``
    prefix."""
    from mmengine.config import Config

    import gpt4image_mm.registry  # noqa: F401
    if '::' in path:
        from mmengine.hub import get_config
        try:
            return get_config(path)
        except FileNotFoundError as e:
            raise ConfigNotFound(f'{path}: {e} -- list the shipped configs '
                                 'with `gpt4image configs`') from None
    if not os.path.isfile(path):
        raise ConfigNotFound(f'{path}: no such config file -- check the '
                             'path (or use a shipped one: `gpt4image '
                             'configs`)')
    return Config.fromfile(path)
