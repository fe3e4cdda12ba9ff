"""Small stand-in copies of the datasets the shipped configs read.

Each writer lays out files exactly as the mmpretrain dataset class reads the
real dataset (annotation files, folder names, IDX / pickle formats), with a
few tiny images, so a config runs unchanged except for its ``data_root``.
Every split holds ``N_TRAIN`` (train-like splits) or ``N_TEST`` images in two
classes.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Callable, Dict

import numpy as np

N_TRAIN = 4  # two batches of 2: BatchNorm in the neck needs >1 per batch
N_TEST = 2
SIDE = 24  # JPEG side; pipelines resize/crop to the config's own input size


def _jpeg(path: Path, seed: int) -> None:
    from PIL import Image
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
    Image.fromarray(img).save(path, format='JPEG')


def _split_sizes():
    """(split flag, label, index) for N_TRAIN train then N_TEST test rows."""
    rows = [(1, i % 2, i) for i in range(N_TRAIN)]
    return rows + [(0, i % 2, N_TRAIN + i) for i in range(N_TEST)]


def imagenet(root: Path) -> None:
    """``train|val/<wnid>/x.JPEG`` + ``meta/{train,val}.txt`` (path label)."""
    (root / 'meta').mkdir(parents=True)
    for split, n in (('train', N_TRAIN), ('val', N_TEST)):
        lines = []
        for i in range(n):
            rel = f'n0000000{i % 2}/{split}_{i}.JPEG'
            _jpeg(root / split / rel, i)
            lines.append(f'{rel} {i % 2}')
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')


def cub(root: Path) -> None:
    """CUB_200_2011: images.txt, image_class_labels.txt, train_test_split.txt."""
    images, labels, split = [], [], []
    for is_train, label, i in _split_sizes():
        rel = f'{label + 1:03d}.Bird/bird_{i}.jpg'
        _jpeg(root / 'images' / rel, i)
        images.append(f'{i + 1} {rel}')
        labels.append(f'{i + 1} {label + 1}')
        split.append(f'{i + 1} {is_train}')
    for name, lines in (('images.txt', images),
                        ('image_class_labels.txt', labels),
                        ('train_test_split.txt', split)):
        (root / name).write_text('\n'.join(lines) + '\n')


def stanford_cars(root: Path) -> None:
    """Stanford Cars, one-annotation-file layout: cars_annos.mat + car_ims/."""
    import mat4py
    paths, classes, test = [], [], []
    for is_train, label, i in _split_sizes():
        rel = f'car_ims/{i + 1:06d}.jpg'
        _jpeg(root / rel, i)
        paths.append(rel)
        classes.append(label + 1)
        test.append(1 - is_train)
    root.mkdir(parents=True, exist_ok=True)
    mat4py.savemat(str(root / 'cars_annos.mat'), {'annotations': dict(
        relative_im_path=paths, **{'class': classes}, test=test)})


def fgvc_aircraft(root: Path) -> None:
    """fgvc-aircraft-2013b/data: images/<id>.jpg + images_variant_<split>.txt."""
    from mmpretrain.datasets.categories import FGVCAIRCRAFT_CATEGORIES
    data = root / 'data'
    lines: Dict[str, list] = {'trainval': [], 'test': []}
    for is_train, label, i in _split_sizes():
        _jpeg(data / 'images' / f'{1000000 + i}.jpg', i)
        split = 'trainval' if is_train else 'test'
        lines[split].append(f'{1000000 + i} {FGVCAIRCRAFT_CATEGORIES[label]}')
    lines['train'] = lines['val'] = lines['trainval']
    for split, rows in lines.items():
        (data / f'images_variant_{split}.txt').write_text(
            '\n'.join(rows) + '\n')


def flowers102(root: Path) -> None:
    """Flowers102: jpg/image_%05d.jpg + imagelabels.mat + setid.mat."""
    import mat4py
    ids = {'trnid': [], 'valid': [], 'tstid': []}
    labels = []
    for is_train, label, i in _split_sizes():
        _jpeg(root / 'jpg' / f'image_{i + 1:05d}.jpg', i)
        labels.append(label + 1)
        # trainval = trnid + valid; split the train rows between them
        part = ('trnid' if i % 2 == 0 else 'valid') if is_train else 'tstid'
        ids[part].append(i + 1)
    mat4py.savemat(str(root / 'imagelabels.mat'), {'labels': labels})
    mat4py.savemat(str(root / 'setid.mat'), ids)


def _cifar(root: Path, folder: str, train: list, test: str, meta: str,
           label_field: str) -> None:
    rng = np.random.default_rng(0)
    base = root / folder
    base.mkdir(parents=True)

    def batch(n):
        return {'data': rng.integers(0, 255, (n, 3 * 32 * 32), dtype=np.uint8),
                label_field: [i % 2 for i in range(n)]}
    # N_TRAIN images over the train batches (the first gets the rest)
    per = [N_TRAIN // len(train)] * len(train)
    per[0] += N_TRAIN - sum(per)
    for name, n in zip(train, per):
        (base / name).write_bytes(pickle.dumps(batch(n)))
    (base / test).write_bytes(pickle.dumps(batch(N_TEST)))
    (base / meta).write_bytes(pickle.dumps({}))


def cifar10(root: Path) -> None:
    """cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta."""
    _cifar(root, 'cifar-10-batches-py',
           [f'data_batch_{i}' for i in range(1, 6)], 'test_batch',
           'batches.meta', 'labels')


def cifar100(root: Path) -> None:
    """cifar-100-python: train, test, meta (fine_labels)."""
    _cifar(root, 'cifar-100-python', ['train'], 'test', 'meta', 'fine_labels')


def _idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX (SN3) file of uint8 (type code 8)."""
    header = struct.pack('>I', 0x0800 | array.ndim)
    header += b''.join(struct.pack('>I', d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fashion_mnist(root: Path) -> None:
    """The four unzipped IDX files mmpretrain's (Fashion)MNIST reads."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for prefix, n in (('train', N_TRAIN), ('t10k', N_TEST)):
        _idx(root / f'{prefix}-images-idx3-ubyte',
             rng.integers(0, 255, (n, 28, 28)))
        _idx(root / f'{prefix}-labels-idx1-ubyte', np.arange(n) % 2)


WRITERS: Dict[str, Callable[[Path], None]] = {
    'ImageNet': imagenet, 'CUB': cub, 'StanfordCars': stanford_cars,
    'FGVCAircraft': fgvc_aircraft, 'Flowers102': flowers102,
    'CIFAR10': cifar10, 'CIFAR100': cifar100, 'FashionMNIST': fashion_mnist,
}
