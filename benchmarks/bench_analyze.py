"""Peak memory and time of tools/analyze_descriptions.py at ImageNet size.

    python benchmarks/bench_analyze.py --n 1281167 --classes 1000 \\
        --store-dim 32 --dir /tmp/bench_analyze

Writes (unless present) a synthetic class-level descriptions file of ``--n``
records (~100 words each, one name of ``--classes`` classes per text; every
500th record a refusal, every 1000th an exact repeat) and, with
``--store-dim`` > 0, a store of that width (random unit vectors around a
per-class direction, so class signal exists). Then analyses them in a fresh
process (``--per-class``, no tokenizer: ``--encoder none``) and prints its
peak RSS, wall and CPU time and a few of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

# ~100 words: the paper's descriptions are ~100-150 words.
BODY = ('photographed outdoors in soft daylight, standing near the centre '
        'of the frame with a blurred green background of trees and grass; '
        'its shape, colour and texture are clearly visible, and a few '
        'details at the edges suggest a park or a garden in early autumn. '
        'The lighting is even, with gentle shadows on the left side, and '
        'the overall composition is calm and balanced, typical of an '
        'amateur photograph taken with a phone camera at eye level on a '
        'quiet afternoon without people nearby. Sample number')


def class_name(c: int) -> str:
    return f'species{c:04d}'


def write_descriptions(path: str, n: int, classes: int) -> None:
    per = -(-n // classes)
    with open(path, 'w', encoding='utf-8') as f:
        for i in range(n):
            key = f'class:{class_name(i // per)}#{i % per}'
            if i % 500 == 499:
                text = "I'm sorry, but I can't describe this image."
            elif i % 1000 == 0 and i:
                text = f'A {class_name(0)} {BODY} 0.'  # an exact repeat
            else:
                text = f'A {class_name(i // per)} {BODY} {i}.'
            f.write(json.dumps({'key': key, 'text': text,
                                'model': 'synthetic'}) + '\n')


def write_store(path: str, n: int, classes: int, dim: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    from gpt4image_mm.datasets.store import StoreWriter
    per = -(-n // classes)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    writer = StoreWriter(path, n, dim)
    for a in range(0, n, 65536):
        b = min(n, a + 65536)
        x = centres[np.arange(a, b) // per] + 1.5 * rng.standard_normal(
            (b - a, dim)).astype(np.float32)
        writer.rows[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    keys = [f'class:{class_name(i // per)}#{i % per}' for i in range(n)]
    writer.commit(keys, encoder='synthetic')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=1_281_167)  # ImageNet-1k train
    ap.add_argument('--classes', type=int, default=1000)
    ap.add_argument('--store-dim', type=int, default=32)
    ap.add_argument('--dir', default='/tmp/bench_analyze')
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    desc = os.path.join(a.dir, f'd{a.n}.jsonl')
    store = os.path.join(a.dir, f's{a.n}_{a.store_dim}')
    if not os.path.isfile(desc):
        write_descriptions(desc, a.n, a.classes)
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), 'tools', 'analyze_descriptions.py'),
        desc, '--per-class', '--encoder', 'none', '--no-progress',
        '--out', os.path.join(a.dir, 'report')]
    if a.store_dim:
        if not os.path.isdir(store):
            write_store(store, a.n, a.classes, a.store_dim)
        cmd += ['--store', store]
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    with open(os.path.join(a.dir, 'report', 'metrics.json')) as f:
        m = json.load(f)['descriptions']
    print(json.dumps({
        'records': a.n, 'classes': a.classes, 'store_dim': a.store_dim,
        'file_mb': round(os.path.getsize(desc) / 2**20),
        'peak_rss_mb': round(peak), 'seconds': round(seconds),
        'cpu_seconds': round(usage.ru_utime + usage.ru_stime),
        **{k: m.get(k) for k in (
            'refusals', 'exact_duplicates', 'near_duplicate_pairs',
            'names_own_class_share', 'loo_centroid_accuracy')}}))


if __name__ == '__main__':
    main()
