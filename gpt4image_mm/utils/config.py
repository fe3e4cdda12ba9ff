"""The one way the package reads a config: a file, ``mmpretrain::x.py`` or
``gpt4image_mm::x.py``, with ``_base_`` entries of any of these."""
from typing import Any


def load_config(path: str) -> Any:
    """An MMEngine ``Config`` (``pkg::path`` through MMEngine's
    ``get_config``, as ``_base_`` entries resolve). The plugin's registry
    module is imported first: it teaches MMEngine the ``gpt4image_mm::``
    prefix."""
    from mmengine.config import Config

    import gpt4image_mm.registry  # noqa: F401
    if '::' in path:
        from mmengine.hub import get_config
        return get_config(path)
    return Config.fromfile(path)
