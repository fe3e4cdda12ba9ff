"""Run the 2-rank gloo training of tests/test_dist_train.py N times, beside
a CPU-bound process, and count how many runs end cleanly.

    python tools/ci/dist_stress.py --runs 20            # docs/distributed.md
    python tools/ci/dist_stress.py --runs 5 --no-hog    # idle machine

Each run is ``torchrun --nproc_per_node 2 tools/train.py align.py
--launcher pytorch`` on the tiny project the tests use (12 images, a random
store), pre-flight checks on. A run counts as clean when torchrun exits 0
and no rank printed an abort ("terminate called", a fatal signal). The log
of every other run is kept under ``--keep`` for reading. Exit 0 only when
every run was clean.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABORTS = ('terminate called', 'Fatal Python error', 'Segmentation fault',
          'Aborted', 'SIGABRT', 'exitcode  : -')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _project(tmp: Path) -> None:
    """The tiny project of the tests (tests/helpers.py), built once."""
    sys.path[:0] = [str(ROOT / 'tests'), str(ROOT)]
    from helpers import write_tiny_project
    write_tiny_project(tmp)


def _hog() -> subprocess.Popen:
    """One process that keeps a core busy for as long as the runs last."""
    return subprocess.Popen([sys.executable, '-c', 'while True: pass'])


def _one_run(tmp: Path, i: int, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, '-m', 'torch.distributed.run',
           '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(_free_port()),
           str(ROOT / 'tools' / 'train.py'), 'align.py',
           '--launcher', 'pytorch', '--work-dir', str(tmp / f'work{i}'),
           '--cfg-options', 'train_dataloader.batch_size=2',
           'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
           'val_dataloader.batch_size=3']
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', type=int, default=20)
    p.add_argument('--no-hog', action='store_true',
                   help='no CPU-bound process beside the runs')
    p.add_argument('--keep', default=None,
                   help='folder for the logs of runs that were not clean')
    args = p.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(
                   [str(ROOT), os.environ.get('PYTHONPATH', '')]))
    hog = None if args.no_hog else _hog()
    clean = 0
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            _project(tmp)
            for i in range(args.runs):
                start = time.monotonic()
                proc = _one_run(tmp, i, env)
                log = proc.stdout + proc.stderr
                aborted = [a for a in ABORTS if a in log]
                ok = proc.returncode == 0 and not aborted
                clean += ok
                print(f'run {i + 1}/{args.runs}: exit {proc.returncode}'
                      f'{" aborted: " + ", ".join(aborted) if aborted else ""}'
                      f' ({time.monotonic() - start:.0f} s)', flush=True)
                if not ok and args.keep:
                    os.makedirs(args.keep, exist_ok=True)
                    Path(args.keep, f'run{i + 1}.log').write_text(log)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    print(f'{clean} of {args.runs} runs clean'
          f'{"" if args.no_hog else " beside a CPU-bound process"}')
    return 0 if clean == args.runs else 1


if __name__ == '__main__':
    sys.exit(main())
