"""Planning an experiment: every arm x seed (x images per class) becomes a
generated config kept in its run dir, which a user can rerun by hand::

    python tools/train.py WORK/runs/<arm>/seed<k>/config.py

Each run is keyed by the digest of its config text and of what its store
holds (its manifest without the time it was written): an unchanged run is
never trained twice; a changed one trains in its folder after the run it
supersedes is moved aside to ``seed<k>.superseded-<key>`` (never deleted;
moved back when its settings return). ``--report-only`` and
``--print-commands`` plan without changing any file.
"""
from __future__ import annotations

import argparse
import copy
import glob
import hashlib
import json
import logging
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from gpt4image_mm.experiment.arms import ARMS, ArmContext
from gpt4image_mm.experiment.cache import RunLock, digest, file_digest
from gpt4image_mm.experiment.schedule import fit_schedule_to_subset, train_images
from gpt4image_mm.utils.errors import ToolError
from gpt4image_mm.utils.files import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)
# planning modes: train (writes what it plans), or one of the read-only ones
TRAIN, PRINT, REPORT = 'train', 'print-commands', 'report-only'
# what a planned run folder holds before its run starts (all ours)
PLAN_FILES = ('config.py', 'plan.json', 'run.lock')
# manifest fields that say when a store was written, not what it holds
VOLATILE_MANIFEST_FIELDS = ('created',)


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
    run_timeout: Optional[float] = None  # s a run's log may stay unchanged
    supersede: bool = False  # --print-commands may move old runs aside


@dataclass
class Run:
    arm: str
    seed: int
    shots: Optional[int]  # None: the full training set
    config: str  # generated, in work_dir
    work_dir: str
    key: str  # digest of the config text and the store's identity
    store: Optional[str] = None
    epochs: Optional[int] = None  # train_cfg.max_epochs (progress lines)
    planned: bool = True  # its folder holds this plan (read-only modes)
    problem: Optional[str] = None  # why it must not train (one line)

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
        if run.arm not in checked and run.planned and not run.problem:
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


def build_stores(s: ExperimentSettings, cfg: Any,
                 mode: str = TRAIN) -> Dict[str, Optional[str]]:
    """Each aligned arm's store (built by its registered builder).

    Read-only modes build nothing they can avoid: an arm keeps the store its
    planned runs name when that store lies in the work dir (the tool built
    it); ``--print-commands`` builds a store no run names yet (a new file,
    nothing changed); ``--report-only`` leaves such an arm unplanned.
    """
    aligned = [arm for arm in s.arms if ARMS[arm].aligned]
    recorded = _recorded_stores(s.work_dir) if mode != TRAIN else {}
    out: Dict[str, Optional[str]] = {}
    ctx = None
    for arm in aligned:
        store = recorded.get(arm)
        if store and _inside(store, s.work_dir) and osp.isfile(
                osp.join(store, 'manifest.json')):
            out[arm] = store
            continue
        if mode == REPORT and _inside(store or '', s.work_dir):
            out[arm] = None
            continue
        if ctx is None:
            ctx = ArmContext(osp.abspath(s.work_dir), _class_names(s),
                             base_store(s, cfg), s.class_names)
        out[arm] = osp.abspath(ARMS[arm].store(ctx))
    return out


def _recorded_stores(work_dir: str) -> Dict[str, str]:
    """arm -> the store its planned runs name (their ``plan.json``)."""
    out: Dict[str, str] = {}
    for path in sorted(glob.glob(osp.join(work_dir, 'runs', '*', '**',
                                          'plan.json'), recursive=True)):
        plan = _read_plan(path)
        if plan.get('arm') and plan.get('store') and '.superseded-' not in \
                path:
            out.setdefault(plan['arm'], plan['store'])
    return out


def _inside(path: str, folder: str) -> bool:
    return bool(path) and osp.abspath(path).startswith(
        osp.abspath(folder).rstrip(os.sep) + os.sep)


def shot_indices(s: ExperimentSettings, k: int, seed: int = 0) -> List[int]:
    """``k`` images per class of the config's training set, seeded: the same
    subset for every arm and every training seed. Indices are positions in
    the full dataset (as the dataset's ``indices`` option takes them), drawn
    from the subset the config itself selects, if any."""
    import numpy as np

    from gpt4image_mm.datasets.from_config import build_split_dataset
    from gpt4image_mm.utils.config import load_config
    options = parse_options(s.cfg_options)
    cfg = load_config(s.config)
    cfg.merge_from_dict(to_innermost(cfg, options))
    path = train_dataset_path(cfg)
    given = cfg.get(path.split('.')[0])
    for part in path.split('.')[1:]:
        given = given[part]
    given = given.get('indices')
    ds = build_split_dataset(s.config, 'train',
                             {**options, f'{path}.indices': None})
    labels = np.asarray(ds.get_gt_labels())
    if given is None:
        original = np.arange(len(labels))
    elif isinstance(given, int):
        original = np.arange(min(given, len(labels)))
    else:
        original = np.asarray(list(given), dtype=np.int64)
    labels = labels[original]
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


