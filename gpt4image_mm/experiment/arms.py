"""The arms of an experiment: what each one aligns the image features to.

Every aligned arm trains the user's GPT4Image config as it is (head, loss,
data, seed, schedule); only its embedding store differs (and the class-level
switches a class-level store needs), so the comparison isolates what the
text adds:

- ``baseline``: the plain config, cross-entropy only;
- ``gpt4image``: the config's own store (per-image or class-level);
- ``classname``: "a photo of a {display name}." per class (the names of
  ``--class-names FILE`` where given: a wnid folder says "tench", not
  "n01440764"), embedded by the store's own encoder (its manifest names
  it): what the descriptions add beyond the label's name;
- ``random``: one seeded random unit vector per class at the store's width:
  what the extra head and the contrastive term do without any text.

Arms are a registry: a user adds one from their own module (loaded with
``--custom-imports``), e.g. another caption model's store::

    from gpt4image_mm.experiment import register_arm

    @register_arm('llava', 'LLaVA captions', color='tab:red')
    def llava_store(ctx):
        return '/data/stores/llava'   # or build it under ctx.work_dir
"""
from __future__ import annotations

import json
import logging
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from gpt4image_mm.utils.class_names import class_display_names
from gpt4image_mm.utils.errors import InputError

logger = logging.getLogger(__name__)
CLASSNAME_PROMPT = 'a photo of a {name}.'  # CLIP's standard prompt
RANDOM_TARGETS_SEED = 0  # the same vectors for every seed and run


@dataclass
class ArmContext:
    """What a store builder may use: the experiment's work dir, the training
    set's class names in label order (the dataset's own: store keys are
    ``class:<name>`` of these), the GPT4Image config's store, and the
    user's ``--class-names`` file (the words texts use for them)."""

    work_dir: str
    class_names: List[str]
    base_store: str
    class_names_file: Optional[str] = None

    @property
    def display_names(self) -> List[str]:
        """What a text calls each class, in label order (the one helper of
        :mod:`gpt4image_mm.utils.class_names`)."""
        return class_display_names(self.class_names, self.class_names_file)

    @property
    def manifest(self) -> Dict:
        with open(osp.join(self.base_store, 'manifest.json'),
                  encoding='utf-8') as f:
            return json.load(f)


StoreBuilder = Callable[[ArmContext], str]


@dataclass(frozen=True)
class Arm:
    name: str
    title: str
    color: str  # in the plots
    store: Optional[StoreBuilder] = None  # None: the plain config

    @property
    def aligned(self) -> bool:
        """Trains the alignment head (has a store)."""
        return self.store is not None


ARMS: Dict[str, Arm] = {}


def register_arm(name: str, title: Optional[str] = None,
                 color: Optional[str] = None
                 ) -> Callable[[StoreBuilder], StoreBuilder]:
    """Decorator: ``fn(ctx) -> store directory`` becomes arm ``name``."""
    def add(fn: StoreBuilder) -> StoreBuilder:
        ARMS[name] = Arm(name, title or name, color or f'C{len(ARMS)}', fn)
        return fn
    return add


ARMS['baseline'] = Arm('baseline', 'baseline', 'tab:gray')


@register_arm('gpt4image', 'GPT4Image', 'tab:blue')
def gpt4image_store(ctx: ArmContext) -> str:
    return ctx.base_store


@register_arm('classname', 'class name', 'tab:orange')
def classname_store(ctx: ArmContext) -> str:
    """"a photo of a {name}." per class, through ``tools/embed.py`` with the
    encoder (and its pooling / length) of the GPT4Image store."""
    from gpt4image_mm.experiment.cache import (
        Marker,
        command,
        file_digest,
        run_tool,
    )
    text = write_classname_descriptions(
        osp.join(ctx.work_dir, 'classname.jsonl'), ctx.class_names,
        ctx.display_names)
    store = osp.join(ctx.work_dir, 'store_classname')
    manifest = ctx.manifest
    marker = Marker(osp.join(ctx.work_dir, 'steps', 'store_classname.json'),
                    dict(descriptions=file_digest(text),
                         encoder=manifest['encoder'],
                         revision=manifest.get('encoder_revision'),
                         settings=manifest.get('encoder_settings')))
    if marker.load() is not None and osp.isfile(
            osp.join(store, 'manifest.json')):
        logger.info('store_classname: cached')
        return store
    cmd = command('embed') + [text, '--encoder', manifest['encoder'],
                              '--out', store, '--force', '--no-progress']
    settings = manifest.get('encoder_settings') or {}
    if settings.get('pooling'):
        cmd += ['--pooling', str(settings['pooling'])]
    if settings.get('max_length'):
        cmd += ['--max-length', str(settings['max_length'])]
    run_tool(cmd, log=osp.join(ctx.work_dir, 'store_classname.log'))
    marker.save(dict(store=store))
    return store


@register_arm('random', 'random vectors', 'tab:green')
def random_store(ctx: ArmContext) -> str:
    path = osp.join(ctx.work_dir, 'store_random')
    dim = int(ctx.manifest['dim'])
    if not (osp.isfile(osp.join(path, 'manifest.json'))
            and _store_dim(path) == dim):
        write_random_store(path, ctx.class_names, dim)
    return path


def _store_dim(store: str) -> int:
    with open(osp.join(store, 'manifest.json'), encoding='utf-8') as f:
        return int(json.load(f)['dim'])


def write_classname_descriptions(path: str, names: List[str],
                                 shown: Optional[List[str]] = None) -> str:
    """One plain prompt per class, in the descriptions format (so the
    ``classname`` arm goes through the same embed step as real text):
    keyed by the dataset's class name, saying its display name (``shown``,
    default: :func:`class_display_names` of ``names``)."""
    from gpt4image_mm.utils.descriptions import DescriptionWriter
    from gpt4image_mm.utils.files import atomic_path
    from gpt4image_mm.utils.keys import class_key, description_key
    shown = shown if shown is not None else class_display_names(names)
    with atomic_path(path) as tmp, DescriptionWriter(tmp) as w:
        for name, words in zip(names, shown):
            w.write(dict(key=description_key(class_key(name), 0),
                         text=CLASSNAME_PROMPT.format(name=words)))
    return path


def write_random_store(path: str, names: List[str], dim: int) -> str:
    """One fixed random unit vector per class (seeded: every run and seed
    of the ``random`` arm aligns to the same vectors)."""
    from gpt4image_mm.datasets.store import write_store
    from gpt4image_mm.utils.keys import class_key
    rng = np.random.default_rng(RANDOM_TARGETS_SEED)
    vectors = rng.standard_normal((len(names), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return write_store(path, [class_key(n) for n in names], vectors,
                       encoder=f'random-unit-vectors/seed{RANDOM_TARGETS_SEED}',
                       overwrite=True)


def parse_arms(text: Optional[str],
               default: tuple = ('baseline', 'gpt4image')) -> List[str]:
    """``'all'`` or a comma list -> arm names in registry order."""
    if not text:
        return list(default)
    if text.strip() == 'all':
        return list(ARMS)
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise InputError(f'unknown arm(s) {unknown}; choose from '
                         f'{", ".join(ARMS)} or all (add your own with '
                         '--custom-imports)')
    if 'baseline' not in names:
        raise InputError('--arms must include baseline: every comparison '
                         'is paired against it')
    return [n for n in ARMS if n in names]
