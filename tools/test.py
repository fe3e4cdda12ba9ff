"""Evaluate a checkpoint with a config (mmpretrain's tools/test.py CLI).

    python tools/test.py CONFIG CHECKPOINT [--out metrics.json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt4image_mm.apis import test  # noqa: E402

if __name__ == '__main__':
    test()
