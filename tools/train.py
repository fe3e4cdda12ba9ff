"""Train any mmpretrain config, GPT4Image configs included.

    python tools/train.py configs/gpt4image/gpt4image_resnet18_8xb16_cifar100.py
    python tools/train.py CONFIG --resume            # latest in the work dir
    bash tools/dist_train.sh CONFIG 8                # 8 GPUs, torchrun
The same command as ``gpt4image train`` (installed with the package).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == '__main__':
    from gpt4image_mm.cli.main import run_subcommand
    sys.exit(run_subcommand('train', sys.argv[1:], prog='train.py'))
