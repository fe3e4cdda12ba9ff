"""``strip``: drop the alignment neck (and loss/teacher state) from a
checkpoint, so the plain mmpretrain config loads it (zero deployment cost).

    gpt4image strip work_dirs/x/epoch_120.pth deploy.pth
    python tools/test.py BASE_CONFIG deploy.pth   # the plain mmpretrain config
"""
from __future__ import annotations

import argparse
import pickle

from gpt4image_mm.utils.errors import ToolError


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument('src', help='checkpoint trained with a GPT4Image config')
    p.add_argument('dst', help='where to write the deployable checkpoint')
    p.set_defaults(handler=run_strip)
    return p


def run_strip(args: argparse.Namespace) -> int:
    """0 when ``dst`` is written; one line and exit 2 when ``src`` is not a
    checkpoint (or not one that loads safely) or ``dst`` is a file this
    tool did not write."""
    from gpt4image_mm.engine.checkpoint import strip_checkpoint
    try:
        dropped = strip_checkpoint(args.src, args.dst)
    except pickle.UnpicklingError as e:  # one line already, naming src
        raise ToolError(f'{e}; nothing written') from None
    except EOFError as e:
        raise ToolError(f'{args.src}: not a checkpoint that loads with '
                        f'weights_only=True ({unpickling_reason(e)}); '
                        'nothing written') from None
    print(f'{args.dst}: removed {dropped} training-only tensors')
    return 0


def unpickling_reason(error: BaseException) -> str:
    """The cause line of torch's many-line "Weights only load failed"
    message (what it refused), else its first line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for i, line in enumerate(lines[:-1]):
        if 'WeightsUnpickler error' in line:
            return f'Weights only load failed: {lines[i + 1]}'
    return lines[0] if lines else type(error).__name__
