"""Start-up time of the ``gpt4image`` command against Python itself.

    python benchmarks/bench_cli_startup.py --runs 10

Times ``gpt4image --help`` (as the console script runs it: ``from
gpt4image_mm.cli.main import main``), registering the plugin (what a
config's ``custom_imports`` pays, for comparison) and ``python -c pass``, each in a
fresh process, ``--runs`` times in turn; prints the median and the fastest
run of each and the ratio of the medians to ``python -c pass``, and the
peak RSS of one ``--help``. Run it on an idle machine: the goal is
``--help`` in at most 0.5 s there.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    'python -c pass': 'pass',
    'gpt4image --help': ('import sys; sys.argv = ["gpt4image", "--help"]; '
                         'from gpt4image_mm.cli.main import main; sys.exit(main())'),
    'register the plugin': ('from gpt4image_mm.utils import register_all_modules; '
                            'register_all_modules()'),
}


def run_once(code: str) -> float:
    """Wall seconds of one fresh ``python -c code`` (output discarded)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.perf_counter()
    subprocess.run([sys.executable, '-c', code], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--skip-package', action='store_true',
                        help='do not time registering the plugin (seconds each)')
    args = parser.parse_args()
    cases = {k: v for k, v in CASES.items()
             if not (args.skip_package and k == 'register the plugin')}
    times = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved: load changes hit every case
        for name, code in cases.items():
            times[name].append(run_once(code))
    base = statistics.median(times['python -c pass'])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f'{name:22s} median {med:6.3f} s  fastest {min(ts):6.3f} s  '
              f'x{med / base:5.1f} python -c pass')
    print(f'gpt4image --help peak RSS {help_peak_rss_mb():.0f} MB')


def help_peak_rss_mb() -> float:
    """Peak RSS of one ``gpt4image --help``: the only child of a fresh
    process, so no other child's peak is counted."""
    helps = CASES['gpt4image --help']
    code = ('import resource, subprocess, sys; subprocess.run([sys.executable,'
            f' "-c", {helps!r}], stdout=subprocess.DEVNULL)'
            '; print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)')
    out = subprocess.run([sys.executable, '-c', code], check=True,
                         env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True).stdout
    return int(out) / 1024  # ru_maxrss is in KiB on Linux

if __name__ == '__main__':
    main()
