"""Let torch's safe loading (``weights_only=True``) read MMEngine checkpoints.

torch >= 2.6 loads checkpoints with ``weights_only=True``: only tensors,
containers and allow-listed classes. MMEngine's resume state holds a few
more (the message hub's ``HistoryBuffer``, numpy scalars and arrays), so we
allow-list exactly those and make the buffer pickle without ``getattr`` --
never switching safe loading off, so a checkpoint
from an untrusted source still cannot run code when loaded.
"""
from __future__ import annotations

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
