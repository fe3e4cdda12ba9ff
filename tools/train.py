"""Train any mmpretrain config, GPT4Image configs included.

    python tools/train.py configs/gpt4image/gpt4image_resnet18_8xb16_cifar100.py
    python tools/train.py CONFIG --resume            # latest in the work dir
    bash tools/dist_train.sh CONFIG 8                # 8 GPUs, torchrun
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt4image_mm.apis import train  # noqa: E402

if __name__ == '__main__':
    train()
