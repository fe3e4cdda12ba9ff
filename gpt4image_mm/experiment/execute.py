"""Running the planned runs: ``tools/train.py`` then ``tools/test.py`` as
subprocesses, N at a time (one device each where there are several), or
printed as shell lines for a cluster's scheduler; then collecting them.

A finished run leaves ``done.json`` (its key and result); a run killed
mid-training resumes from its last checkpoint on the next call (its
``train.log`` continued); a failed run -- or one whose log stays silent for
``--run-timeout`` seconds -- is reported with its log's last line and the
others go on. ``run.lock`` keeps one trainer per run folder; while runs
train, each reports its epoch, last validation top-1 and ETA.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import os.path as osp
import queue
import re
import shlex
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

from gpt4image_mm.experiment.cache import (
    CHILDREN,
    Marker,
    RunBusy,
    RunLock,
    command,
    run_tool,
    thread_env,
)
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
    return ckpt if ckpt and osp.isfile(ckpt) else None


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


def test_top1(run: Run) -> Optional[float]:
    """The run's test top-1 when its ``test_metrics.json`` is complete (the
    test writes it atomically, last): only then is the run finished."""
    try:
        with open(osp.join(run.work_dir, METRICS), encoding='utf-8') as f:
            return float(json.load(f)['accuracy/top1'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _result(run: Run, top1: float, train_s: Optional[float]
            ) -> Dict[str, Any]:
    return dict(arm=run.arm, seed=run.seed, shots=run.shots, top1=top1,
                config=run.config,
                train_seconds=None if train_s is None else round(train_s, 1),
                checkpoint=_checkpoint(run), curve=val_curve(run.work_dir))


def _failure(run: Run, error: str, log: str) -> Dict[str, Any]:
    return dict(arm=run.arm, seed=run.seed, shots=run.shots, failed=True,
                log=log, error=error, cached=False)


def last_log_line(path: str) -> str:
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return f'{path}: no log'
    return lines[-1][-300:] if lines else f'{path}: empty log'


def run_one(run: Run, env: Dict[str, str], timeout: Optional[float] = None,
            progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Train then test one run (holding its lock), resuming a killed one;
    its result, or a failure naming the reason or its log's last line."""
    marker = _marker(run)
    cached = marker.load()
    if cached is not None:
        return dict(cached, cached=True)
    if run.problem:
        return _failure(run, run.problem, run.config)
    try:
        with RunLock(run.work_dir) as lock:
            result = _train_and_test(run, env, timeout, lock, progress)
    except RunBusy as e:
        return _failure(run, str(e), osp.join(run.work_dir, 'train.log'))
    if not result.get('failed'):
        marker.save(result)
    return dict(result, cached=False)


def _train_and_test(run: Run, env: Dict[str, str], timeout: Optional[float],
                    lock: RunLock, progress: Optional[Progress]
                    ) -> Dict[str, Any]:
    train, test = _commands(run, resume=_checkpoint(run) is not None)
    start = time.time()
    log = osp.join(run.work_dir, 'train.log')

    def started(proc: subprocess.Popen) -> None:
        lock.name_holder(proc.pid)
        if progress is not None:
            progress.watch(run, log)

    try:
        if test_top1(run) is None:
            run_tool(train, log=log, env=env, cwd=os.getcwd(), append=True,
                     quiet_timeout=timeout, pass_fds=(lock.fd,),
                     on_start=started)
            ckpt = _checkpoint(run)
            if ckpt is None:
                return _failure(run, 'training ended without a checkpoint '
                                f'(no {run.work_dir}/last_checkpoint naming '
                                'an existing file: is the CheckpointHook '
                                'off or its interval past max_epochs?)', log)
            log = osp.join(run.work_dir, 'test.log')
            run_tool([ckpt if a == '{checkpoint}' else a for a in test],
                     log=log, env=env, cwd=os.getcwd(), append=True,
                     quiet_timeout=timeout, pass_fds=(lock.fd,),
                     on_start=lambda proc: lock.name_holder(proc.pid))
    except RuntimeError as e:
        why = str(e) if not str(e).startswith('command failed') \
            else last_log_line(log)
        return _failure(run, why, log)
    finally:
        if progress is not None:
            progress.unwatch(run)
    top1 = test_top1(run)
    if top1 is None:
        return _failure(run, f'the test wrote no complete {METRICS}', log)
    return _result(run, top1, time.time() - start)


def collect(run: Run) -> Optional[Dict[str, Any]]:
    """``--report-only`` (reads, writes nothing): a run finished here or by
    a scheduler, a run that must not train (its problem), else None."""
    cached = _marker(run).load() if run.planned else None
    if cached is not None:
        return dict(cached, cached=True)
    if run.problem and run.planned:
        return _failure(run, run.problem, run.config)
    top1 = test_top1(run) if run.planned else None
    if top1 is None:
        return None
    return dict(_result(run, top1, _logged_train_seconds(run)), cached=True)


TRAIN_LINE = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]'
                        r'(?:.*?\beta: ((?:\d+ days?, )?[\d:]+))?')
VAL_LINE = re.compile(r'Epoch\(val\)\s*\[(\d+)\].*?accuracy/top1: ([\d.]+)')


