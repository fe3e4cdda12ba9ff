"""Fashion-MNIST on disk, the way mmpretrain's ``FashionMNIST`` reads it.

mmpretrain reads the four *unzipped* IDX files from ``data_root``. We get the
``.gz`` originals from, in order: the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``), installing that package when we are
root and apt-get exists, or the same URLs mmpretrain's own downloader uses.
Downloads are checked against mmpretrain's MD5 sums (Debian recompresses the
archives, so theirs differ); every unzipped file must have the exact IDX
header and size of the release, and is written to a temporary name and
renamed, so an interrupted run never leaves a truncated file that a later run
would trust.
"""
from __future__ import annotations

import gzip
import math
import os
import shutil
import subprocess
from typing import Callable, Dict, Optional

from gpt4image_mm.utils.files import atomic_path

SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'
DEBIAN_PACKAGE = 'dataset-fashion-mnist'


def _archives() -> Dict[str, str]:
    """``{archive name: md5}``, taken from mmpretrain (one source of truth)."""
    from mmpretrain.datasets import FashionMNIST
    return dict(FashionMNIST.train_list + FashionMNIST.test_list)


def unzipped_name(archive: str) -> str:
    return archive[:-3] if archive.endswith('.gz') else archive


# IDX header (magic, dims) of each file of the release, by split size.
_SHAPES = {'train-images-idx3-ubyte': (2051, 60000, 28, 28),
           'train-labels-idx1-ubyte': (2049, 60000),
           't10k-images-idx3-ubyte': (2051, 10000, 28, 28),
           't10k-labels-idx1-ubyte': (2049, 10000)}


def _check_idx(path: str) -> None:
    """Raise unless ``path`` is a complete IDX file of the release."""
    magic, *dims = _SHAPES[os.path.basename(path).split('.tmp-')[0]]
    with open(path, 'rb') as f:
        header = f.read(4 * (1 + len(dims)))
    got = tuple(int.from_bytes(header[i:i + 4], 'big')
                for i in range(0, len(header), 4))
    expected = 4 * (1 + len(dims)) + math.prod(dims)
    if got != (magic, *dims) or os.path.getsize(path) != expected:
        raise ValueError(f'{path}: not the Fashion-MNIST release (IDX header '
                         f'{got}, {os.path.getsize(path)} bytes; expected '
                         f'{(magic, *dims)}, {expected} bytes)')


def is_prepared(root: str) -> bool:
    """Whether all four complete unzipped IDX files are in ``root``."""
    for a in _archives():
        path = os.path.join(root, unzipped_name(a))
        if not os.path.isfile(path):
            return False
        try:
            _check_idx(path)
        except ValueError:
            return False
    return True


def _has_archives(directory: str) -> bool:
    return all(os.path.isfile(os.path.join(directory, a)) for a in _archives())


def _apt_install(log: Callable[[str], None]) -> bool:
    """Install the Debian package when we may (root + apt-get); True on
    success. A stale package index is refreshed once."""
    if not hasattr(os, 'geteuid') or os.geteuid() != 0 or not shutil.which(
            'apt-get'):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    cmd = ['apt-get', 'install', '-y', '-q', DEBIAN_PACKAGE]
    log(f'installing the Debian package {DEBIAN_PACKAGE} ...')
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(['apt-get', 'update', '-q'], env=env)
        if subprocess.run(cmd, env=env).returncode != 0:
            log(f'apt-get could not install {DEBIAN_PACKAGE}')
            return False
    return _has_archives(SYSTEM_DIR)


def _download(root: str, log: Callable[[str], None]) -> str:
    """Fetch the archives exactly as mmpretrain's FashionMNIST would."""
    from urllib.parse import urljoin

    from mmpretrain.datasets import FashionMNIST
    from mmpretrain.datasets.utils import download_url

    log(f'downloading Fashion-MNIST from {FashionMNIST.url_prefix}')
    for name, md5 in _archives().items():
        download_url(urljoin(FashionMNIST.url_prefix, name), root,
                     filename=name, md5=md5)
    return root


def _unzip(src: str, dst: str) -> None:
    with atomic_path(dst) as tmp:
        with gzip.open(src, 'rb') as fin, open(tmp, 'wb') as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        _check_idx(tmp)


def prepare_fashion_mnist(root: str = 'data/fashion_mnist',
                          system_dir: str = SYSTEM_DIR,
                          allow_install: bool = True,
                          allow_download: bool = True,
                          log: Optional[Callable[[str], None]] = None) -> str:
    """Put the unzipped Fashion-MNIST IDX files in ``root``; returns ``root``.

    Does nothing when they are already there (the demo's cache).
    """
    log = log or print
    if is_prepared(root):
        log(f'Fashion-MNIST already prepared in {root}')
        return root
    os.makedirs(root, exist_ok=True)
    if _has_archives(system_dir):
        source = system_dir
    elif (system_dir == SYSTEM_DIR and allow_install
          and _apt_install(log)):
        source = system_dir
    elif _has_archives(root):
        source = root
    elif allow_download:
        source = _download(root, log)
    else:
        raise FileNotFoundError(
            f'Fashion-MNIST not found in {system_dir} or {root}: install the '
            f'Debian package {DEBIAN_PACKAGE} or allow the download')
    for name in _archives():
        log(f'unzipping {os.path.join(source, name)} -> {root}/')
        _unzip(os.path.join(source, name),
               os.path.join(root, unzipped_name(name)))
    return root
