"""Training and testing every arm x seed through ``tools/train.py`` and
``tools/test.py``: one process per core, one thread each, the arms of a seed
next to each other so they train side by side under the same load."""
from __future__ import annotations

import glob
import json
import math
import os
import os.path as osp
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .arms import ARMS
from .cache import Marker, banner, digest, file_digest, run_tool, thread_env


@dataclass
class Job:
    arm: str
    seed: int
    config: str
    work_dir: str
    options: List[str]
    epochs: int
    iters_per_epoch: int
    config_digest: str  # computed up front: Config.fromfile is not
    # thread-safe (pkg_resources), and jobs run in threads
    store: Optional[str] = None  # the aligned arms' class targets


def _train_dataset_path(cfg: Any) -> str:
    """Dotted path of the innermost train dataset (below wrappers)."""
    path, ds = 'train_dataloader.dataset', cfg.train_dataloader.dataset
    while 'dataset' in ds:
        path, ds = f'{path}.dataset', ds.dataset
    return path


def _options(s: Any, cfg: Any, seed: int) -> List[str]:
    """``--cfg-options`` of one run: seed, data root, the settings'
    overrides; the same for every arm but the store."""
    ds = _train_dataset_path(cfg)
    opts = [f'randomness.seed={seed}'] + [
        f'{path}.data_root={s.data_root}' for path in (
            ds, 'val_dataloader.dataset', 'test_dataloader.dataset')]
    if s.num_train:
        opts.append(f'{ds}.indices={s.num_train}')
    if s.num_val:
        opts.append(f'val_dataloader.dataset.indices={s.num_val}')
    if s.num_test:
        opts.append(f'test_dataloader.dataset.indices={s.num_test}')
    if s.epochs:
        opts += [f'train_cfg.max_epochs={s.epochs}',
                 f'param_scheduler.T_max={s.epochs}']
    return opts + list(s.cfg_options)


def make_jobs(s: Any, arms: List[str], stores: Dict[str, str]) -> List[Job]:
    """Every arm for every seed, seed-major."""
    from mmengine.config import Config
    cfgs = {name: Config.fromfile(name) for name in
            (s.baseline_config, s.gpt4image_config)}
    jobs = []
    for seed in range(s.seeds):
        for arm in arms:
            config = (s.gpt4image_config if ARMS[arm].aligned
                      else s.baseline_config)
            cfg = cfgs[config]
            opts = _options(s, cfg, seed)
            store = stores.get(arm)
            if store:
                opts.append(f'train_dataloader.dataset.store={store}')
            num_train = s.num_train or cfg.get('num_train') or 60000
            jobs.append(Job(
                arm, seed, config, osp.join(s.work_dir, 'runs', arm,
                                            f'seed{seed}'), opts,
                s.epochs or cfg.train_cfg.max_epochs,
                math.ceil(num_train / cfg.train_dataloader.batch_size),
                digest(cfg.pretty_text), store))
    return jobs