def plan_runs(s: ExperimentSettings, mode: str = TRAIN) -> List[Run]:
    """Every run, full-data first, seed-major (the arms of a seed train
    side by side). ``TRAIN`` writes each run's config into its run dir
    (moving a superseded run aside); the read-only modes change no file
    (``--print-commands`` only adds the configs of runs never planned)."""

    from gpt4image_mm.utils.config import load_config
    s.work_dir = osp.abspath(s.work_dir)
    cfgs = {'plain': load_config(s.config),
            'aligned': load_config(s.gpt4image_config)}
    stores = build_stores(s, cfgs['aligned'], mode) if any(
        ARMS[a].aligned for a in s.arms) else {}
    identities = {arm: store_identity(store)
                  for arm, store in stores.items() if store}
    runs = []
    for shots in [None, *s.shots]:
        indices = shot_indices(s, shots) if shots else None
        for seed in range(s.seeds):
            for arm in s.arms:
                runs.append(_plan_run(s, cfgs, arm, seed, shots, indices,
                                      stores.get(arm), identities.get(arm),
                                      mode))
    blocked = [r.work_dir for r in runs if r.problem == SUPERSEDED_UNMOVED]
    if blocked:
        raise ToolError(
            f'{blocked[0]}' + (f' and {len(blocked) - 1} more run folder(s)'
                               if len(blocked) > 1 else '')
            + ': planned with other settings; --print-commands changes no '
            'file -- add --supersede to move them aside (to '
            '<folder>.superseded-<key>; make sure no job still writes them), '
            'or choose another --work-dir')
    if mode != REPORT:
        preflight_runs(runs)
    return runs


def _plan_run(s: ExperimentSettings, cfgs: Dict[str, Any], arm: str,
              seed: int, shots: Optional[int], indices: Optional[List[int]],
              store: Optional[str], identity: Optional[Dict[str, Any]],
              mode: str) -> Run:
    wd = run_dir(s, arm, seed, shots)
    config = osp.join(wd, 'config.py')
    if ARMS[arm].aligned and store is None:  # --report-only: never built
        return Run(arm, seed, shots, config, wd, '', planned=False)
    cfg = arm_config(s, cfgs, arm, seed, shots, store, wd, indices)
    run = Run(arm, seed, shots, config, wd, run_key(cfg, identity), store,
              (cfg.get('train_cfg') or {}).get('max_epochs'))
    return place_run(run, cfg.pretty_text, mode, s.supersede,
                     legacy_key(cfg, store))


SUPERSEDED_UNMOVED = 'its folder holds a run planned with other settings'


def run_key(cfg: Any, store_identity: Optional[Dict[str, Any]]) -> str:
    """A run's identity: its config text and what its store holds."""
    return digest(dict(config=cfg.pretty_text, store=store_identity))


def legacy_key(cfg: Any, store: Optional[str]) -> str:
    """The key earlier versions gave a run (the store's whole manifest,
    its write time included): their finished runs stay finished."""
    return digest(dict(config=cfg.pretty_text, store=file_digest(osp.join(
        store, 'manifest.json')) if store else None))


def store_identity(store: str) -> Dict[str, Any]:
    """What a store holds, by content: its manifest (encoder, width, keys
    digest, source descriptions' checksum...) without the time it was
    written -- embedding the same descriptions again changes no run's key.
    A store that names no source is identified by its vectors' digest."""
    from gpt4image_mm.datasets.store import EMBEDDINGS_FILE, read_manifest
    manifest = read_manifest(store)
    ident = {k: v for k, v in manifest.items()
             if k not in VOLATILE_MANIFEST_FIELDS}
    if not manifest.get('source_checksum'):
        ident['embeddings'] = file_digest(osp.join(store, EMBEDDINGS_FILE))
    return ident


