"""Start-up time of ``gpt4image`` and the ``tools/*.py`` scripts, side by
side, against Python itself.

    python benchmarks/bench_cli_startup.py --runs 10

Times ``python -c pass``, ``gpt4image --help`` (as the console script runs
it: ``from gpt4image_mm.cli.main import main``), every light ``python
tools/X.py ... --help`` (the documented spellings, first words included)
and registering the plugin (what a config's ``custom_imports`` pays, for
comparison), each in a fresh process, ``--runs`` rounds with the cases
interleaved so that load from elsewhere hits them all alike. Prints the
median and the fastest run of each, the ratio of the medians to ``python -c
pass`` and to ``gpt4image --help`` (goal: every script within 2x of it),
and the peak RSS of one run of each. Run it on an idle machine: the goal
for ``gpt4image --help`` is at most 0.5 s there.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELP = 'gpt4image --help'
PLUGIN = 'register the plugin'


def python(code: str) -> List[str]:
    return [sys.executable, '-c', code]


def tool(script: str, *args: str) -> List[str]:
    return [sys.executable, os.path.join(ROOT, 'tools', script), *args]


CASES: Dict[str, List[str]] = {
    'python -c pass': python('pass'),
    HELP: python('import sys; sys.argv = ["gpt4image", "--help"]; '
                 'from gpt4image_mm.cli.main import main; sys.exit(main())'),
    'tools/caption.py --help': tool('caption.py', '--help'),
    'tools/caption.py merge --help': tool('caption.py', 'merge', '--help'),
    'tools/embed.py --help': tool('embed.py', '--help'),
    'tools/embed.py import-map --help': tool('embed.py', 'import-map',
                                             '--help'),
    'tools/analyze_descriptions.py --help': tool('analyze_descriptions.py',
                                                 '--help'),
    'tools/query.py --help': tool('query.py', '--help'),
    'tools/train.py --help': tool('train.py', '--help'),
    'tools/test.py --help': tool('test.py', '--help'),
    'tools/experiment.py --help': tool('experiment.py', '--help'),
    'tools/strip_align.py --help': tool('strip_align.py', '--help'),
    PLUGIN: python('from gpt4image_mm.utils import register_all_modules; '
                   'register_all_modules()'),
}
ENV = dict(os.environ, PYTHONPATH=ROOT)


def run_once(cmd: List[str]) -> float:
    """Wall seconds of one fresh process (output discarded)."""
    start = time.perf_counter()
    subprocess.run(cmd, env=ENV, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def peak_rss_mb(cmd: List[str]) -> float:
    """Peak RSS of one run of ``cmd``: the only child of a fresh process,
    so no other child's peak is counted."""
    code = ('import resource, subprocess, sys; subprocess.run(sys.argv[1:], '
            'stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); '
            'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)')
    out = subprocess.run([sys.executable, '-c', code, *cmd], check=True,
                         env=ENV, capture_output=True, text=True).stdout
    return int(out) / 1024  # ru_maxrss is in KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--skip-package', action='store_true',
                        help='do not time registering the plugin (seconds '
                        'each)')
    args = parser.parse_args()
    cases = {k: v for k, v in CASES.items()
             if not (args.skip_package and k == PLUGIN)}
    times: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved: load changes hit every case
        for name, cmd in cases.items():
            times[name].append(run_once(cmd))
    median = {name: statistics.median(ts) for name, ts in times.items()}
    base, helps = median['python -c pass'], median[HELP]
    print(f'| case | median | fastest | x `python -c pass` | '
          f'x `{HELP}` | peak RSS |')
    print('|---|---|---|---|---|---|')
    slow = []
    for name, ts in times.items():
        ratio = median[name] / helps
        if name.startswith('tools/') and ratio > 2:
            slow.append(name)
        print(f'| `{name}` | {median[name]:.3f} s | {min(ts):.3f} s | '
              f'{median[name] / base:.1f} | {ratio:.2f} | '
              f'{peak_rss_mb(cases[name]):.0f} MB |')
    print(f'\ngoal: every tools/*.py --help within 2x of {HELP}: '
          + ('met' if not slow else f'NOT met by {", ".join(slow)}'))
    return 1 if slow else 0


if __name__ == '__main__':
    sys.exit(main())
