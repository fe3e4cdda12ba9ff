"""The plugin's own registries, for parts mmpretrain has no registry for.

Models, datasets and transforms register into mmpretrain's registries (so
configs find them under ``default_scope='mmpretrain'``). Three kinds of parts
are this plugin's own and live here:

* ``TEXT_ENCODERS``: frozen text encoders, looked up by
  :func:`gpt4image_mm.embedding.build_text_encoder` from an encoder spec
  (``tools/embed.py --encoder`` and ``TextEmbeddingTeacher`` both go
  through it);
* ``ALIGN_LOSS_MODES``: the modes of ``ContrastiveAlignLoss`` (``'clip'``,
  ``'ctr'``, ``'cosine'``): functions ``mode(loss, batch) -> Tensor``;
* ``CAPTION_BACKENDS``: ``tools/caption.py --backend`` (``'openai'``,
  ``'openai-batch'``, ``'transformers'``): subclasses of
  :class:`gpt4image_mm.captioning.base.CaptionBackend`, which declare their
  own command-line options and build themselves from the parsed ones.

A user adds one by registering it from their own module and importing that
module (``custom_imports`` in a config, ``--custom-imports`` for
``tools/caption.py``); see docs/extending.md.

The first two are mmengine ``Registry`` objects, made on first use (this
module is imported by the light commands, which import no mmengine).
``CAPTION_BACKENDS`` is used by ``gpt4image caption``, which imports no
mmengine to caption through an API, so it is a :class:`NameRegistry`: the
part of mmengine's interface that backends use.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Optional, Sequence


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

_MMENGINE_REGISTRIES: Dict[str, Callable[[], Any]] = {
    'TEXT_ENCODERS': lambda: _mmengine_registry(
        'text encoder', ['gpt4image_mm.embedding.encoders']),
    'ALIGN_LOSS_MODES': lambda: _mmengine_registry(
        'alignment loss mode', ['gpt4image_mm.models.loss']),
}


def _mmengine_registry(name: str, locations: Sequence[str]) -> Any:
    from mmengine.registry import Registry
    return Registry(name, scope='gpt4image_mm', locations=list(locations))


def __getattr__(name: str) -> Any:
    """``TEXT_ENCODERS`` and ``ALIGN_LOSS_MODES``, made on first use."""
    if name not in _MMENGINE_REGISTRIES:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    registry = globals()[name] = _MMENGINE_REGISTRIES[name]()
    return registry
