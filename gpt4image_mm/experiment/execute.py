"""Running the planned runs: ``tools/train.py`` then ``tools/test.py`` as
subprocesses, N at a time (one device each where there are several), or
printed as shell lines for a cluster's scheduler; then collecting them.

A finished run leaves ``done.json`` (its key and result); a run killed
mid-training resumes from its last checkpoint on the next call; a failed
run is reported with its log's last line and the others go on.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import os.path as osp
import queue
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Dict, List, Optional

from gpt4image_mm.experiment.cache import Marker, command, run_tool, thread_env
from gpt4image_mm.experiment.plan import Run

logger = logging.getLogger(__name__)
METRICS = 'test_metrics.json'


def _marker(run: Run) -> Marker:
    return Marker(osp.join(run.work_dir, 'done.json'), dict(key=run.key))


def _commands(run: Run, resume: bool) -> List[List[str]]:
    train = command('train') + [run.config, '--work-dir', run.work_dir] + (
        ['--resume'] if resume else [])
    test = command('test') + [
        run.config, '{checkpoint}', '--work-dir',
        osp.join(run.work_dir, 'test'), '--out',
        osp.join(run.work_dir, METRICS)]
    return [train, test]


def shell_line(run: Run) -> str:
    """One run as a shell line (``--print-commands``): resumable, so a
    requeued job continues from its last checkpoint."""
    train, test = _commands(run, resume=True)
    ckpt = f'"$(cat {shlex.quote(osp.join(run.work_dir, "last_checkpoint"))})"'
    test = ' '.join(ckpt if a == '{checkpoint}' else shlex.quote(a)
                    for a in test)
    return (f'cd {shlex.quote(os.getcwd())} && '
            f'{" ".join(map(shlex.quote, train))} && {test}')


def _scalars(work_dir: str) -> List[Dict[str, Any]]:
    """The records of the newest mmengine ``vis_data/scalars.json``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    out = []
    for path in files[-1:]:
        with open(path, encoding='utf-8') as f:
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


def _checkpoint(run: Run) -> Optional[str]:
    try:
        with open(osp.join(run.work_dir, 'last_checkpoint'),
                  encoding='utf-8') as f:
            ckpt = f.read().strip()
    except OSError:
        return None
    return ckpt if osp.isfile(ckpt) else None


def _logged_train_seconds(run: Run) -> Optional[float]:
    """A run made elsewhere: from mmengine's timestamp dir (the Runner's
    start) to its last checkpoint."""
    ckpt = _checkpoint(run)
    stamps = sorted(glob.glob(osp.join(run.work_dir, '2*_*')))
    if not ckpt or not stamps:
        return None
    try:
        start = datetime.strptime(osp.basename(stamps[0]), '%Y%m%d_%H%M%S')
    except ValueError:
        return None
    return max(0.0, osp.getmtime(ckpt) - start.timestamp())


def _result(run: Run, train_s: Optional[float]) -> Dict[str, Any]:
    with open(osp.join(run.work_dir, METRICS), encoding='utf-8') as f:
        top1 = float(json.load(f)['accuracy/top1'])
    return dict(arm=run.arm, seed=run.seed, shots=run.shots, top1=top1,
                config=run.config,
                train_seconds=None if train_s is None else round(train_s, 1),
                checkpoint=_checkpoint(run), curve=val_curve(run.work_dir))


def last_log_line(path: str) -> str:
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return f'{path}: no log'
    return lines[-1][-300:] if lines else f'{path}: empty log'


def run_one(run: Run, env: Dict[str, str]) -> Dict[str, Any]:
    """Train then test one run, resuming a killed one; its result, or a
    failure naming its log's last line."""
    marker = _marker(run)
    cached = marker.load()
    if cached is not None:
        return dict(cached, cached=True)
    train, test = _commands(run, resume=_checkpoint(run) is not None)
    start = time.time()
    log = osp.join(run.work_dir, 'train.log')
    try:
        run_tool(train, log=log, env=env, cwd=os.getcwd())
        train_s = time.time() - start
        log = osp.join(run.work_dir, 'test.log')
        ckpt = _checkpoint(run)
        run_tool([ckpt if a == '{checkpoint}' else a for a in test],
                 log=log, env=env, cwd=os.getcwd())
    except RuntimeError:
        return dict(arm=run.arm, seed=run.seed, shots=run.shots, failed=True,
                    log=log, error=last_log_line(log), cached=False)
    result = _result(run, train_s)
    marker.save(result)
    return dict(result, cached=False)


def collect(run: Run) -> Optional[Dict[str, Any]]:
    """``--report-only``: a run finished here or by a scheduler, else None."""
    marker = _marker(run)
    cached = marker.load()
    if cached is not None:
        return dict(cached, cached=True)
    if not osp.isfile(osp.join(run.work_dir, METRICS)):
        return None
    result = _result(run, _logged_train_seconds(run))
    marker.save(result)
    return dict(result, cached=True)


class Progress:
    """Runs done / running / left, and an ETA from the runs finished here."""

    def __init__(self, total: int, parallel: int):
        self.total, self.parallel = total, parallel
        self.done = self.running = 0
        self.seconds: List[float] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            self.running += 1

    def finish(self, run: Run, result: Dict[str, Any], took: float) -> None:
        with self.lock:
            self.running -= not result.get('cached')
            self.done += 1
            if not result.get('cached') and not result.get('failed'):
                self.seconds.append(took)
            left = self.total - self.done - self.running
            logger.info('[%d/%d done, %d running, %d left%s] %s: %s',
                        self.done, self.total, self.running, left,
                        self._eta(left), run.name, self._what(result))

    def _eta(self, left: int) -> str:
        if not self.seconds or not (left + self.running):
            return ''
        mean = sum(self.seconds) / len(self.seconds)
        waves = (left + self.running) / max(1, self.parallel)
        return f', ETA {waves * mean / 60:.0f} min'

    @staticmethod
    def _what(r: Dict[str, Any]) -> str:
        if r.get('failed'):
            return f'FAILED ({r["error"]}; log {r["log"]})'
        note = ' (cached)' if r.get('cached') else ''
        secs = (f', trained in {r["train_seconds"]:.0f} s'
                if r.get('train_seconds') is not None else '')
        return f'test top-1 {r["top1"]:.2f}{secs}{note}'


def _device_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_all(runs: List[Run], parallel: int,
            threads: Optional[int] = None) -> List[Dict[str, Any]]:
    """Every run, ``parallel`` at a time; cached runs are read back."""
    parallel = max(1, parallel)
    threads = threads or max(1, (os.cpu_count() or 1) // parallel)
    devices = _device_count()
    slots: queue.Queue = queue.Queue()
    for i in range(parallel):
        slots.put(i)
    progress = Progress(len(runs), parallel)

    def one(run: Run) -> Dict[str, Any]:
        slot = slots.get()
        env = thread_env(threads)
        if devices > 1:
            env['CUDA_VISIBLE_DEVICES'] = str(slot % devices)
        cached = _marker(run).load() is not None
        if not cached:
            progress.start()
        start = time.time()
        try:
            result = run_one(run, env)
        finally:
            slots.put(slot)
        progress.finish(run, result, time.time() - start)
        return result

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, runs))
