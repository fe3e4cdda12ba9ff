"""Drop the alignment neck (and loss/teacher state) from a checkpoint.

    python tools/strip_align.py work_dirs/x/epoch_120.pth deploy.pth
    python tools/test.py BASE_CONFIG deploy.pth   # the plain mmpretrain config
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt4image_mm.checkpoint import strip_checkpoint  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('src', help='checkpoint trained with a GPT4Image config')
    p.add_argument('dst', help='where to write the deployable checkpoint')
    args = p.parse_args()
    try:
        dropped = strip_checkpoint(args.src, args.dst)
    except ValueError as e:  # not a checkpoint, or dst is not one
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'{args.dst}: removed {dropped} training-only tensors')
    return 0


if __name__ == '__main__':
    sys.exit(main())
