"""The embedding store at ImageNet-1k scale: wrapper start-up and worker memory.

Builds (once, under ``--root``) a synthetic 1,281,167 x 1024 fp16 store
(2.6 GB, streamed to disk with ``StoreWriter``: never two copies in RAM) whose
keys are ImageNet-like relative paths, and a fake file dataset with the same
samples (an mmpretrain ``BaseDataset`` with 1.28 M ``img_path`` records whose
items are tiny tensors, so image decoding does not hide the wrapper's cost).
Then, side by side in one process:

* start-up: building the dataset vs wrapping it in ``DescriptionDataset``
  (the key join), median of ``--startup-repeats``;
* memory: the same ``DataLoader`` (``--workers`` forked workers, random
  order) over the plain dataset and over the wrapper, interleaved
  ``--repeats`` times; after ``--batches`` batches every live worker's USS,
  PSS and the anonymous/file split of its private memory are read from
  ``/proc/<pid>/smaps_rollup`` (psutil for USS/PSS).

Goals: start-up < 10 s, at most 50 MB extra per worker.

    python benchmarks/bench_store_scale.py --root /tmp/g4i_scale
    python benchmarks/bench_store_scale.py --n 20000 --dim 64 --workers 2 \\
        --batches 8 --repeats 1 --root /tmp/g4i_small     # quick smoke run
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402
from mmengine.dataset import default_collate  # noqa: E402
from mmpretrain.datasets import BaseDataset  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402

from gpt4image_mm.utils import register_all_modules  # noqa: E402

register_all_modules()
from gpt4image_mm.datasets import DescriptionDataset, EmbeddingStore  # noqa
from gpt4image_mm.datasets.store import MANIFEST_FILE, StoreWriter, read_manifest  # noqa
from gpt4image_mm.utils.keys import dataset_keys  # noqa: E402

IMAGENET_TRAIN = 1_281_167
MB = 1024 * 1024


def imagenet_like_keys(n: int, classes: int = 1000) -> List[str]:
    """``n``~`nXXXXXXXX/nXXXXXXXX_<i>.JPEG`` keys spread over ``classes``."""
    per, extra = divmod(n, classes)
    keys = []
    for c in range(classes):
        wnid = f'n{1440764 + 7919 * c:08d}'
        keys.extend(f'{wnid}/{wnid}_{10000 + i}.JPEG'
                    for i in range(per + (c < extra)))
    return keys


class FakeImageFolder(BaseDataset):
    """ImageNet-shaped file dataset without files: ``img_path`` records whose
    items are an 8x8 tensor and the label (what a pipeline would yield)."""

    def __init__(self, keys: List[str], root: str, **kwargs: Any):
        self._keys = keys
        super().__init__(ann_file='', data_prefix=root,
                         metainfo=dict(classes=[f'c{i}' for i in range(1000)]),
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_prefix['img_path']
        return [dict(img_path=f'{root}/{k}', gt_label=i % 1000)
                for i, k in enumerate(self._keys)]

    def prepare_data(self, idx: int) -> dict:
        info = self.get_data_info(idx)
        return dict(inputs=torch.zeros(3, 8, 8, dtype=torch.uint8),
                    data_samples=DataSample().set_gt_label(info['gt_label']))


def build_store(path: str, keys: List[str], dim: int,
                chunk: int = 16384) -> float:
    """Stream random unit rows into a store; returns seconds (0: reused)."""
    if os.path.isfile(os.path.join(path, MANIFEST_FILE)):
        m = read_manifest(path)
        if m['count'] == len(keys) and m['dim'] == dim:
            return 0.0
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((4096, dim)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    pool = pool.astype(np.float16)
    writer = StoreWriter(path, len(keys), dim, overwrite=True)
    try:
        for start in range(0, len(keys), chunk):
            stop = min(start + chunk, len(keys))
            writer.rows[start:stop] = pool[rng.integers(0, len(pool),
                                                        stop - start)]
        # rows come from a finite unit-norm pool: skip the 2.6 GB NaN scan
        writer.commit(keys, encoder='synthetic-1024', check=False)
    except BaseException:
        writer.abort()
        raise
    return time.perf_counter() - t0


def _smaps(pid: int) -> Dict[str, float]:
    out = {}
    with open(f'/proc/{pid}/smaps_rollup') as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == 'kB':
                out[parts[0].rstrip(':')] = int(parts[1]) / 1024
    return out


def worker_memory(pids: List[int]) -> List[Dict[str, float]]:
    """USS/PSS (psutil) and anonymous vs file-backed memory per worker, MB."""
    rows = []
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        sm = _smaps(pid)
        rows.append(dict(uss=info.uss / MB, pss=info.pss / MB,
                         rss=info.rss / MB,
                         pss_anon=sm.get('Pss_Anon', float('nan')),
                         pss_file=sm.get('Pss_File', float('nan')),
                         private_dirty=sm.get('Private_Dirty', float('nan'))))
    return rows


def measure_loader(dataset: Any, workers: int, batches: int,
                   batch_size: int, seed: int) -> Dict[str, float]:
    """Iterate ``batches`` batches, then read every worker's memory."""
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers,
        sampler=torch.utils.data.RandomSampler(dataset, generator=gen),
        collate_fn=default_collate, prefetch_factor=2)
    it = iter(loader)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    secs = time.perf_counter() - t0
    mem = worker_memory([w.pid for w in it._workers])
    del it, loader
    gc.collect()
    summary = {k: statistics.median(r[k] for r in mem) for k in mem[0]}
    summary['uss_max'] = max(r['uss'] for r in mem)
    summary['seconds'] = secs
    return summary


def main(argv: List[str] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', default='/tmp/g4i_scale')
    p.add_argument('--n', type=int, default=IMAGENET_TRAIN)
    p.add_argument('--dim', type=int, default=1024)
    p.add_argument('--workers', type=int, default=8)
    p.add_argument('--batches', type=int, default=200,
                   help='batches per loader pass (all workers together)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--repeats', type=int, default=2,
                   help='interleaved plain/wrapped loader passes')
    p.add_argument('--startup-repeats', type=int, default=3)
    p.add_argument('--json', help='also write the results here')
    args = p.parse_args(argv)

    os.makedirs(args.root, exist_ok=True)
    store = os.path.join(args.root, f'store_{args.n}x{args.dim}')
    keys = imagenet_like_keys(args.n)
    built = build_store(store, keys, args.dim)
    size_gb = os.path.getsize(os.path.join(store, 'embeddings.npy')) / 1e9
    how = f'built in {built:.1f} s' if built else 'reused'
    print(f'store {store}: {args.n} x {args.dim} fp16, {size_gb:.2f} GB '
          f'({how})')
    img_root = os.path.join(args.root, 'train')

    build_s, wrap_s, wrap_cpu = [], [], []
    for _ in range(args.startup_repeats):
        t0 = time.perf_counter()
        plain = FakeImageFolder(keys, img_root)
        build_s.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        wrapped = DescriptionDataset(plain, store=store)
        wrap_s.append(time.perf_counter() - t0)
        wrap_cpu.append(time.process_time() - c0)
        assert len(wrapped) == args.n
    del keys
    t0 = time.perf_counter()
    EmbeddingStore(store).keys()
    t1 = time.perf_counter()
    dataset_keys(plain)
    parts = dict(store_keys_s=t1 - t0, dataset_keys_s=time.perf_counter() - t1)
    gc.collect()
    parent_rss = psutil.Process().memory_info().rss / MB

    runs: Dict[str, List[dict]] = {'plain': [], 'wrapped': []}
    for r in range(args.repeats):
        for name, ds in (('plain', plain), ('wrapped', wrapped)):
            runs[name].append(measure_loader(ds, args.workers, args.batches,
                                             args.batch_size, seed=r))

    def med(name: str, field: str) -> float:
        return statistics.median(x[field] for x in runs[name])

    res = dict(n=args.n, dim=args.dim, store_gb=size_gb,
               workers=args.workers, batches=args.batches,
               batch_size=args.batch_size, repeats=args.repeats,
               dataset_build_s=statistics.median(build_s),
               wrapper_startup_s=statistics.median(wrap_s),
               wrapper_startup_cpu_s=statistics.median(wrap_cpu),
               load_average=os.getloadavg(), cpus=os.cpu_count(),
               parent_rss_mb=parent_rss, **parts,
               plain=runs['plain'], wrapped=runs['wrapped'])
    for field in ('uss', 'pss', 'pss_anon', 'pss_file', 'private_dirty'):
        res[f'extra_{field}_mb'] = med('wrapped', field) - med('plain', field)

    print(f'\nstart-up (median of {args.startup_repeats}): dataset build '
          f'{res["dataset_build_s"]:.2f} s, DescriptionDataset wrap (key '
          f'join) {res["wrapper_startup_s"]:.2f} s wall, '
          f'{res["wrapper_startup_cpu_s"]:.2f} s CPU  [goal < 10 s]; of '
          f'which reading the store keys {parts["store_keys_s"]:.2f} s, '
          f'the dataset keys {parts["dataset_keys_s"]:.2f} s (load average '
          f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)')
    print(f'\nper worker, median over {args.workers} workers x '
          f'{args.repeats} passes of {args.batches} batches of '
          f'{args.batch_size} (MB):\n')
    print('| loader | USS | PSS | PSS anon | PSS file | private dirty | '
          'batches/s |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    for name in ('plain', 'wrapped'):
        rate = args.batches / med(name, 'seconds')
        print(f'| {name} | {med(name, "uss"):.1f} | {med(name, "pss"):.1f} | '
              f'{med(name, "pss_anon"):.1f} | {med(name, "pss_file"):.1f} | '
              f'{med(name, "private_dirty"):.1f} | {rate:.1f} |')
    print(f'| extra | {res["extra_uss_mb"]:+.1f} | {res["extra_pss_mb"]:+.1f}'
          f' | {res["extra_pss_anon_mb"]:+.1f} | {res["extra_pss_file_mb"]:+.1f}'
          f' | {res["extra_private_dirty_mb"]:+.1f} | |')
    print(f'\n[goal: extra <= 50 MB per worker]; parent RSS {parent_rss:.0f} '
          'MB')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == '__main__':
    main()