def place_run(run: Run, text: str, mode: str, supersede: bool,
              legacy: Optional[str] = None) -> Run:
    """Make ``run``'s folder hold its plan, never losing another's: a run
    planned with other settings is moved aside (its outputs kept), one
    planned with these settings before is moved back, a folder this tool
    did not make is refused. A config edited after it was generated, or a
    folder another live trainer holds, is the run's ``problem``."""
    wd = run.work_dir
    plan = _read_plan(osp.join(wd, 'plan.json'))
    if plan.get('key') and plan.get('key') in (run.key, legacy):
        if plan['key'] != run.key and mode == TRAIN:
            atomic_write_json(osp.join(wd, 'plan.json'),
                              dict(plan, key=run.key), indent=2)
        run.problem = edited_config(run, plan, text)
        if run.problem is None and not osp.isfile(run.config) \
                and mode != REPORT:
            _write_plan(run, text)  # a deleted config: regenerated
        return run
    if not plan and osp.isdir(wd) and os.listdir(wd):
        raise ToolError(f'{wd}: exists and is not a run of this tool; '
                        'choose another --work-dir')
    holder = lock_holder(wd) if mode != REPORT else None
    if holder:
        run.problem = (f'{wd} is being trained by {holder}; wait for it to '
                       'finish or stop that process, then rerun')
        return run
    old = _superseded_dir(wd, run.key)
    may_move = mode == TRAIN or (mode == PRINT and supersede)
    if mode == REPORT or (plan and not may_move) or (
            not plan and old and not may_move):
        run.planned = False
        if mode == PRINT:
            run.problem = SUPERSEDED_UNMOVED
        return run
    if plan:
        _set_aside(wd, plan.get('key') or 'unknown')
    if old:
        os.rename(old, wd)
        logger.info('%s: moved back from %s (planned with these settings)',
                    wd, osp.basename(old))
        return place_run(run, text, mode, supersede, legacy)
    _write_plan(run, text)
    return run


def _write_plan(run: Run, text: str) -> None:
    os.makedirs(run.work_dir, exist_ok=True)
    atomic_write_text(run.config, text)
    atomic_write_json(osp.join(run.work_dir, 'plan.json'), dict(
        key=run.key, arm=run.arm, seed=run.seed, shots=run.shots,
        store=run.store, config_sha256=_sha256(text)), indent=2)


def edited_config(run: Run, plan: Dict[str, Any], text: str
                  ) -> Optional[str]:
    """Why the run's ``config.py`` must not train as its arm: edited by
    hand after the experiment wrote it. It is ours when its digest is the
    one ``plan.json`` recorded, or that of the copy MMEngine's Runner saved
    in ``<timestamp>/vis_data/config.py`` just before it rewrote
    ``config.py`` with the config it runs."""
    try:
        with open(run.config, encoding='utf-8') as f:
            now = f.read()
    except OSError:
        return None  # missing: regenerated
    ours = {plan.get('config_sha256') or _sha256(text)}
    for dumped in glob.glob(osp.join(run.work_dir, '*', 'vis_data',
                                     'config.py')):
        with open(dumped, encoding='utf-8') as f:
            ours.add(_sha256(f.read()))
    if _sha256(now) in ours:
        return None
    return (f'{run.config} was edited after the experiment generated it; '
            f'it would train as arm {run.arm!r} with other settings -- put '
            'the change in --cfg-options (every arm) or train that config '
            'by hand, and delete the file: the next run regenerates it')


def _set_aside(wd: str, old_key: str) -> None:
    """Move a superseded run to ``<wd>.superseded-<key>``; a folder that
    never started (only its plan) is just replaced."""
    if not [n for n in os.listdir(wd) if n not in PLAN_FILES]:
        for name in PLAN_FILES:
            if osp.exists(osp.join(wd, name)):
                os.remove(osp.join(wd, name))
        os.rmdir(wd)
        return
    dest, n = f'{wd}.superseded-{old_key}', 1
    while osp.exists(dest):
        n += 1
        dest = f'{wd}.superseded-{old_key}-{n}'
    os.rename(wd, dest)
    logger.warning('%s: planned with other settings; its run is kept in %s '
                   '(moved back if these settings return)', wd, dest)


def _superseded_dir(wd: str, key: str) -> Optional[str]:
    """A folder this run was set aside to, planned with ``key``."""
    path = f'{wd}.superseded-{key}'
    return path if _read_plan(osp.join(path, 'plan.json')).get(
        'key') == key else None


def lock_holder(wd: str) -> Optional[str]:
    """Who holds ``wd``'s run lock (a live trainer), or None."""
    return RunLock(wd).holder()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def _read_plan(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
