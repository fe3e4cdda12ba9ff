"""Shared fixtures: tiny real datasets and stores built on the spot."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
# One intra-op thread in every test process and the CLIs it starts:
# pytest-xdist already runs a worker per core, and OpenMP threads spinning
# on a busy core cost several times the work (measured on the shared 2-core
# machine: SmolLM2 generating 4 x 24 tokens, 1.7 CPU s with one thread,
# 11.2 CPU s with two). Read when torch is imported: after this file.
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')
sys.path.insert(0, str(ROOT))

CLASSES = ('cat', 'dog', 'ship')


def make_image_folder(root: Path, per_class: int = 4, size: int = 16,
                      classes=CLASSES, seed: int = 0) -> List[str]:
    """A CustomDataset folder (root/<class>/<i>.png) of learnable images:
    each class has its own colour. Returns the keys in dataset order."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    keys = []
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            img[..., c] += 150
            Image.fromarray(img).save(root / name / f'{i}.png')
            keys.append(f'{name}/{i}.png')
    return sorted(keys)


def random_store(path: Path, keys: List[str], dim: int = 8,
                 seed: int = 0, **manifest) -> Dict[str, np.ndarray]:
    """Write a store of random unit vectors (``manifest``: more fields for
    ``write_store``, e.g. ``source_checksum``); returns key -> vector."""
    from gpt4image_mm.datasets.store import write_store
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((len(keys), dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    write_store(str(path), keys, vecs, encoder='random-test', **manifest)
    stored = vecs.astype(np.float16).astype(np.float32)
    return dict(zip(keys, stored))


@pytest.fixture
def image_folder(tmp_path: Path):
    keys = make_image_folder(tmp_path / 'imgs')
    return tmp_path / 'imgs', keys


@pytest.fixture
def serve():
    """Start local OpenAI-wire test servers (tests/_openai_server.py):
    ``fake, url = serve(**behaviour)``; all are shut down after the test."""
    from _openai_server import FakeOpenAI, start_server
    servers = []

    def _start(**kw):
        fake = FakeOpenAI(**kw)
        srv, url = start_server(fake)
        servers.append(srv)
        return fake, url
    yield _start
    for s in servers:
        s.shutdown()
