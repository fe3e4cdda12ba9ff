"""Planning an experiment: every arm x seed (x images per class) becomes a
generated config kept in its run dir, which a user can rerun by hand::

    python tools/train.py WORK/runs/<arm>/seed<k>/config.py

Each run is keyed by the digest of its config text and its store's manifest:
an unchanged run is never trained twice, a changed one starts afresh.
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from gpt4image_mm.experiment.arms import ARMS, ArmContext
from gpt4image_mm.experiment.cache import digest, file_digest
from gpt4image_mm.experiment.schedule import fit_schedule_to_subset, train_images
from gpt4image_mm.utils.errors import ToolError
from gpt4image_mm.utils.files import atomic_write_json, atomic_write_text


@dataclass
class ExperimentSettings:
    """What one experiment compares; every field that shapes a run is part
    of that run's generated config (hence of its cache key)."""

    config: str  # the plain config (baseline arm)
    gpt4image_config: str  # the user's GPT4Image config, as it is
    work_dir: str = 'work_dirs/experiment'
    arms: List[str] = field(default_factory=lambda: [
        'baseline', 'gpt4image', 'classname', 'random'])
    seeds: int = 3
    cfg_options: List[str] = field(default_factory=list)  # every arm
    store: Optional[str] = None  # gpt4image arm's store; None: the config's
    shots: List[int] = field(default_factory=list)  # + K images per class
    parallel: int = 1  # runs at once on this machine
    threads: Optional[int] = None  # per run; None: cores / parallel
    descriptions: Optional[str] = None  # analysed into the report
    class_names: Optional[str] = None  # --class-names FILE: display names
    title: str = 'GPT4Image experiment'


@dataclass
class Run:
    arm: str
    seed: int
    shots: Optional[int]  # None: the full training set
    config: str  # generated, in work_dir
    work_dir: str
    key: str  # digest of the config text and the store manifest
    store: Optional[str] = None

    @property
    def name(self) -> str:
        shots = f' {self.shots}-shot' if self.shots else ''
        return f'{ARMS[self.arm].title}{shots} seed {self.seed}'


def parse_options(options: List[str]) -> Dict[str, Any]:
    """``key=value`` strings as ``tools/train.py --cfg-options`` reads them."""
    from mmengine.config import DictAction
    ns = argparse.Namespace(o={})
    if options:
        DictAction(option_strings=[], dest='o')(None, ns, list(options))
    return dict(ns.o)


def train_dataset_path(cfg: Any) -> str:
    """Dotted path of the innermost train dataset (below wrappers)."""
    path, ds = 'train_dataloader.dataset', cfg.train_dataloader.dataset
    while 'dataset' in ds:
        path, ds = f'{path}.dataset', ds.dataset
    return path


def to_innermost(cfg: Any, options: Dict[str, Any]) -> Dict[str, Any]:
    """Options on ``train_dataloader.dataset.X`` address the dataset that
    holds the images in every arm: below a wrapper (the GPT4Image config's
    ``DescriptionDataset``) unless ``X`` is the wrapper's own field."""
    prefix, inner = 'train_dataloader.dataset.', train_dataset_path(cfg)
    wrapper = cfg.train_dataloader.dataset
    out = {}
    for key, value in options.items():
        rest = key[len(prefix):]
        if key.startswith(prefix) and inner != prefix[:-1] and \
                rest.split('.')[0] not in wrapper:
            key = f'{inner}.{rest}'
        out[key] = value
    return out


def description_dataset(cfg: Any) -> Optional[Any]:
    """The ``DescriptionDataset`` node of the train set, if any."""
    node = cfg.get('train_dataloader', {}).get('dataset')
    while node is not None:
        if node.get('type') == 'DescriptionDataset':
            return node
        node = node.get('dataset')
    return None


def is_class_level(store: str) -> bool:
    """Whether every key of the store names a class (``class:...``)."""
    from gpt4image_mm.datasets.store import EmbeddingStore
    from gpt4image_mm.utils.keys import CLASS_PREFIX
    return all(k.startswith(CLASS_PREFIX) for k in EmbeddingStore(
        store).keys())


def preflight_runs(runs: List[Run]) -> None:
    """The checks ``tools/train.py`` runs before training (store width, key
    kind, missing descriptions, empty data...) on each arm's generated
    config, as its runs will train it (the arm's store, the experiment's
    options): a mistake stops the experiment before any run starts."""
    from gpt4image_mm.engine import preflight
    from gpt4image_mm.engine.runner import train_args, train_config
    checked = set()
    for run in runs:
        if run.arm not in checked:
            checked.add(run.arm)
            preflight.train_checks(train_config(train_args(run.config)))


def base_store(s: ExperimentSettings, cfg: Any) -> str:
    """The GPT4Image config's store (or ``--store``), checked to exist."""
    from gpt4image_mm.datasets.store import StoreError, read_manifest
    node = description_dataset(cfg)
    if node is None:
        raise ToolError(f'{s.gpt4image_config}: its train set is no '
                        'DescriptionDataset (is it a GPT4Image config?)')
    store = osp.abspath(s.store or node.store)
    try:
        read_manifest(store)
    except StoreError as e:
        raise ToolError(f'{s.gpt4image_config}: store {e}') from None
    return store


