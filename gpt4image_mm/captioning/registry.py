"""``CAPTION_BACKENDS``: the backends of ``gpt4image caption --backend``.

``'openai'``, ``'openai-batch'`` and ``'transformers'`` are built in; a user
adds one by registering a subclass of
:class:`gpt4image_mm.captioning.base.CaptionBackend` from their own module
and naming it with ``--custom-imports`` (docs/extending.md).

It is not an MMEngine ``Registry`` like the plugin's others
(:mod:`gpt4image_mm.registry`) only because captioning through an API starts
without MMEngine (0.2 s against 0.4 s, docs/benchmarks.md): it implements the
calls of MMEngine's interface that backends use.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Optional, Sequence


class NameRegistry:
    """Names -> classes, with the calls of mmengine's ``Registry`` that
    caption backends use (``register_module``, ``get``, ``module_dict``,
    ``import_from_location``), without importing mmengine."""

    def __init__(self, name: str, locations: Sequence[str] = ()):
        self.name, self._locations = name, list(locations)
        self.module_dict: Dict[str, Any] = {}
        self._imported = False

    def import_from_location(self) -> None:
        """Import the modules that register the built-in entries (once)."""
        if not self._imported:
            self._imported = True
            for location in self._locations:
                importlib.import_module(location)

    def get(self, key: str) -> Any:
        """The entry ``key`` (built-ins imported first); None if absent."""
        self.import_from_location()
        return self.module_dict.get(key)

    def register_module(self, name: Optional[str] = None, force: bool = False,
                        module: Any = None) -> Any:
        """Register ``module`` under ``name`` (default: its ``__name__``);
        without ``module``, a class decorator. A taken name is a KeyError
        unless ``force``."""
        def register(obj: Any) -> Any:
            key = name or obj.__name__
            if not force and key in self.module_dict:
                raise KeyError(f'{key} is already registered in {self.name} '
                               f'at {self.module_dict[key].__module__}')
            self.module_dict[key] = obj
            return obj
        if module is not None:
            return register(module)
        return register

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self.module_dict)


CAPTION_BACKENDS = NameRegistry(
    'caption backend',
    locations=['gpt4image_mm.captioning.openai_api',
               'gpt4image_mm.captioning.batch_api',
               'gpt4image_mm.captioning.local_hf'])
