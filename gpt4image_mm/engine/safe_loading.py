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
four names, nothing else) resolves; a ``HistoryBuffer`` is rebuilt from
validated plain data, so no file can rewrite the statistics table all
buffers share. Anything else is refused in one line naming the global, and
the message never suggests a way round. A plain data class of your own
(a dataclass or namedtuple without code of its own) is trusted by naming
it in ``GPT4IMAGE_SAFE_GLOBALS`` (``module.Class``, comma separated); any
other class or function named there is refused, since the file would call
it with arguments of its choosing (``logging.FileHandler`` truncates a
file, ``subprocess.Popen`` runs a program).

Safe loading is also *enforced*, whatever torch's default or environment:
MMEngine calls ``torch.load`` without ``weights_only`` (so torch < 2.6, or
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, would unpickle anything). Every
checkpoint load -- ``tools/test.py``'s ``load_from``, ``--resume``, every
MMEngine scheme (local, http, ...) and our own tools -- goes through
:func:`safe_torch_load`, which passes ``weights_only=True`` explicitly.
"""
from __future__ import annotations

import argparse
import enum
import importlib
import os
import pickle
import re
import types
from typing import Any, List, Optional

import numpy as np
import torch

from gpt4image_mm.utils.errors import ToolError


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
    """Pickle a ``HistoryBuffer`` as plain data: no statistics methods.

    MMEngine pickles its statistics table (``getattr(HistoryBuffer, 'min')``
    ...), which every buffer shares: loading it back would let a file
    rewrite that table. The table is code's business -- the built-ins are
    restored by :func:`_history_buffer_setstate`, custom ones by the code
    that registers them on import -- so a checkpoint carries only data.
    """
    return {k: v for k, v in self.__dict__.items() if k in _HISTORY_FIELDS}


#: What a ``HistoryBuffer`` checkpoint entry may hold, and of which type.
_HISTORY_FIELDS = {'max_length': (int, np.integer),
                   '_log_history': (np.ndarray, ),
                   '_count_history': (np.ndarray, )}


def _history_buffer_setstate(self: Any, state: Any) -> None:
    """Rebuild a ``HistoryBuffer`` from plain data, validated.

    MMEngine's own ``__setstate__`` merges the file's ``statistics_methods``
    into the table all buffers share, so a crafted checkpoint could make
    every later ``statistics('mean')`` return the maximum. Here the file's
    table is accepted only where it names the built-ins themselves (what
    stock MMEngine writes) and is never written anywhere; the history must
    be numeric arrays and a positive integer length; anything else is
    refused."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(
            f'a HistoryBuffer state must be a dict, not {type(state).__name__}')
    state = dict(state)
    methods = state.pop('statistics_methods', {})
    if not isinstance(methods, dict) or any(
            name not in _DEFAULT_STATISTICS
            or fn is not getattr(HistoryBuffer, name)
            for name, fn in methods.items()):
        raise pickle.UnpicklingError(
            'a HistoryBuffer state may name only its built-in statistics '
            f'({", ".join(_DEFAULT_STATISTICS)}) as themselves')
    unknown = set(state) - set(_HISTORY_FIELDS)
    if unknown:
        raise pickle.UnpicklingError(
            f'a HistoryBuffer state holds unknown fields {sorted(unknown)}')
    for name, value in state.items():
        if not isinstance(value, _HISTORY_FIELDS[name]) or (
                isinstance(value, np.ndarray) and value.dtype.kind not in 'biuf'):
            raise pickle.UnpicklingError(
                f'a HistoryBuffer state has a bad {name} '
                f'({type(value).__name__})')
    if int(state.get('max_length', 1)) < 1:
        raise pickle.UnpicklingError('a HistoryBuffer max_length must be >= 1')
    self._set_default_statistics()
    self.__dict__.update(state)


def allow_mmengine_checkpoints() -> None:
    """Allow-list the non-tensor globals found in MMEngine checkpoints;
    ``HistoryBuffer`` pickles and unpickles as validated plain data."""
    from mmengine.logging.history_buffer import HistoryBuffer

    HistoryBuffer.__getstate__ = _history_buffer_getstate
    HistoryBuffer.__setstate__ = _history_buffer_setstate
    torch.serialization.add_safe_globals(
        [HistoryBuffer, *_numpy_globals(), *PLAIN_DATA_GLOBALS])


