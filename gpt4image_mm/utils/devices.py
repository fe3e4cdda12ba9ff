"""Device and compute-dtype choice: one answer for ``auto`` in every tool.

The rule: device ``auto`` is ``cuda`` when a GPU is visible, else ``cpu``.
Dtype ``auto`` is bfloat16 on a CUDA device that supports it (Ampere and
later: fp16's range without its overflow), float16 on an older CUDA device,
and float32 on CPU (CPU half precision is slow and inexact).
"""
from __future__ import annotations

from typing import Any, Optional

from gpt4image_mm.utils.errors import InputError

# accepted names, with the short aliases the CLIs have always taken
DTYPE_NAMES = {'float32': 'float32', 'fp32': 'float32',
               'float16': 'float16', 'fp16': 'float16',
               'bfloat16': 'bfloat16', 'bf16': 'bfloat16'}


def resolve_device(name: Optional[str] = 'auto') -> str:
    """``auto``/None -> ``cuda`` if available else ``cpu``; others as given."""
    if name in (None, 'auto'):
        import torch
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    return str(name)


def resolve_dtype(name: Optional[str], device: str) -> Any:
    """The ``torch.dtype`` for ``name`` (``auto``/None: the module's rule)
    on ``device``; a ValueError naming the choices for an unknown name."""
    import torch
    if name in (None, 'auto'):
        if not str(device).startswith('cuda'):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() \
            else torch.float16
    if name not in DTYPE_NAMES:
        raise InputError(f'dtype {name!r}: one of auto, '
                         f'{", ".join(DTYPE_NAMES)}')
    return getattr(torch, DTYPE_NAMES[name])
