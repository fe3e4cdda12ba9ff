"""Training progress that shows, whatever interval a config inherits.

mmpretrain's runtime logs every 100 iterations: a 40-iteration epoch logs
once, at its end, and an ImageNet run says nothing for its first 100
iterations (minutes, after a start-up that may have taken longer). This hook
logs the run's first iteration and at least ``lines_per_epoch`` lines per
epoch, through the Runner's own ``LoggerHook`` and log processor.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from mmengine.hooks import Hook, LoggerHook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class TrainProgressHook(Hook):
    """Lower the ``LoggerHook`` interval to about an epoch / ``lines_per_epoch``
    (when it is larger; logged) and log the first iteration of the run."""

    priority = 'BELOW_NORMAL'  # as LoggerHook: after the iteration's timing

    def __init__(self, lines_per_epoch: int = 10):
        self.lines_per_epoch = lines_per_epoch
        self._logger_hook: Optional[LoggerHook] = None
        self._first_iter = 0

    def before_train(self, runner: Any) -> None:
        self._first_iter = runner.iter  # after a resume: where it goes on
        self._logger_hook = next((h for h in runner.hooks
                                  if isinstance(h, LoggerHook)), None)
        if self._logger_hook is None:
            return
        per_epoch = len(runner.train_dataloader)
        interval = max(1, math.ceil(per_epoch / self.lines_per_epoch))
        if self._logger_hook.interval > interval:
            runner.logger.info(
                f'logging every {interval} iterations instead of '
                f'{self._logger_hook.interval}: {per_epoch} iterations per '
                f'epoch (default_hooks.logger.interval)')
            self._logger_hook.interval = interval

    def after_train_iter(self, runner: Any, batch_idx: int,
                         data_batch: Any = None,
                         outputs: Optional[dict] = None) -> None:
        hook = self._logger_hook
        if hook is None or runner.iter != self._first_iter:
            return
        logged = (self.every_n_inner_iters(batch_idx, hook.interval)
                  or self.end_of_epoch(runner.train_dataloader, batch_idx))
        if not logged:  # the LoggerHook's line, once, early
            _, line = runner.log_processor.get_log_after_iter(
                runner, batch_idx, 'train')
            runner.logger.info(line)
