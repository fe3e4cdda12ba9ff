"""Let torch's safe loading (``weights_only=True``) read MMEngine checkpoints.

torch >= 2.6 loads checkpoints with ``weights_only=True``: only tensors,
containers and allow-listed classes. MMEngine's resume state holds a few
more (the message hub's ``HistoryBuffer``, numpy scalars and arrays), so we
allow-list exactly those and make the buffer pickle without ``getattr`` --
never switching safe loading off, so a checkpoint
from an untrusted source still cannot run code when loaded.

Checkpoints written by other code hold a few more plain-data objects, which
are allowed too (:data:`PLAIN_DATA_GLOBALS`): the official GPT4Image/DeiT
code saves its ``argparse.Namespace`` (``'args'``, deit/main.py:386-394);
numpy 1.x wrote numpy scalars and arrays under ``numpy.core.*`` names; stock
MMEngine pickles the ``HistoryBuffer`` statistics as
``getattr(HistoryBuffer, 'min')``, which only a guarded ``getattr`` (those
four names, nothing else) resolves. Anything else is refused in one line
naming the global; a class of your own that your own checkpoints hold is
trusted by naming it in ``GPT4IMAGE_SAFE_GLOBALS`` (``module.Class``, comma
separated) -- an addition to the allow-list, never a way round it.

Safe loading is also *enforced*, whatever torch's default or environment:
MMEngine calls ``torch.load`` without ``weights_only`` (so torch < 2.6, or
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, would unpickle anything). Every
checkpoint load -- ``tools/test.py``'s ``load_from``, ``--resume``, every
MMEngine scheme (local, http, ...) and our own tools -- goes through
:func:`safe_torch_load`, which passes ``weights_only=True`` explicitly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pickle
import re
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

#: The variable that adds the user's own classes to the allow-list.
TRUST_ENV = 'GPT4IMAGE_SAFE_GLOBALS'


def _numpy1_aliases() -> List[tuple]:
    """numpy >= 2 objects under the names numpy 1.x pickled them as."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x: the names match
        return []
    return [(scalar, 'numpy.core.multiarray.scalar'),
            (_reconstruct, 'numpy.core.multiarray._reconstruct')]


def _history_buffer_statistic(owner: Any, name: str) -> Any:
    """``getattr`` as stock MMEngine's pickles use it, and only that.

    Pickle protocol 2 writes the method ``HistoryBuffer.min`` as
    ``getattr(HistoryBuffer, 'min')``; a general ``getattr`` would reach
    anything, so this one resolves the four built-in statistics only."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if owner is HistoryBuffer and name in _DEFAULT_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        'getattr is allowed for the HistoryBuffer statistics only, not '
        f'{getattr(owner, "__qualname__", type(owner).__name__)}.{name}')


#: Plain data found in real checkpoints (official GPT4Image/DeiT, numpy
#: 1.x, stock MMEngine): constructing them runs no code of the file's.
PLAIN_DATA_GLOBALS = [argparse.Namespace, *_numpy1_aliases(),
                      (_history_buffer_statistic, 'builtins.getattr')]


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
        [HistoryBuffer, *_numpy_globals(), *PLAIN_DATA_GLOBALS])


def trusted_globals(spec: str) -> List[type]:
    """The classes a ``GPT4IMAGE_SAFE_GLOBALS`` value names.

    Classes only: a function named here could be called by the file with
    arguments of its choosing. Raises ValueError naming a bad entry."""
    found = []
    for name in filter(None, (n.strip() for n in spec.split(','))):
        module, _, attr = name.rpartition('.')
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError):
            raise ValueError(f'{TRUST_ENV}: cannot import {name!r} (give '
                             'module.Class)') from None
        if not isinstance(obj, type):
            raise ValueError(f'{TRUST_ENV}: {name!r} is not a class; only '
                             'classes can be trusted')
        found.append(obj)
    return found


def _trust_from_environment() -> None:
    spec = os.environ.get(TRUST_ENV, '')
    if spec:
        torch.serialization.add_safe_globals(trusted_globals(spec))


_REFUSED = (re.compile(r'GLOBAL (\S+) was not an allowed global'),
            re.compile(r'unsupported GLOBAL (\S+) whose module \S+ is '
                       r'blocked'))


def refusal_message(source: Any, error: BaseException) -> str:
    """One line for a refused checkpoint: the file, the global, the remedy.

    torch's own message is many lines and suggests ``weights_only=False``,
    which would let the file run code."""
    name = source if isinstance(source, (str, os.PathLike)) else 'checkpoint'
    text = str(error)
    blocked = _REFUSED[1].search(text)
    if blocked:
        return (f'{os.fspath(name)}: refused: loading it would call '
                f'{blocked.group(1)}, which safe loading never allows '
                '(weights_only=True); do not use this file')
    missing = _REFUSED[0].search(text)
    if missing:
        return (f'{os.fspath(name)}: refused: it holds {missing.group(1)}, '
                'which safe loading (weights_only=True) does not allow; if '
                'you made this file yourself and that class only holds data, '
                f'trust it with {TRUST_ENV}={missing.group(1)} '
                '(docs/get_started.md)')
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cause = next((lines[i + 1] for i, ln in enumerate(lines[:-1])
                  if 'WeightsUnpickler error' in ln), None)
    cause = cause or (lines[-1] if lines else type(error).__name__)
    return (f'{os.fspath(name)}: not a checkpoint that loads with '
            f'weights_only=True ({cause})')


def safe_torch_load(f: Any, map_location: Any = None, *args: Any,
                    **kwargs: Any) -> Any:
    """``torch.load`` with ``weights_only=True`` passed explicitly.

    Explicit, because torch honours ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` only
    when the caller left ``weights_only`` unset; a caller asking for
    ``weights_only=False`` gets True all the same. A refused file raises
    ``pickle.UnpicklingError`` with one line (:func:`refusal_message`).
    """
    kwargs.pop('weights_only', None)
    kwargs.pop('pickle_module', None)  # weights_only has its own unpickler
    _trust_from_environment()
    try:
        return torch.load(f, map_location, *args[1:], weights_only=True,
                          **kwargs)
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(refusal_message(f, e)) from None


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
