"""Strip the training-only alignment parts from a checkpoint.

The alignment neck, loss (a learnable temperature) and teacher exist only for
training. Without them the state dict is a plain ``ImageClassifier``'s, so
the base mmpretrain config loads it: zero deployment cost.
"""
from __future__ import annotations

import os
from typing import Dict, Tuple

import torch

import gpt4image_mm.engine  # noqa: F401  (safe-loading allow-list)
from gpt4image_mm.engine.safe_loading import safe_torch_load
from gpt4image_mm.utils.errors import InputError
from gpt4image_mm.utils.files import atomic_path, check_replaceable

TRAINING_ONLY_PREFIXES = ('align_neck.', 'align_loss.', 'teacher.')
# The official code's projection head (resnet/utils.py:111,
# deit/models.py:32), in its checkpoints' ``'model'`` state dict.
OFFICIAL_TRAINING_ONLY_PREFIXES = ('proj_layer.', )


def strip_state_dict(state_dict: Dict[str, torch.Tensor],
                     prefixes: Tuple[str, ...] = TRAINING_ONLY_PREFIXES
                     ) -> Tuple[dict, int]:
    """Drop training-only entries; returns the new dict and how many went."""
    kept = {k: v for k, v in state_dict.items()
            if not k.startswith(prefixes)}
    return kept, len(state_dict) - len(kept)


def _state_and_meta(ckpt: object, src: str) -> Tuple[dict, dict, tuple]:
    """The state dict, the meta to keep and the prefixes to drop, for
    MMEngine's layout (``state_dict``, ``meta``), the official GPT4Image/DeiT
    one (``model``, ``args``..., deit/main.py:386-394) or a bare state
    dict."""
    if not isinstance(ckpt, dict):
        raise InputError(f'{src}: not a checkpoint with a state_dict')
    if isinstance(ckpt.get('state_dict'), dict):
        return (ckpt['state_dict'], dict(ckpt.get('meta') or {}),
                TRAINING_ONLY_PREFIXES)
    if isinstance(ckpt.get('model'), dict):
        return ckpt['model'], {}, OFFICIAL_TRAINING_ONLY_PREFIXES
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt, {}, TRAINING_ONLY_PREFIXES
    raise InputError(f'{src}: not a checkpoint with a state_dict')


def strip_checkpoint(src: str, dst: str) -> int:
    """Write ``dst`` with only the deployable weights of ``src``.

    Loaded with ``weights_only=True``: an untrusted file cannot run code.
    Optimizer and resume state are dropped too (they mention the neck), and
    so is an official checkpoint's ``args``: the result holds tensors and
    plain meta only.
    """
    ckpt = safe_torch_load(src, map_location='cpu')
    state, meta, prefixes = _state_and_meta(ckpt, src)
    kept, dropped = strip_state_dict(state, prefixes)
    meta['gpt4image_stripped'] = dropped
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    check_replaceable(dst, is_checkpoint, 'a checkpoint')
    with atomic_path(dst) as tmp:
        torch.save({'meta': meta, 'state_dict': kept}, tmp)
    return dropped


def is_checkpoint(path: str) -> bool:
    """Whether ``path`` is a (safely loadable) checkpoint: what the strip
    tool may overwrite -- never a config or any other file."""
    try:
        ckpt = safe_torch_load(path, map_location='cpu')
    except Exception:  # noqa: BLE001  (any failure: not one)
        return False
    return isinstance(ckpt, dict) and 'state_dict' in ckpt