def _scalars(work_dir: str) -> List[Dict[str, Any]]:
    """The records of the newest mmengine ``vis_data/scalars.json``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not files:
        return []
    out = []
    with open(files[-1], encoding='utf-8') as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line being written
    return out


def val_curve(work_dir: str) -> List[float]:
    """Validation top-1 per epoch (mmengine logs val records with step =
    epoch)."""
    curve: Dict[int, float] = {}
    for rec in _scalars(work_dir):
        if 'accuracy/top1' in rec:
            curve[int(rec['step'])] = float(rec['accuracy/top1'])
    return [curve[e] for e in sorted(curve)]


def _store_key(store: Optional[str]) -> Optional[str]:
    return file_digest(osp.join(store, 'manifest.json')) if store else None


def run_job(job: Job, threads: int) -> Dict[str, Any]:
    """Train then test one arm/seed; cached by a marker in its work dir."""
    marker = Marker(osp.join(job.work_dir, 'done.json'), dict(
        config=job.config_digest, options=job.options,
        store=_store_key(job.store)))
    cached = marker.load()
    if cached is not None:
        return dict(cached, cached=True)
    shutil.rmtree(job.work_dir, ignore_errors=True)
    os.makedirs(job.work_dir)
    env = thread_env(threads)
    start = time.time()
    run_tool([sys.executable, 'tools/train.py', job.config, '--work-dir',
              job.work_dir, '--cfg-options', *job.options],
             log=osp.join(job.work_dir, 'train.log'), env=env)
    train_s = time.time() - start
    with open(osp.join(job.work_dir, 'last_checkpoint'),
              encoding='utf-8') as f:
        ckpt = f.read().strip()
    metrics_file = osp.join(job.work_dir, 'test_metrics.json')
    run_tool([sys.executable, 'tools/test.py', job.config, ckpt,
              '--work-dir', osp.join(job.work_dir, 'test'), '--out',
              metrics_file, '--cfg-options', *job.options],
             log=osp.join(job.work_dir, 'test.log'), env=env)
    with open(metrics_file, encoding='utf-8') as f:
        top1 = float(json.load(f)['accuracy/top1'])
    result = dict(arm=job.arm, seed=job.seed, top1=top1,
                  train_seconds=round(train_s, 1), checkpoint=ckpt,
                  curve=val_curve(job.work_dir))
    marker.save(result)
    return dict(result, cached=False)


def _monitor(jobs: List[Job], stop: threading.Event) -> None:
    """A progress bar per *running* job (at most one per worker), fed by
    the runs' mmengine scalar logs; a finished run's bar goes away and its
    one-line result is printed."""
    from tqdm import tqdm
    bars: Dict[int, Any] = {}
    last: Dict[int, Tuple[int, int]] = {}
    try:
        while not stop.wait(2.0):
            for i, job in enumerate(jobs):
                finished = osp.isfile(osp.join(job.work_dir, 'done.json'))
                if finished:
                    if i in bars:
                        bars.pop(i).close()
                        tqdm.write(_finished_line(job))
                    continue
                recs = _scalars(job.work_dir) if osp.isdir(
                    job.work_dir) else []
                if not recs or last.get(i) == _progress(recs):
                    continue  # only print when something happened
                last[i] = _progress(recs)
                if i not in bars:
                    bars[i] = tqdm(total=job.epochs * job.iters_per_epoch,
                                   desc=f'{job.arm:9s} seed {job.seed}',
                                   unit='it', leave=False,
                                   dynamic_ncols=True, mininterval=5)
                _update(bars[i], recs)
    finally:
        for bar in bars.values():
            bar.close()


def _finished_line(job: Job) -> str:
    curve = val_curve(job.work_dir)
    last = f', last val top-1 {curve[-1]:.2f}' if curve else ''
    return f'{ARMS[job.arm].title} seed {job.seed}: trained{last}'


def _progress(recs: List[Dict[str, Any]]) -> Tuple[int, int]:
    return (max((r.get('iter', 0) for r in recs), default=0),
            sum('accuracy/top1' in r for r in recs))


def _update(bar: Any, recs: List[Dict[str, Any]]) -> None:
    bar.n = min(_progress(recs)[0], bar.total)
    curve = [r['accuracy/top1'] for r in recs if 'accuracy/top1' in r]
    if curve:
        bar.set_postfix_str(f'epoch {len(curve)} val top-1 {curve[-1]:.2f}',
                            refresh=False)
    bar.refresh()


def step_train(s: Any, arms: List[str], stores: Dict[str, str]
               ) -> List[Dict[str, Any]]:
    """Every run (cached ones are read back); then each aligned run's
    image -> class-target retrieval top-1 through its neck."""
    jobs = make_jobs(s, arms, stores)
    cpus = os.cpu_count() or 1
    workers = s.jobs or max(1, min(cpus, len(arms)))
    threads = max(1, cpus // workers)
    banner('4/5 training', f'{len(jobs)} runs ({", ".join(arms)} x '
           f'{s.seeds} seed(s)), {workers} at a time, {threads} thread(s) '
           f'each; logs in {s.work_dir}/runs/<arm>/seed<k>/train.log')
    stop = threading.Event()
    mon = threading.Thread(target=_monitor, args=(jobs, stop), daemon=True)
    mon.start()
    try:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda j: run_job(j, threads), jobs))
    finally:
        stop.set()
        mon.join()
    for job, r in zip(jobs, results):
        if job.store:
            r['neck_top1'] = neck_top1(job, r['checkpoint'])
        note = ' (cached)' if r['cached'] else ''
        print(f'{ARMS[r["arm"]].title:14s} seed {r["seed"]}: test top-1 '
              f'{r["top1"]:.2f}, trained in {r["train_seconds"]:.0f} s{note}')
    return results


def neck_top1(job: Job, ckpt: str) -> float:
    """Test top-1 of retrieving each test image's class target through the
    alignment neck (no classifier head): the class prototypes are the means
    of the arm's own store rows, so every aligned arm is measured against
    what it was trained to match."""
    marker = Marker(osp.join(job.work_dir, 'neck_top1.json'), dict(
        checkpoint=ckpt, size=osp.getsize(ckpt), options=job.options,
        store=_store_key(job.store)))
    cached = marker.load()
    if cached is not None:
        return cached['top1']
    top1 = 100 * retrieval_top1(job.config, ckpt, job.options, job.store)
    marker.save(dict(top1=top1))
    return top1


def retrieval_top1(config: str, ckpt: str, options: List[str],
                   store: str) -> float:
    """Share of test images whose nearest class prototype (cosine, in the
    text space the neck maps into) is their own class."""
    import numpy as np

    from gpt4image_mm.apis import TextQueryInferencer
    from gpt4image_mm.embedding.assets import minilm_dir
    cfg = _config_with(config, options)
    inferencer = TextQueryInferencer(cfg, ckpt, device='cpu',
                                     text_encoder=minilm_dir())
    feats, labels, names = inferencer.split_features('test')
    protos = class_prototypes(store, names)
    pred = (feats.numpy() @ protos.T).argmax(1)
    return float(np.mean(pred == np.asarray(labels)))


def class_prototypes(store: str, names: List[str]):
    """``C x D`` unit vectors: per class, the normalised mean of its rows."""
    import numpy as np

    from gpt4image_mm.datasets.store import EmbeddingStore
    from gpt4image_mm.keys import base_key, class_key
    st = EmbeddingStore(store)
    rows = np.asarray(st.embeddings, dtype=np.float32)
    bases = [base_key(k) for k in st.keys()]
    out = []
    for name in names:
        mine = [i for i, b in enumerate(bases) if b == class_key(name)]
        if not mine:
            raise ValueError(f'{store}: no row for class {name!r}')
        out.append(rows[mine].mean(0))
    protos = np.stack(out)
    return protos / np.linalg.norm(protos, axis=1, keepdims=True)


def _config_with(config: str, options: List[str]) -> Any:
    """The config as ``tools/*.py --cfg-options`` would make it."""
    import argparse

    from mmengine.config import Config, DictAction
    ns = argparse.Namespace()
    DictAction(option_strings=[], dest='o')(None, ns, list(options))
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(ns.o)
    return cfg
