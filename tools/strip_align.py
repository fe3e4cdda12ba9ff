"""Drop the alignment neck (and loss/teacher state) from a checkpoint.

    python tools/strip_align.py work_dirs/x/epoch_120.pth deploy.pth
    python tools/test.py BASE_CONFIG deploy.pth   # the plain mmpretrain config

Same as ``gpt4image strip`` (gpt4image_mm/cli/strip.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == '__main__':
    from gpt4image_mm.cli.main import run_subcommand
    sys.exit(run_subcommand('strip', sys.argv[1:], prog='strip_align.py'))
