"""Training and testing behind ``gpt4image train`` and ``gpt4image test``
(and ``tools/train.py``, ``tools/test.py``): the parsed command line merged
into the config, pre-flight checks, then MMEngine's Runner.

The command line is mmpretrain's tools' (:mod:`gpt4image_mm.cli.train`), so
existing scripts keep working; both register our components first and
allow-list MMEngine's checkpoint contents for torch's safe loading.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import pickle
from typing import Any, Optional

from mmengine.config import Config, ConfigDict

from gpt4image_mm.utils import register_all_modules
from gpt4image_mm.utils.config import load_config


def train_args(config: str, **options: Any) -> argparse.Namespace:
    """What ``gpt4image train CONFIG`` parses, for callers in Python (the
    experiment plans its runs with it): the command's defaults, then
    ``options``."""
    args = dict(work_dir=None, cfg_options=None, launcher='none',
                local_rank=0, no_pin_memory=False,
                no_persistent_workers=False, resume=None, amp=False,
                no_validate=False, auto_scale_lr=False,
                allow_store_change=False)
    unknown = set(options) - set(args)
    if unknown:
        raise TypeError(f'unknown train options: {sorted(unknown)}')
    args.update(options)
    return argparse.Namespace(config=config, **args)


def _dataloader_defaults(cfg: Config, args: argparse.Namespace) -> None:
    import torch
    # Pinned memory only exists with an accelerator; without one torch
    # ignores pin_memory=True and warns at every epoch's iterator.
    can_pin = torch.accelerator.is_available()
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field) is None:
            continue
        loader = ConfigDict(pin_memory=True, persistent_workers=True,
                            collate_fn=dict(type='default_collate'))
        loader.update(cfg[field])
        if args.no_pin_memory or not can_pin:
            loader.pin_memory = False
        if args.no_persistent_workers or loader.get('num_workers', 0) == 0:
            loader.persistent_workers = False
        cfg[field] = loader


def build_runner(cfg: Config):
    """The config's runner: ``runner_type`` through the ``RUNNERS`` registry
    when the config names one (as mmpretrain's tools/train.py), else
    MMEngine's ``Runner``."""
    if 'runner_type' in cfg:
        from mmpretrain.registry import RUNNERS
        return RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)


def _refused_checkpoint(error: pickle.UnpicklingError) -> SystemExit:
    """A checkpoint safe loading refused: its one line, exit 2 (the
    traceback through the runner would bury it)."""
    from gpt4image_mm.utils.errors import EXIT_FIX_INPUT, print_error
    print_error(error)
    return SystemExit(EXIT_FIX_INPUT)


def _load(args: argparse.Namespace) -> Config:
    register_all_modules()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(args.config))[0]
        cfg.work_dir = osp.join('./work_dirs', name)
    _dataloader_defaults(cfg, args)
    return cfg


def _cpu_distributed(cfg: Config) -> None:
    """Make ``--launcher pytorch`` work on CPU-only hosts (gloo).

    MMEngine's launcher pins a CUDA device and wraps DDP with
    ``device_ids=[LOCAL_RANK]``; without a GPU both fail. We start the gloo
    process group ourselves (the runner then skips its own init) and wrap
    without device ids. Used by CPU clusters and by our 2-process tests.
    """
    import torch
    import torch.distributed as dist

    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                     device_ids=None, broadcast_buffers=False)
    if cfg.launcher == 'pytorch' and not dist.is_initialized():
        dist.init_process_group(backend='gloo')


def _end_distributed() -> None:
    """Destroy the process group of a distributed run before the
    interpreter exits: left to exit, gloo's threads can abort a rank
    ("terminate called without an active exception", seen on a loaded
    2-core machine) after all the work is done."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # local: no collective, no hang


def train_config(args: argparse.Namespace) -> Config:
    """The config ``tools/train.py`` runs, with the CLI merged in."""
    cfg = _load(args)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    if args.cfg_options:
        old_epochs = (cfg.get('train_cfg') or {}).get('max_epochs')
        cfg.merge_from_dict(args.cfg_options)
        if not any(k.startswith('param_scheduler') for k in args.cfg_options):
            sync_schedule_to_epochs(cfg, old_epochs)
    return cfg


def sync_schedule_to_epochs(cfg: Config, old_epochs: Optional[int]) -> None:
    """Keep epoch schedules on an overridden ``train_cfg.max_epochs``.

    ``--cfg-options train_cfg.max_epochs=N`` alone would leave a cosine
    schedule's ``T_max``/``end`` at the config's old length (the lr stops
    mid-curve, or restarts). Every epoch-based scheduler whose ``end`` or
    ``T_max`` spanned the old run to its last epoch is moved to the new one;
    each change is logged. Options that set ``param_scheduler`` themselves
    switch this off.
    """
    from mmengine.logging import print_log
    new_epochs = (cfg.get('train_cfg') or {}).get('max_epochs')
    scheds = cfg.get('param_scheduler')
    if not old_epochs or not new_epochs or new_epochs == old_epochs \
            or not scheds:
        return
    for i, sched in enumerate(scheds if isinstance(scheds, list)
                              else [scheds]):
        if not sched.get('by_epoch', True):
            continue  # iteration units: not comparable to epochs
        begin = sched.get('begin', 0)
        changed = []
        if sched.get('end') == old_epochs:
            sched['end'] = new_epochs
            changed.append('end')
        if sched.get('T_max') == old_epochs - begin:
            sched['T_max'] = new_epochs - begin
            changed.append('T_max')
        if changed:
            print_log(
                f'train_cfg.max_epochs {old_epochs} -> {new_epochs}: '
                f'param_scheduler[{i}] ({sched.get("type")}) '
                f'{"/".join(changed)} follows (set param_scheduler in '
                '--cfg-options to choose yourself)', logger='current')


def train(args: argparse.Namespace) -> None:
    """``gpt4image train``: build a Runner from the config and train."""
    from gpt4image_mm.engine import preflight

    cfg = train_config(args)
    if cfg.launcher == 'none':
        # Not yet under a distributed launcher: with the checks, one rank of
        # a 2-process gloo run aborted at exit ("terminate called without an
        # active exception") in 3 of 12 tries on a loaded 2-core machine,
        # cause not found; check a config with a single-process run first.
        preflight.train_checks(cfg, args.allow_store_change)
    _cpu_distributed(cfg)
    try:
        build_runner(cfg).train()
    except pickle.UnpicklingError as e:
        raise _refused_checkpoint(e) from None
    finally:
        _end_distributed()


def test(args: argparse.Namespace) -> dict:
    """``gpt4image test``: evaluate a checkpoint; returns the metrics."""
    from gpt4image_mm.engine import preflight

    cfg = _load(args)
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    preflight.test_checks(cfg)
    _cpu_distributed(cfg)
    try:
        runner = build_runner(cfg)
        if args.out:  # which images were right, for paired comparisons
            from gpt4image_mm.engine.hooks.prediction_hook import (
                TestPredictionHook,
                predictions_path,
            )
            runner.register_hook(TestPredictionHook(
                predictions_path(args.out)))
        metrics = runner.test()
    except pickle.UnpicklingError as e:
        raise _refused_checkpoint(e) from None
    finally:
        _end_distributed()
    if args.out:  # atomic: a complete file is what "tested" means
        from gpt4image_mm.utils.files import atomic_write_json
        atomic_write_json(args.out, {k: float(v) for k, v in metrics.items()},
                          indent=2)
    return metrics
