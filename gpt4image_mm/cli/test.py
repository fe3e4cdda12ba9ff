"""``gpt4image test CONFIG CHECKPOINT``: evaluate a checkpoint
(mmpretrain's ``tools/test.py`` command line); ``--out`` writes the
metrics as JSON."""
from __future__ import annotations

import argparse

from gpt4image_mm.cli.train import add_common_arguments


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument('config', help='config file, or mmpretrain::path / '
                   'gpt4image_mm::path')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--out', help='write the metrics as JSON to this file '
                   "(and every test sample's true and predicted label to "
                   'M.predictions.json beside it)')
    p.add_argument('--amp', action='store_true')
    add_common_arguments(p)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from gpt4image_mm.engine.runner import test
    test(args)
    return 0

