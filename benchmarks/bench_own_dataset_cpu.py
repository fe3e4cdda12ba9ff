"""CPU time per training iteration of docs/own_dataset.md's recipe.

    python benchmarks/bench_own_dataset_cpu.py --sizes 224 64 --iters 4

Runs the page's step-1 block (the plain ResNet-18 config) for a generated
folder of 40 px images (2 classes, ``--iters`` + 1 batches of 32), then
``tools/train.py`` on it for one epoch on the CPU, and reads MMEngine's
per-iteration ``time`` from the log (window 1: each iteration alone). The
first iteration (warm-up) is left out; the figure is the median of the
others, and the page's run
(``EPOCHS=100`` on 1,000 images, 32 iterations an epoch) is extrapolated
from it -- timed iterations, not a full run.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
from _openai_server import make_images  # noqa: E402
from test_docs import bash_blocks  # noqa: E402

ITERS_PER_EPOCH, EPOCHS = 32, 100  # the page's example: 1,000 images


def step_one(page: str) -> str:
    """The page's first runnable block after the settings: the plain config."""
    return next(code for mark, code in bash_blocks(page)
                if mark is None and 'resnet18_mine.py' in code)


def iteration_times(size: int, iters: int, tmp: str) -> list:
    data, work = os.path.join(tmp, f'data{size}'), os.path.join(tmp, f'w{size}')
    make_images(os.path.join(data, 'train'), classes=('a', 'b'),
                per_class=16 * (iters + 1), size=(40, 40))
    make_images(os.path.join(data, 'val'), classes=('a', 'b'), per_class=2,
                size=(40, 40))
    env = dict(os.environ, DATA=data, WORK=work, SIZE=str(size),
               EPOCHS='1', PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES='')
    subprocess.run(['bash', '-c', 'set -euo pipefail\n' + step_one(
        os.path.join(ROOT, 'docs', 'own_dataset.md'))], cwd=ROOT, env=env,
        check=True)
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', os.path.join(work,
                                                        'resnet18_mine.py'),
         '--work-dir', os.path.join(work, 'run'), '--cfg-options',
         'default_hooks.logger.interval=1', 'log_processor.window_size=1',
         'train_cfg.val_interval=100'],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    times = [float(t) for t in re.findall(
        r'Epoch\(train\).*?\s time: ([0-9.]+)', proc.stdout + proc.stderr)]
    assert len(times) >= 2, (proc.stdout + proc.stderr)[-3000:]
    return times[1:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[224, 64])
    p.add_argument('--iters', type=int, default=4)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            ts = iteration_times(size, args.iters, tmp)
            med = statistics.median(ts)
            total = med * ITERS_PER_EPOCH * EPOCHS / 3600
            print(f'SIZE={size}: {med:.2f} s/iteration (median of '
                  f'{len(ts)}: {", ".join(f"{t:.2f}" for t in ts)}); '
                  f'EPOCHS={EPOCHS} x {ITERS_PER_EPOCH} iterations ~ '
                  f'{total:.1f} h', flush=True)


if __name__ == '__main__':
    main()
