"""Let torch's safe loading (``weights_only=True``) read MMEngine checkpoints.

torch >= 2.6 loads checkpoints with ``weights_only=True``: only tensors,
containers and allow-listed classes. MMEngine's resume state holds a few
more (the message hub's ``HistoryBuffer``, numpy scalars and arrays), so we
allow-list exactly those and make the buffer pickle without ``getattr`` --
never switching safe loading off, so a checkpoint
from an untrusted source still cannot run code when loaded.

Safe loading is also *enforced*, whatever torch's default or environment:
MMEngine calls ``torch.load`` without ``weights_only`` (so torch < 2.6, or
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, would unpickle anything). Every
checkpoint load -- ``tools/test.py``'s ``load_from``, ``--resume``, every
MMEngine scheme (local, http, ...) and our own tools -- goes through
:func:`safe_torch_load`, which passes ``weights_only=True`` explicitly.
"""
from __future__ import annotations

import types
from typing import Any, List

import numpy as np
import torch


def _numpy_globals() -> List[object]:
    dtypes = [type(np.dtype(t)) for t in (
        'float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64',
        'uint8', 'bool')]
    try:  # numpy >= 2 moved the internals to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    return [np.ndarray, np.dtype, _reconstruct, scalar, *dtypes]


_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getstate(self: Any) -> dict:
    """Pickle a ``HistoryBuffer`` without its built-in statistics methods.

    MMEngine pickles them as ``getattr(HistoryBuffer, 'min')``, and allowing
    ``getattr`` would open safe loading to arbitrary attribute access. Its
    ``__setstate__`` restores the built-ins anyway, so nothing is lost.
    """
    state = self.__dict__.copy()
    state.pop('statistics_methods', None)
    custom = {k: v for k, v in self._statistics_methods.items()
              if k not in _DEFAULT_STATISTICS}
    if custom:
        state['statistics_methods'] = custom
    return state


def allow_mmengine_checkpoints() -> None:
    """Allow-list the non-tensor globals found in MMEngine checkpoints."""
    from mmengine.logging.history_buffer import HistoryBuffer

    HistoryBuffer.__getstate__ = _history_buffer_getstate
    torch.serialization.add_safe_globals(
        [HistoryBuffer, *_numpy_globals()])


def safe_torch_load(f: Any, map_location: Any = None, *args: Any,
                    **kwargs: Any) -> Any:
    """``torch.load`` with ``weights_only=True`` passed explicitly.

    Explicit, because torch honours ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` only
    when the caller left ``weights_only`` unset; a caller asking for
    ``weights_only=False`` gets True all the same.
    """
    kwargs.pop('weights_only', None)
    kwargs.pop('pickle_module', None)  # weights_only has its own unpickler
    return torch.load(f, map_location, *args[1:], weights_only=True, **kwargs)


class _SafeTorch(types.ModuleType):
    """``torch`` as MMEngine's checkpoint modules see it: ``load`` is
    :func:`safe_torch_load`, everything else is torch's."""

    load = staticmethod(safe_torch_load)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def enforce_safe_mmengine_loading() -> None:
    """Route MMEngine's checkpoint loads through :func:`safe_torch_load`.

    MMEngine resolves ``torch.load`` through the ``torch`` global of the two
    modules that load checkpoints (every scheme of ``CheckpointLoader`` and
    ``load_url``); replacing that global covers them all, including schemes
    registered later, without touching torch for anyone else.
    """
    import mmengine.runner.checkpoint as checkpoint
    from mmengine.utils.dl_utils import hub

    for module in (checkpoint, hub):
        if getattr(module, 'torch', None) is torch:
            module.torch = _SafeTorch('torch')
    # http(s)://, torchvision:// ...: torch.hub's loader, weights_only=False
    # by default
    checkpoint.load_url = safe_load_url


def safe_load_url(url: str, model_dir: Any = None, map_location: Any = None,
                  progress: bool = True, check_hash: bool = False,
                  file_name: Any = None, **_: Any) -> Any:
    """MMEngine's ``load_url`` with ``weights_only=True`` passed explicitly."""
    return torch.hub.load_state_dict_from_url(
        url, model_dir, map_location, progress, check_hash, file_name,
        weights_only=True)
