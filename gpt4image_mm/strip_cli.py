"""``strip``: drop the alignment neck (and loss/teacher state) from a
checkpoint, so the plain mmpretrain config loads it (zero deployment cost).

    gpt4image strip work_dirs/x/epoch_120.pth deploy.pth
    python tools/test.py BASE_CONFIG deploy.pth   # the plain mmpretrain config
"""
from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument('src', help='checkpoint trained with a GPT4Image config')
    p.add_argument('dst', help='where to write the deployable checkpoint')
    p.set_defaults(handler=run_strip)
    return p


def run_strip(args: argparse.Namespace) -> int:
    """0 when ``dst`` is written; a ValueError (exit 2) when ``src`` is not
    a checkpoint or ``dst`` is a file this tool did not write."""
    from .checkpoint import strip_checkpoint
    dropped = strip_checkpoint(args.src, args.dst)
    print(f'{args.dst}: removed {dropped} training-only tensors')
    return 0
