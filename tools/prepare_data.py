"""Put Fashion-MNIST where mmpretrain's ``FashionMNIST`` reads it.

    python tools/prepare_data.py [--root data/fashion_mnist]

Uses the Debian package dataset-fashion-mnist when installed (or installs it
as root), else downloads the release like mmpretrain does.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt4image_demo.fashion_mnist import SYSTEM_DIR, prepare_fashion_mnist  # noqa: E402

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default='data/fashion_mnist',
                   help='where the unzipped IDX files go')
    p.add_argument('--system-dir', default=SYSTEM_DIR,
                   help='where the Debian package keeps the .gz files')
    p.add_argument('--no-install', action='store_true',
                   help='never run apt-get')
    p.add_argument('--no-download', action='store_true',
                   help='never download')
    a = p.parse_args()
    prepare_fashion_mnist(a.root, a.system_dir,
                          allow_install=not a.no_install,
                          allow_download=not a.no_download)
