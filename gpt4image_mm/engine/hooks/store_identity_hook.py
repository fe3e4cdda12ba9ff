"""Checkpoints remember their embedding store; a resume against another is
refused (training would go on towards other targets with nothing said)."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from gpt4image_mm.engine.preflight import (
    META_KEY,
    PreflightError,
    checkpoint_name,
    identity_changes,
)


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + '...' if len(text) > 15 else text


@HOOKS.register_module()
class StoreIdentityHook(Hook):
    """Record the store in every checkpoint; refuse to resume against
    another one.

    Resuming with a store rebuilt from other texts would go on training
    towards different targets with nothing said. ``allow_change`` (the
    ``--allow-store-change`` option of ``tools/train.py``) resumes anyway
    and logs both stores.
    """

    priority = 'LOW'  # after hooks that rewrite the loaded checkpoint (EMA)

    def __init__(self, store: Optional[Dict[str, Any]] = None,
                 allow_change: bool = False):
        # plain JSON data (the manifest's own), not the config's ConfigDicts:
        # checkpoints load with weights_only=True
        self.store = json.loads(json.dumps(store)) if store else None
        self.allow_change = allow_change

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        if self.store is not None:
            checkpoint.setdefault('meta', {})[META_KEY] = dict(self.store)

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        if not runner.cfg.get('resume') or self.store is None:
            return
        old = (checkpoint.get('meta') or {}).get(META_KEY)
        name = checkpoint_name(runner)
        if not old:
            runner.logger.warning(
                f'{name} records no embedding store (saved before stores '
                'were recorded): cannot check it was trained against '
                f'{self.store["path"]}')
            return
        changes = identity_changes(old, self.store)
        if not changes:
            return
        diff = ', '.join(f'{k} {_short(a)} -> {_short(b)}'
                         for k, a, b in changes)
        msg = (f'{name} was trained against the store {old.get("path")}, '
               f'but the config trains against {self.store["path"]} '
               f'({diff})')
        if self.allow_change:
            runner.logger.warning(f'{msg}; resuming anyway '
                                  '(--allow-store-change)')
            return
        raise PreflightError(
            f'{msg} -- resuming would train towards other targets: point '
            'store= at the store it was trained with, or pass '
            '--allow-store-change to resume against the new one')