# Methods through which a class runs code of its own on data the file
# chooses while it is unpickled, mutated or collected.
_CODE_HOOKS = ('__setstate__', '__reduce__', '__reduce_ex__', '__del__',
               '__post_init__', '__setattr__', '__getattr__',
               '__getattribute__', '__init_subclass__', '__set_name__',
               '__class_getitem__', '_missing_')


def _generated(function: Any) -> bool:
    """Whether ``function`` was generated by dataclasses/namedtuple (their
    code is compiled from a string), not written in a module."""
    code = getattr(function, '__code__', None)
    return code is not None and code.co_filename.startswith('<')


def _not_plain_data(cls: type) -> Optional[str]:
    """Why ``cls`` is not plain data, or None when it is.

    Plain data: a dataclass or a namedtuple whose constructor is the
    generated one and which defines none of :data:`_CODE_HOOKS` and no
    property, in itself or a base. Safe loading calls an allowed class with
    arguments the file chooses, and sets attributes on its instances; for
    such a class that only stores values. A class with code of its own
    (``logging.FileHandler`` opens a file, ``subprocess.Popen`` runs one),
    an enum (its members are shared: a file could rewrite them) or a
    function is never plain data."""
    import dataclasses
    if not isinstance(cls, type):
        return 'not a class'
    if issubclass(cls, enum.Enum):
        return 'an enum (its members are shared by everyone who uses it)'
    is_tuple = issubclass(cls, tuple) and hasattr(cls, '_fields')
    if not (is_tuple or dataclasses.is_dataclass(cls)):
        return 'not a dataclass or namedtuple'
    constructor = cls.__new__ if is_tuple else cls.__init__
    if not _generated(constructor):
        return 'its constructor is code of its own'
    for base in cls.__mro__:
        if base in (object, tuple):
            continue
        for name, value in vars(base).items():
            if name in _CODE_HOOKS or isinstance(value, property):
                return f'it defines {base.__qualname__}.{name}'
            if name == '__init__' and not _generated(value):
                return f'it defines {base.__qualname__}.__init__'
    return None


def trusted_globals(spec: str) -> List[type]:
    """The plain data classes a ``GPT4IMAGE_SAFE_GLOBALS`` value names.

    Only dataclasses and namedtuples without code of their own
    (:func:`_not_plain_data`): anything else could be called by the file
    with arguments of its choosing, opening files or running programs.
    Raises :class:`ToolError` naming a bad entry."""
    found = []
    for name in filter(None, (n.strip() for n in spec.split(','))):
        module, _, attr = name.rpartition('.')
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError):
            raise ToolError(f'{TRUST_ENV}: cannot import {name!r} -- give '
                            'module.Class of a dataclass or namedtuple') \
                from None
        reason = _not_plain_data(obj)
        if reason:
            raise ToolError(
                f'{TRUST_ENV}: {name!r} is not plain data ({reason}) -- '
                'remove it; only dataclasses and namedtuples without code '
                'of their own can be trusted')
        found.append(obj)
    return found


def _trust_from_environment() -> None:
    spec = os.environ.get(TRUST_ENV, '')
    if spec:
        torch.serialization.add_safe_globals(trusted_globals(spec))


class UnsafeCheckpoint(ToolError, pickle.UnpicklingError):
    """A checkpoint safe loading refused (or could not read): its one line,
    exit 2 -- the file is the user's to replace, not a bug of ours."""


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
                'which safe loading (weights_only=True) does not allow -- '
                'use a checkpoint that holds only tensors and plain data '
                '(one this package or MMEngine saved)')
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
    :class:`UnsafeCheckpoint` (a ``pickle.UnpicklingError``) with one line
    (:func:`refusal_message`).
    """
    kwargs.pop('weights_only', None)
    kwargs.pop('pickle_module', None)  # weights_only has its own unpickler
    _trust_from_environment()
    try:
        return torch.load(f, map_location, *args[1:], weights_only=True,
                          **kwargs)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(refusal_message(f, e)) from None


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
    """MMEngine's ``load_url`` with ``weights_only=True`` passed explicitly;
    a refused file is :class:`UnsafeCheckpoint`, as a local one."""
    _trust_from_environment()
    try:
        return torch.hub.load_state_dict_from_url(
            url, model_dir, map_location, progress, check_hash, file_name,
            weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(refusal_message(url, e)) from None
