"""How fast the analysis's report.html opens in a real browser, at scale.

    python benchmarks/bench_html.py --dir /tmp/bench_html [--opens 5]

Two pages, both written by ``gpt4image analyze`` (a fresh process each):

* the demo's shape: 40 class-level descriptions (10 Fashion-MNIST classes
  x 4, ``--per-class``, no images);
* 10,000 per-image descriptions over 1,000 classes (``--classes`` x
  ``--per-class-images`` PNGs of 64x64 in class folders, a CustomDataset
  config; every 30th text a refusal, so the flagged gallery is past its
  cap): 4 seeded samples per class and the first 200 flagged as
  thumbnails, 4,200 cards.

Each page is then opened ``--opens`` times in headless chromium (a new tab
each; tests/_browser.py drives it), timed from navigation to the load
event plus two painted frames. Prints the analysis's wall time, the
page's and its thumbnails' size, and the open times with their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests'))

FMNIST = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
          'Shirt', 'Sneaker', 'Bag', 'Ankle boot']
TEXT = ('{name} photographed flat on a plain background, seen from the '
        'front; its outline, folds and seams are visible, with a darker '
        'band near the bottom edge and soft shadows on the left. Sample {i}.')


def write_jsonl(path: str, recs) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        for r in recs:
            f.write(json.dumps(r) + '\n')


def demo_set(d: str) -> list:
    """40 class-level descriptions, as the demo's K=4 over 10 classes."""
    path = os.path.join(d, 'demo.jsonl')
    write_jsonl(path, [{'key': f'class:{n}#{k}',
                        'text': TEXT.format(name=n, i=k)}
                       for n in FMNIST for k in range(4)])
    return ['analyze', path, '--per-class', '--out',
            os.path.join(d, 'demo_report'), '--no-progress']


def large_set(d: str, classes: int, per_class: int) -> list:
    """Per-image descriptions of a CustomDataset folder of small PNGs."""
    from PIL import Image
    root = os.path.join(d, 'images')
    rng = np.random.default_rng(0)
    recs = []
    for c in range(classes):
        folder = os.path.join(root, f'c{c:04d}')
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            key = f'c{c:04d}/{i}.png'
            path = os.path.join(root, key)
            if not os.path.isfile(path):
                img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                Image.fromarray(img).save(path)
            n = len(recs)
            text = ("I'm sorry, but I can't describe this image."
                    if n % 30 == 29 else TEXT.format(name=f'c{c:04d}', i=i))
            recs.append({'key': key, 'text': text})
    path = os.path.join(d, 'large.jsonl')
    write_jsonl(path, recs)
    cfg = os.path.join(d, 'cfg.py')
    with open(cfg, 'w', encoding='utf-8') as f:
        f.write("train_dataloader = dict(dataset=dict(type='CustomDataset', "
                f"data_root={root!r}, pipeline=[]))\n")
    return ['analyze', path, '--config', cfg, '--out',
            os.path.join(d, 'large_report'), '--no-progress', '--no-figures']


def analyse(args: list) -> float:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, '-m', 'gpt4image_mm.cli', *args],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def folder_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(p, f))
               for p, _, fs in os.walk(path) for f in fs)


def open_times(browser, page: str, opens: int) -> tuple:
    """Seconds to open ``page`` ``opens`` times (thumbnails load lazily,
    as they scroll into view); the cards, and the images loaded once
    scrolled through."""
    times, facts = [], None
    for _ in range(opens):
        tab = browser.open('file://' + page, timeout=120)
        times.append(tab.load_seconds)
        widths = tab.load_all_images()
        facts = (tab.eval('document.querySelectorAll(".card").length'),
                 sum(w > 0 for w in widths), len(widths))
        assert tab.errors() == [], tab.errors()
        tab.close()
    return times, facts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dir', default='/tmp/bench_html')
    p.add_argument('--classes', type=int, default=1000)
    p.add_argument('--per-class-images', type=int, default=10)
    p.add_argument('--opens', type=int, default=5)
    a = p.parse_args()
    from _browser import Browser
    os.makedirs(a.dir, exist_ok=True)
    pages = {'demo (40 class-level)': demo_set(a.dir),
             f'{a.classes * a.per_class_images:,} per-image over '
             f'{a.classes:,} classes': large_set(a.dir, a.classes,
                                                 a.per_class_images)}
    rows = []
    with Browser() as browser:
        for name, args in pages.items():
            out = args[args.index('--out') + 1]
            wall = analyse(args)
            page = os.path.join(out, 'report.html')
            thumbs = os.path.join(out, 'thumbs')
            times, (cards, loaded, images) = open_times(browser, page,
                                                        a.opens)
            rows.append((name, wall, os.path.getsize(page),
                         folder_size(thumbs) if os.path.isdir(thumbs) else 0,
                         cards, loaded, images, times))
    base = statistics.median(rows[0][-1])
    print('| page | analyze (s) | report.html | thumbnails | cards | images '
          'loaded | open, first (s) | open, median (s) | vs demo |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    for name, wall, size, tsize, cards, loaded, images, times in rows:
        med = statistics.median(times)
        print(f'| {name} | {wall:.1f} | {size / 1e6:.2f} MB | '
              f'{tsize / 1e6:.1f} MB | {cards:,} | {loaded:,} / {images:,} | '
              f'{times[0]:.2f} | {med:.2f} | {med / base:.1f}x |')


if __name__ == '__main__':
    main()