class LogWatch:
    """A training run's state, read from its ``train.log`` as it grows
    (mmengine's ``Epoch(train)`` and ``Epoch(val)`` lines)."""

    def __init__(self, run: Run, log: str):
        self.run, self.log = run, log
        self.offset = _size(log)  # earlier attempts' lines are not news
        self.start = time.monotonic()
        self.epoch = self.iter = self.iters = 0
        self.eta: Optional[str] = None
        self.val: Optional[Tuple[int, float]] = None
        self.shown: Optional[tuple] = None
        self.shown_at = 0.0

    def read(self) -> None:
        try:
            with open(self.log, 'rb') as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b'\n') + 1  # a line being written waits
        self.offset += end
        for line in data[:end].decode('utf-8', 'replace').splitlines():
            m = TRAIN_LINE.search(line)
            if m:
                self.epoch, self.iter, self.iters = map(int, m.groups()[:3])
                self.eta = m.group(4) or self.eta
            m = VAL_LINE.search(line)
            if m:
                self.val = (int(m.group(1)), float(m.group(2)))

    def news(self, min_gap: float, every: float) -> Optional[str]:
        """A progress line when the epoch or the validation changed (at
        most every ``min_gap`` s) or ``every`` s passed, else None."""
        self.read()
        now = time.monotonic()
        state = (self.epoch, self.val)
        if not self.epoch or now - self.shown_at < min_gap or (
                state == self.shown and now - self.shown_at < every):
            return None
        self.shown, self.shown_at = state, now
        return self.line(now)

    def line(self, now: float) -> str:
        epochs = self.run.epochs
        parts = [f'epoch {self.epoch}' + (f'/{epochs}' if epochs else '')
                 + f' (iter {self.iter}/{self.iters})']
        parts.append(f'val top-1 {self.val[1]:.2f} (epoch {self.val[0]})'
                     if self.val else 'no validation yet')
        eta = self.eta or self._estimate(now)
        if eta:
            parts.append(f'ETA {eta}')
        return ', '.join(parts)

    def _estimate(self, now: float) -> Optional[str]:
        if not self.run.epochs or not self.iters:
            return None
        done = (self.epoch - 1 + self.iter / self.iters) / self.run.epochs
        if done <= 0:
            return None
        left = (now - self.start) * (1 - done) / done
        return time.strftime('%H:%M:%S', time.gmtime(left))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class Progress:
    """Runs done / running / left with an ETA from the runs finished here,
    and while runs train, each one's epoch, last validation top-1 and ETA
    (read from its log every ``poll_s`` seconds)."""

    def __init__(self, total: int, parallel: int, poll_s: float = 2.0,
                 min_gap_s: float = 5.0, every_s: float = 60.0):
        self.total, self.parallel = total, parallel
        self.done = self.running = 0
        self.seconds: List[float] = []
        self.lock = threading.Lock()
        self.watches: Dict[str, LogWatch] = {}
        self.poll_s, self.min_gap_s, self.every_s = poll_s, min_gap_s, every_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self, run: Run) -> None:
        with self.lock:
            self.running += 1
            left = self.total - self.done - self.running
            logger.info('    %s: started (%d running, %d left; log %s)',
                        run.name, self.running, left,
                        osp.join(run.work_dir, 'train.log'))

    def watch(self, run: Run, log: str) -> None:
        with self.lock:
            self.watches[run.work_dir] = LogWatch(run, log)

    def unwatch(self, run: Run) -> None:
        with self.lock:
            self.watches.pop(run.work_dir, None)

    def tick(self) -> None:
        with self.lock:
            watches = list(self.watches.values())
        for w in watches:
            line = w.news(self.min_gap_s, self.every_s)
            if line:
                logger.info('    %s: %s', w.run.name, line)

    def __enter__(self) -> Progress:
        def loop() -> None:
            while not self._stop.wait(self.poll_s):
                self.tick()
        self._thread = threading.Thread(target=loop, daemon=True,
                                        name='experiment-progress')
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

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


def run_all(runs: List[Run], parallel: int, threads: Optional[int] = None,
            timeout: Optional[float] = None) -> List[Dict[str, Any]]:
    """Every run, ``parallel`` at a time; cached runs are read back. A
    stopped experiment (a signal) starts no further run."""
    parallel = max(1, parallel)
    threads = threads or max(1, (os.cpu_count() or 1) // parallel)
    devices = _device_count()
    slots: queue.Queue = queue.Queue()
    for i in range(parallel):
        slots.put(i)

    def one(run: Run, progress: Progress) -> Optional[Dict[str, Any]]:
        slot = slots.get()
        try:
            if CHILDREN.stopping:
                return None
            env = thread_env(threads)
            if devices > 1:
                env['CUDA_VISIBLE_DEVICES'] = str(slot % devices)
            cached = _marker(run).load() is not None
            if not cached:
                progress.start(run)
            start = time.time()
            result = run_one(run, env, timeout, progress)
        finally:
            slots.put(slot)
        progress.finish(run, result, time.time() - start)
        return result

    with Progress(len(runs), parallel) as progress:
        pool = ThreadPoolExecutor(parallel)
        try:
            futures = [pool.submit(one, run, progress) for run in runs]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
