"""Memory and time of importing another tool's captions at ImageNet size,
and how both scale with the source's size.

    python benchmarks/bench_import_map.py --n 1281167 --dir /tmp/imp
    python benchmarks/bench_import_map.py --scaling 128,1024 --dir /tmp/imp

Writes (unless present) a synthetic source as other projects ship it: one
JSON object ``{"<file name>": "<caption>", ...}`` keyed by bare file names,
``--n`` entries of ~450 characters, and the dataset's key list
(``n<class>/<class>_<i>.JPEG``, 1000 folders as ImageNet's). Then, in fresh
processes, it measures (1) building the key index alone and (2) the whole
import (:func:`gpt4image_mm.embedding.map_import.import_onto_dataset`):
peak RSS and seconds. The import streams the source, so (2) should stay
close to (1): memory is bounded by the key index, not by the source.

``--scaling A,B`` (MB) writes, for each size, a source of 4 KB captions in
two shapes and imports each in a fresh process: ``entries``, one entry per
image (``{"<file name>": "<caption>", ...}``: the source streams, so its
memory above ``index``, the dataset's key list and index alone, should not
grow with it), and ``value``, the same captions as one JSON
value (``{"<file name>": ["<caption>", ...]}``, one image with every
caption, ``--max-record-mb`` raised so it is read): decoding it must cost
time linear in its size. The ratios B/A of seconds and of peak RSS are
printed side by side.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import time

CLASSES = 1000  # ImageNet-1k's folders
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    if mode.startswith(('entries-', 'value-', 'index-')):
        scaled_child(directory, mode)
        return
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


LONG = ('A wide photo of a {c}: ' + TEXT * 9)[:4000]  # ~4 KB


def scaled_source(directory: str, shape: str, mb: int) -> str:
    """``entries-<mb>.json`` / ``value-<mb>.json`` (written once)."""
    path = os.path.join(directory, f'{shape}-{mb}.json')
    n = mb * 10**6 // (len(LONG) + 30)
    if os.path.exists(path):
        return path
    os.makedirs(directory, exist_ok=True)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        f.write('{' if shape == 'entries' else '{"n00000000_0.JPEG": [')
        for i in range(n):
            text = json.dumps(LONG.format(c=i % CLASSES))
            if shape == 'entries':
                name = json.dumps(key_of(i).rsplit('/', 1)[1])
                f.write(('' if i == 0 else ',\n') + f'{name}: {text}')
            else:
                f.write(('' if i == 0 else ',\n') + text)
        f.write('}\n' if shape == 'entries' else ']}\n')
    os.replace(path + '.tmp', path)
    return path


def scaled_child(directory: str, mode: str) -> None:
    """Import ``<shape>-<mb>.json`` onto as many keys as it has entries
    (``index-<mb>``: only build those keys and their index)."""
    from gpt4image_mm.embedding.map_import import KeyIndex, import_onto_dataset
    shape, mb = mode.split('-')
    src = os.path.join(directory, f'{mode}.json')
    n = int(mb) * 10**6 // (len(LONG) + 30)
    keys = [key_of(i) for i in range(1 if shape == 'value' else n)]
    t0 = time.perf_counter()
    if shape == 'index':
        KeyIndex(keys)
        print(json.dumps({'keys': n, 'peak_rss_mb': round(resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
        return
    limit = {'max_record': 4 << 30} if 'max_record' in inspect.signature(
        import_onto_dataset).parameters else {}  # a --baseline tree has none
    rep = import_onto_dataset(src, keys, os.path.join(directory, 'out.jsonl'),
                              force=True, **limit)
    print(json.dumps({'descriptions': rep.descriptions,
                      'seconds': round(time.perf_counter() - t0, 1),
                      'peak_rss_mb': round(resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def scaling(directory: str, sizes: str, shapes: str) -> None:
    """Each shape at both sizes; ``index`` is the key list and index alone
    for the entries shape (what its import needs besides the stream)."""
    small, large = (int(x) for x in sizes.split(','))
    for shape in shapes.split(','):
        res = {}
        for mb in (small, large):
            if shape != 'index':
                scaled_source(directory, shape, mb)
            out = subprocess.run(
                [sys.executable, __file__, '--dir', directory, '--child',
                 f'{shape}-{mb}'], capture_output=True, text=True,
                check=True).stdout
            res[mb] = json.loads(out)
            print(f'{shape} {mb} MB: {out.strip()}', flush=True)
        ratio = {k: round(res[large][k] / max(res[small][k], 1e-9), 2)
                 for k in ('seconds', 'peak_rss_mb') if k in res[small]}
        print(f'{shape}: {large} MB / {small} MB = {ratio}', flush=True)


def baseline(directory: str, sizes: str, tree: str) -> None:
    """The smaller ``value`` source imported by the code in ``tree`` (a
    checkout of an older version), then by this one, one after the other."""
    mb = int(sizes.split(',')[0])
    scaled_source(directory, 'value', mb)
    for name, path in (('baseline', tree), ('this tree', ROOT)):
        out = subprocess.run(
            [sys.executable, __file__, '--dir', directory, '--child',
             f'value-{mb}'], capture_output=True, text=True, check=True,
            env=dict(os.environ, PYTHONPATH=path)).stdout
        print(f'value {mb} MB, {name}: {out.strip()}', flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=1_281_167)
    ap.add_argument('--dir', default='/tmp/bench_import_map')
    ap.add_argument('--child')
    ap.add_argument('--scaling', metavar='A,B',
                    help='source sizes in MB, e.g. 128,1024')
    ap.add_argument('--shapes', default='index,entries,value',
                    help='--scaling: which of index, entries, value')
    ap.add_argument('--baseline', metavar='TREE',
                    help='--scaling: instead, import the smaller value source'
                    ' with the package in TREE (an older checkout), then '
                    'with this one')
    args = ap.parse_args()
    if args.child:
        child(args.dir, args.child)
        return
    if args.scaling and args.baseline:
        baseline(args.dir, args.scaling, args.baseline)
        return
    if args.scaling:
        scaling(args.dir, args.scaling, args.shapes)
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