def _class_names(s: ExperimentSettings) -> List[str]:
    from gpt4image_mm.datasets.from_config import build_split_dataset
    from gpt4image_mm.utils.keys import class_names
    ds = build_split_dataset(s.config, 'train', parse_options(s.cfg_options))
    return list(class_names(ds))


def build_stores(s: ExperimentSettings, cfg: Any) -> Dict[str, str]:
    """Each aligned arm's store (built by its registered builder)."""
    ctx = ArmContext(osp.abspath(s.work_dir), _class_names(s),
                     base_store(s, cfg), s.class_names)
    return {arm: osp.abspath(ARMS[arm].store(ctx)) for arm in s.arms
            if ARMS[arm].aligned}


def shot_indices(s: ExperimentSettings, k: int, seed: int = 0) -> List[int]:
    """``k`` images per class of the config's training set, seeded: the same
    subset for every arm and every training seed."""
    import numpy as np

    from gpt4image_mm.datasets.from_config import build_split_dataset
    ds = build_split_dataset(s.config, 'train', parse_options(s.cfg_options))
    labels = np.asarray(ds.get_gt_labels())
    given = ds._indices if hasattr(ds, '_indices') else None
    if isinstance(given, int):
        original = np.arange(given)
    elif given is not None:
        original = np.asarray(list(given))
    else:
        original = np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < k:
            raise ToolError(f'{s.config}: --shots {k}: class {int(c)} has '
                            f'only {len(rows)} training images')
        chosen += rng.choice(rows, k, replace=False).tolist()
    return sorted(int(original[i]) for i in chosen)


def arm_config(s: ExperimentSettings, cfgs: Dict[str, Any], arm: str,
               seed: int, shots: Optional[int], store: Optional[str],
               work_dir: str, indices: Optional[List[int]]) -> Any:
    """One run's config: the arm's config with the user's options, the
    seed, the store (and the class-level switches it needs), the subset."""
    from gpt4image_mm.engine.runner import sync_schedule_to_epochs
    cfg = copy.deepcopy(cfgs['aligned' if store else 'plain'])
    options = to_innermost(cfg, parse_options(
        [f'randomness.seed={seed}', *s.cfg_options]))
    old_epochs = (cfg.get('train_cfg') or {}).get('max_epochs')
    cfg.merge_from_dict(options)
    if not any(k.startswith('param_scheduler') for k in options):
        sync_schedule_to_epochs(cfg, old_epochs)
    if store:
        node = description_dataset(cfg)
        node.store = store
        if is_class_level(store):
            node.per_class = True
            cfg.model.align_loss.positives = 'label'
    if shots:
        cfg.merge_from_dict({f'{train_dataset_path(cfg)}.indices': indices})
        fit_schedule_to_subset(cfg, train_images(
            s.config, tuple(s.cfg_options)), len(indices))
    cfg.work_dir = work_dir
    return cfg


def run_dir(s: ExperimentSettings, arm: str, seed: int,
            shots: Optional[int]) -> str:
    parts = [s.work_dir, 'runs', arm] + ([f'shots{shots}'] if shots else [])
    return osp.join(*parts, f'seed{seed}')


def plan_runs(s: ExperimentSettings) -> List[Run]:
    """Write every run's config into its run dir; return the runs,
    full-data first, seed-major (the arms of a seed train side by side)."""

    from gpt4image_mm.utils.config import load_config
    s.work_dir = osp.abspath(s.work_dir)
    cfgs = {'plain': load_config(s.config),
            'aligned': load_config(s.gpt4image_config)}
    stores = build_stores(s, cfgs['aligned']) if any(
        ARMS[a].aligned for a in s.arms) else {}
    runs = []
    for shots in [None, *s.shots]:
        indices = shot_indices(s, shots) if shots else None
        for seed in range(s.seeds):
            for arm in s.arms:
                wd = run_dir(s, arm, seed, shots)
                store = stores.get(arm)
                cfg = arm_config(s, cfgs, arm, seed, shots, store, wd,
                                 indices)
                runs.append(_write_run(arm, seed, shots, cfg, wd, store))
    preflight_runs(runs)
    return runs


def _write_run(arm: str, seed: int, shots: Optional[int], cfg: Any,
               wd: str, store: Optional[str]) -> Run:
    """Keep the run dir when its key is unchanged, else start it afresh
    (only a dir this tool made: it holds ``plan.json``)."""
    text = cfg.pretty_text
    key = digest(dict(config=text, store=file_digest(osp.join(
        store, 'manifest.json')) if store else None))
    plan = osp.join(wd, 'plan.json')
    if _read_key(plan) != key:
        if osp.isfile(plan):
            shutil.rmtree(wd)
        elif osp.isdir(wd) and os.listdir(wd):
            raise ToolError(f'{wd}: exists and is not a run of this tool; '
                            'choose another --work-dir')
        os.makedirs(wd, exist_ok=True)
        atomic_write_text(osp.join(wd, 'config.py'), text)
        atomic_write_json(plan, dict(key=key, arm=arm, seed=seed,
                                     shots=shots), indent=2)
    return Run(arm, seed, shots, osp.join(wd, 'config.py'), wd, key, store)


def _read_key(path: str) -> Optional[str]:
    import json
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f).get('key')
    except (OSError, ValueError):
        return None
