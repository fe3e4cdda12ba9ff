"""Peak memory of reading a descriptions JSONL (streamed, never whole).

    python benchmarks/bench_descriptions_read.py --n 200000 --file /tmp/d.jsonl

Writes ``--n`` records of ~800 characters (ImageNet-style descriptions,
~167 MB for 200k) unless the file exists, then, in a fresh process, reads
it with :func:`gpt4image_mm.utils.descriptions.iter_records` and prints the peak
RSS growth over the process's peak before the read (after the imports) and
the peak of Python allocations during the read (tracemalloc). Run it with
``PYTHONPATH`` pointing at another checkout to measure that code instead.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

# ~130 words: the paper's descriptions are ~100-150 words.
TEXT = ('A small brown dog with a white patch on its chest sits on a green '
        'lawn in front of a wooden fence, looking at the camera. ') * 6


def write_file(path: str, n: int) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        for i in range(n):
            f.write(json.dumps({'key': f'n{i // 1300:08d}/{i:08d}.JPEG',
                                'text': TEXT, 'model': 'gpt-4o-mini',
                                'prompt_id': 'generic-v1',
                                'usage': {'prompt_tokens': 120,
                                          'completion_tokens': 180}}) + '\n')


def measure(path: str) -> None:
    import tracemalloc

    from gpt4image_mm.utils.descriptions import iter_records
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    n = sum(1 for _ in iter_records(path))
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({'records': n, 'file_mb': round(
        os.path.getsize(path) / 2**20, 1),
        # ru_maxrss is in KiB on Linux; 0 = below the imports' own peak
        'peak_rss_growth_mb': round((after - before) / 1024, 1),
        'python_alloc_peak_mb': round(traced_peak / 2**20, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=200_000)
    ap.add_argument('--file', default='/tmp/bench_descriptions.jsonl')
    ap.add_argument('--measure', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        return measure(a.file)
    if not os.path.exists(a.file):
        write_file(a.file, a.n)
    subprocess.run([sys.executable, __file__, '--file', a.file, '--measure'],
                   check=True)


if __name__ == '__main__':
    main()
