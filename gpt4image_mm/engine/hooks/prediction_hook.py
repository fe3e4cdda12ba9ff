"""Every test image's predicted and true label, saved beside the metrics
(``gpt4image test --out M.json`` writes ``M.predictions.json``): a
comparison of two models on one test set needs to know *which* images
each got right, not only how many (the experiment's paired intervals)."""
from __future__ import annotations

import os.path as osp
from typing import Any, List, Optional, Sequence

from mmengine.dist import collect_results, is_main_process
from mmengine.hooks import Hook

from gpt4image_mm.utils.files import atomic_write_json

PREDICTIONS_FORMAT = 'gpt4image-predictions/1'


def predictions_path(metrics_out: str) -> str:
    """The sidecar of a metrics file: ``M.json`` -> ``M.predictions.json``."""
    root, ext = osp.splitext(metrics_out)
    return f'{root}.predictions{ext or ".json"}'


class TestPredictionHook(Hook):
    """Collect ``(sample_idx, gt_label, pred_label)`` of every test sample
    (across ranks) and write them as JSON at the end of the test."""

    priority = 'LOW'

    def __init__(self, out: str):
        self.out = out
        self.rows: List[tuple] = []

    def before_test_epoch(self, runner: Any) -> None:
        self.rows = []

    def after_test_iter(self, runner: Any, batch_idx: int,
                        data_batch: Any = None,
                        outputs: Optional[Sequence[Any]] = None) -> None:
        for sample in outputs or ():
            self.rows.append((int(sample.metainfo.get('sample_idx', -1)),
                              _label(sample.get('gt_label')),
                              _label(sample.get('pred_label'))))

    def after_test_epoch(self, runner: Any, metrics: Any = None) -> None:
        size = len(runner.test_dataloader.dataset)
        rows = collect_results(self.rows, size, device='cpu')
        if not is_main_process():
            return
        rows = sorted(rows)
        atomic_write_json(self.out, dict(
            format=PREDICTIONS_FORMAT,
            sample_idx=[r[0] for r in rows], gt_label=[r[1] for r in rows],
            pred_label=[r[2] for r in rows]))


def _label(value: Any) -> int:
    if value is None:
        return -1
    flat = value.reshape(-1) if hasattr(value, 'reshape') else [value]
    return int(flat[0]) if len(flat) else -1
