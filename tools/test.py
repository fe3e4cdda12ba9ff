"""Evaluate a checkpoint (mmpretrain tools/test.py options).

    python tools/test.py CONFIG CHECKPOINT [--out metrics.json]

The same command as ``gpt4image test`` (installed with the package).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == '__main__':
    from gpt4image_mm.cli.main import run_subcommand
    sys.exit(run_subcommand('test', sys.argv[1:], prog='test.py'))
