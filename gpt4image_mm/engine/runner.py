"""Training and testing behind ``gpt4image train`` and ``gpt4image test``
(and ``tools/train.py``, ``tools/test.py``): the parsed command line merged
into the config, pre-flight checks, then MMEngine's Runner.

The command line is mmpretrain's tools' (:mod:`gpt4image_mm.cli.train`), so
existing scripts keep working; both register our components first and
allow-list MMEngine's checkpoint contents for torch's safe loading.
"""
from __future__ import annotations

import argparse
import logging
import os
import os.path as osp
import pickle
from typing import Any, Callable, List, Optional

from mmengine.config import Config, ConfigDict

from gpt4image_mm.utils import register_all_modules
from gpt4image_mm.utils.config import load_config

logger = logging.getLogger(__name__)


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


def _start_distributed(cfg: Config) -> None:
    """Start the process group of a launched run before the checks, so
    rank 0 can check alone and tell the others (the Runner finds the
    group started and keeps it).

    On a CPU-only host (CPU clusters, our 2-process tests) MMEngine's
    launcher would pin a CUDA device and wrap DDP with
    ``device_ids=[LOCAL_RANK]``; both fail without a GPU, so the group is
    gloo and DDP wraps without device ids. With a GPU it is the config's
    ``env_cfg.dist_cfg``, started by MMEngine's own ``init_dist``.
    """
    import torch
    import torch.distributed as dist

    if cfg.launcher == 'none' or dist.is_initialized():
        return
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    if torch.cuda.is_available():
        from mmengine.dist import init_dist
        init_dist(cfg.launcher, **cfg.env_cfg.dist_cfg)
        return
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                     device_ids=None, broadcast_buffers=False)
    if cfg.launcher == 'pytorch':
        dist.init_process_group(backend='gloo')
    # CPU under slurm/mpi: the Runner starts the group; each rank checks


def _checks_on_rank_0(cfg: Config, checks: Callable[[], None]) -> None:
    """Run the pre-flight ``checks`` once per run: in a distributed run on
    rank 0 only (the datasets are not built once more on every rank),
    while the other ranks wait for the outcome, which every rank then
    acts on: the hooks the checks added, or the same exit. Rank 0 prints
    the one line (or the traceback of a bug); the others exit quietly
    with the same code."""
    import torch.distributed as dist

    from gpt4image_mm.utils.errors import EXIT_NOT_DONE, ToolError

    if not (dist.is_available() and dist.is_initialized()):
        checks()
        logger.info('pre-flight checks passed')
        return
    outcome: List[Any] = [None]
    error: Optional[BaseException] = None
    if dist.get_rank() == 0:
        try:
            checks()
            outcome = [('ok', cfg.get('custom_hooks'))]
        except ToolError as e:
            error, outcome = e, [('exit', e.exit_code)]
        except BaseException as e:  # a bug: rank 0 shows it, all stop
            error, outcome = e, [('exit', EXIT_NOT_DONE)]
    dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if error is not None:
        raise error
    if kind == 'exit':
        raise SystemExit(value)
    if dist.get_rank() == 0:
        logger.info('pre-flight checks passed (rank 0, for all %d ranks)',
                    dist.get_world_size())
    cfg.custom_hooks = value


def _end_distributed() -> None:
    """Tear a distributed run down while the interpreter is whole.

    The model's DDP wrapper holds the process group; left to the
    interpreter's exit, the group's threads are destroyed in whatever
    order finalisation picks, and a gloo rank can abort ("terminate called
    without an active exception") after all the work is done. So the
    runner goes first (the caller drops it; collected here), then the
    group."""
    import gc

    import torch.distributed as dist
    gc.collect()
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
    """``gpt4image train``: check the config (rank 0 of a launched run),
    build a Runner from it and train."""
    from gpt4image_mm.engine import preflight

    cfg = train_config(args)
    _start_distributed(cfg)
    runner = None
    try:
        _checks_on_rank_0(cfg, lambda: preflight.train_checks(
            cfg, args.allow_store_change))
        runner = build_runner(cfg)
        runner.train()
    except pickle.UnpicklingError as e:
        raise _refused_checkpoint(e) from None
    finally:
        runner = None
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
    _start_distributed(cfg)
    runner = None
    try:
        _checks_on_rank_0(cfg, lambda: preflight.test_checks(cfg))
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
        runner = None
        _end_distributed()
    if args.out:  # atomic: a complete file is what "tested" means
        from gpt4image_mm.utils.files import atomic_write_json
        atomic_write_json(args.out, {k: float(v) for k, v in metrics.items()},
                          indent=2)
    return metrics
