"""``gpt4image train CONFIG``: train any mmpretrain config, GPT4Image's
included (mmpretrain's ``tools/train.py`` command line).

    gpt4image train my_config.py --work-dir work_dirs/run
    gpt4image train gpt4image_mm::gpt4image/gpt4image_resnet18_8xb16_cifar100.py
    torchrun --nproc-per-node 8 -m gpt4image_mm.cli train CONFIG --launcher pytorch
"""
from __future__ import annotations

import argparse

from gpt4image_mm.cli.main import DictAction

LAUNCHERS = ['none', 'pytorch', 'slurm', 'mpi']


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options train and test share (mmpretrain's names)."""
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='pytorch under torchrun, slurm under srun')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    parser.add_argument('--no-pin-memory', action='store_true')
    parser.add_argument('--no-persistent-workers', action='store_true')


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument('config', help='config file, or mmpretrain::path / '
                   'gpt4image_mm::path')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from this checkpoint, or the latest one in '
                   'the work dir when no path is given')
    p.add_argument('--amp', action='store_true', help='mixed precision')
    p.add_argument('--no-validate', action='store_true')
    p.add_argument('--auto-scale-lr', action='store_true')
    p.add_argument('--allow-store-change', action='store_true',
                   help='resume even if the checkpoint was trained against '
                   'another embedding store (it is logged)')
    add_common_arguments(p)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from gpt4image_mm.engine.runner import train
    train(args)
    return 0

