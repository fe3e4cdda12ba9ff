"""Memory and time of importing another tool's captions at ImageNet size.

    python benchmarks/bench_import_map.py --n 1281167 --dir /tmp/imp

Writes (unless present) a synthetic source as other projects ship it: one
JSON object ``{"<file name>": "<caption>", ...}`` keyed by bare file names,
``--n`` entries of ~450 characters, and the dataset's key list
(``n<class>/<class>_<i>.JPEG``, 1000 folders as ImageNet's). Then, in fresh
processes, it measures (1) building the key index alone and (2) the whole
import (:func:`gpt4image_mm.embedding.map_import.import_onto_dataset`):
peak RSS and seconds. The import streams the source, so (2) should stay
close to (1): memory is bounded by the key index, not by the source.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CLASSES = 1000  # ImageNet-1k's folders
# ~75 words: a short multimodal-model caption
TEXT = ('A close-up photo of a {c}: the animal sits on a wooden floor next to '
        'a red blanket, its fur lit by soft window light, with a blurred '
        'living room behind it and a toy ball near its front paws. ') * 2


def key_of(i: int) -> str:
    c = i % CLASSES
    return f'n{c:08d}/n{c:08d}_{i}.JPEG'


def write_inputs(directory: str, n: int) -> None:
    os.makedirs(directory, exist_ok=True)
    keys = os.path.join(directory, 'keys.txt')
    source = os.path.join(directory, 'captions.json')
    if not os.path.exists(keys):
        with open(keys, 'w', encoding='utf-8') as f:
            f.writelines(key_of(i) + '\n' for i in range(n))
    if not os.path.exists(source):
        with open(source, 'w', encoding='utf-8') as f:
            f.write('{')
            for i in range(n):
                name = key_of(i).rsplit('/', 1)[1]
                f.write(('' if i == 0 else ',\n') + json.dumps(name) + ': '
                        + json.dumps(TEXT.format(c=i % CLASSES)))
            f.write('}\n')


def child(directory: str, mode: str) -> None:
    from gpt4image_mm.embedding.map_import import KeyIndex, import_onto_dataset
    with open(os.path.join(directory, 'keys.txt'), encoding='utf-8') as f:
        keys = [ln.rstrip('\n') for ln in f]
    t0 = time.perf_counter()
    if mode == 'index':
        KeyIndex(keys)
        result = {}
    else:
        rep = import_onto_dataset(os.path.join(directory, 'captions.json'),
                                  keys, os.path.join(directory, 'out.jsonl'),
                                  force=True)
        result = {'described': rep.described, 'by_name': rep.by_name}
    result.update(seconds=round(time.perf_counter() - t0, 1),
                  peak_rss_mb=round(resource.getrusage(
                      resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=1_281_167)
    ap.add_argument('--dir', default='/tmp/bench_import_map')
    ap.add_argument('--child', choices=('index', 'import'))
    args = ap.parse_args()
    if args.child:
        child(args.dir, args.child)
        return
    write_inputs(args.dir, args.n)
    size = os.path.getsize(os.path.join(args.dir, 'captions.json')) / 2**20
    print(f'source: {args.n} captions, {size:.0f} MB')
    for mode in ('index', 'import'):
        out = subprocess.run([sys.executable, __file__, '--dir', args.dir,
                              '--child', mode], capture_output=True,
                             text=True, check=True).stdout
        print(f'{mode}: {out.strip()}')


if __name__ == '__main__':
    main()
