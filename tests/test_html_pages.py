"""The analysis's and the experiment's report.html, opened in a real
headless browser (Debian's chromium over the DevTools protocol,
tests/_browser.py): no console error, every thumbnail loaded, the filters
change what is shown, hostile descriptions show as text and run nothing,
no request leaves the page's folder; a screenshot of each page is saved.

``UPDATE_DOC_IMAGES=1`` also copies the screenshots to docs/images/ (the
pictures in docs/analysis.md and docs/experiment.md).
"""
import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from _browser import CHROMIUM, Browser
from conftest import ROOT, make_image_folder, random_store

FMNIST = '/usr/share/datasets/fashion-mnist'
FMNIST_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']
FOLDERS = ['tshirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal',
           'shirt', 'sneaker', 'bag', 'ankle_boot']
HOSTILE = ('<script>window.__pwned = 1</script>'
           '<img src=x onerror="window.__pwned = 2">'
           '<a href="javascript:window.__pwned = 3">click</a>'
           '<img src="http://127.0.0.1:{port}/beacon.png"> a shirt')


@pytest.fixture(scope='module')
def browser():
    if CHROMIUM is None:
        pytest.skip('chromium is not installed (`make data` installs the '
                    'Debian package when run as root)')
    with Browser() as b:
        yield b


@pytest.fixture
def listener():
    """A local HTTP server: a page that asked anything of it leaked."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


def _fashion_folder(root: Path, per_class: int = 3) -> list:
    """Real Fashion-MNIST test images as a class-folder dataset when the
    Debian package is there (the demo's data), else coloured squares."""
    from PIL import Image
    images = os.path.join(FMNIST, 't10k-images-idx3-ubyte.gz')
    labels = os.path.join(FMNIST, 't10k-labels-idx1-ubyte.gz')
    if not (os.path.isfile(images) and os.path.isfile(labels)):
        return make_image_folder(root, per_class=per_class,
                                 size=28, classes=FOLDERS)
    with gzip.open(images) as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(
            -1, 28, 28)
    with gzip.open(labels) as f:
        lab = np.frombuffer(f.read(), np.uint8, offset=8)
    keys = []
    for c, name in enumerate(FOLDERS):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, idx in enumerate(np.flatnonzero(lab == c)[:per_class]):
            Image.fromarray(255 - pixels[idx]).save(root / name / f'{i}.png')
            keys.append(f'{name}/{i}.png')
    return sorted(keys)


def _per_image_set(tmp: Path, port: int):
    """A per-image set over 10 classes: plain descriptions, a refusal, an
    empty text, another class named, a failure, a duplicate, a planted
    hostile description and a corrupt image; a config and a store."""
    keys = _fashion_folder(tmp / 'imgs')
    (tmp / 'cfg.py').write_text(
        "train_dataloader = dict(dataset=dict(type='CustomDataset', "
        f"data_root='{tmp / 'imgs'}', pipeline=[]))\n")
    (tmp / 'names.json').write_text(json.dumps(dict(zip(FOLDERS,
                                                        FMNIST_NAMES))))
    texts = {k: f'A grey {FMNIST_NAMES[FOLDERS.index(k.split("/")[0])]} '
             f'photographed flat on a white background, item {i}.'
             for i, k in enumerate(keys)}
    texts['shirt/0.png'] = HOSTILE.format(port=port)
    texts['bag/1.png'] = "I'm sorry, but I can't describe this image."
    texts['coat/2.png'] = '...'
    texts['dress/1.png'] = 'A dress, or maybe a Coat, hanging on a rail.'
    texts['sneaker/2.png'] = texts['sneaker/1.png']
    recs = [{'key': k, 'text': t} for k, t in texts.items()
            if k != 'trouser/2.png']
    recs.append({'key': 'trouser/2.png', 'error': 'timeout <b>late</b>'})
    (tmp / 'd.jsonl').write_text(''.join(json.dumps(r) + '\n'
                                         for r in recs))
    random_store(tmp / 'store', [k for k in keys if k != 'trouser/2.png'])
    (tmp / 'imgs' / 'bag' / '2.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 64)
    return keys


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, '-m', 'gpt4image_mm.cli', *args],
                          capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def _visible(tab, selector):
    return tab.eval(f'[...document.querySelectorAll("{selector}")]'
                    '.filter(e => e.offsetParent !== null).length')


def _select(tab, select_id, value):
    tab.eval(f'(() => {{ const s = document.getElementById("{select_id}");'
             f' s.value = {json.dumps(value)};'
             ' s.dispatchEvent(new Event("change")); return 1; })()')


def _shown_as_text(tab, key):
    """The description on ``key``'s card as the reader sees it (scrolled
    into view), checked to be one text node, no markup."""
    return tab.eval(f'''(() => {{
      const card = [...document.querySelectorAll(".card")].find(
        c => c.querySelector("code").textContent === {json.dumps(key)});
      card.scrollIntoView();
      const p = card.querySelector(".text");
      return p.childNodes.length === 1 && p.firstChild.nodeType === 3
        ? p.innerText : "markup: " + p.innerHTML;
    }})()''')


def _assert_nothing_ran_or_left(tab, folder: Path, hits):
    assert tab.errors() == []
    assert tab.eval('typeof window.__pwned') == 'undefined'
    assert tab.eval('document.querySelectorAll("[onerror]").length') == 0
    assert tab.eval('document.querySelectorAll(\'a[href^="javascript"]\')'
                    '.length') == 0
    prefix = folder.resolve().as_uri() + '/'
    assert all(u.startswith(prefix) for u in tab.requests()), tab.requests()
    assert hits == []


def _doc_image(shot: Path, name: str):
    if os.environ.get('UPDATE_DOC_IMAGES') == '1':
        from PIL import Image
        img = Image.open(shot).convert('RGB')
        img = img.quantize(colors=128)
        img.save(ROOT / 'docs' / 'images' / name, optimize=True)


def test_analysis_page_per_image(tmp_path, browser, listener):
    """Thumbnails beside descriptions, the flagged gallery with reasons,
    classes and nearest other class, filters, and a hostile description
    shown as text."""
    port, hits = listener
    keys = _per_image_set(tmp_path, port)
    out = tmp_path / 'report'
    stdout = _run('analyze', str(tmp_path / 'd.jsonl'), '--config',
                  str(tmp_path / 'cfg.py'), '--class-names',
                  str(tmp_path / 'names.json'), '--store',
                  str(tmp_path / 'store'), '--out', str(out), '--no-progress')
    page = out / 'report.html'
    assert f'page: {page}' in stdout
    thumbs = sorted((out / 'thumbs').iterdir())
    # one thumbnail per shown image (4 samples a class, 3 exist, and the
    # flagged), none of the corrupt one
    assert len(thumbs) == len(keys) - 1
    made = {p: p.stat().st_mtime_ns for p in thumbs}
    tab = browser.open(page.as_uri())
    _assert_nothing_ran_or_left(tab, out, hits)
    sizes = tab.load_all_images()
    cards = tab.eval('document.querySelectorAll(".card").length')
    assert all(w > 0 for w in sizes)  # the figures and every thumbnail
    assert tab.eval('document.querySelectorAll(".card img").length') == \
        cards - 1  # every card but the corrupt image's
    assert _shown_as_text(tab, 'shirt/0.png') == HOSTILE.format(port=port)
    assert _shown_as_text(tab, 'trouser/2.png') == 'timeout <b>late</b>'
    text = tab.eval('document.body.textContent')
    for reason in ('refusal', 'empty (no letter or digit)',
                   'names another class', 'exact duplicate',
                   'failed (no description)'):
        assert reason in text
    assert 'nearest other class: ' in text
    assert 'bag/2.png: cannot read image' in text
    assert 'most confused with' in text
    all_cards = _visible(tab, '.card')
    _select(tab, 'f-reason', 'refusal')
    assert _visible(tab, '.card') == 1
    assert "I'm sorry" in tab.eval('[...document.querySelectorAll(".card")]'
                                   '.find(e => !e.hidden).innerText')
    _select(tab, 'f-reason', '')
    _select(tab, 'f-class', str(FOLDERS.index('sneaker')))
    shown = tab.eval('[...document.querySelectorAll(".card")].filter(e => '
                     'e.offsetParent !== null).map(e => e.dataset.class)')
    assert shown and set(shown) == {str(FOLDERS.index('sneaker'))}
    assert len(shown) < all_cards
    _select(tab, 'f-class', '')
    assert _visible(tab, '.card') == all_cards
    tab.eval('document.querySelector(".filters").scrollIntoView()')
    tab.screenshot(str(tmp_path / 'analysis.png'))
    assert (tmp_path / 'analysis.png').stat().st_size > 10_000
    _doc_image(tmp_path / 'analysis.png', 'analysis_page.png')
    # a second run makes no thumbnail again
    _run('analyze', str(tmp_path / 'd.jsonl'), '--config',
         str(tmp_path / 'cfg.py'), '--out', str(out), '--no-progress')
    assert {p: p.stat().st_mtime_ns for p in thumbs} == made


def test_analysis_page_class_level(tmp_path, browser, listener):
    """Class-level descriptions (no images): the descriptions per class,
    a hostile one as text, and no image element but the figures."""
    port, hits = listener
    recs = [{'key': f'class:{n}#{k}', 'text': f'A {n} seen from above, '
             f'variant {k}.'} for n in ('cat', 'dog', 'ship') for k in range(4)]
    recs[1]['text'] = HOSTILE.format(port=port)
    recs.append({'key': 'class:dog#9', 'error': 'HTTP 500'})
    (tmp_path / 'c.jsonl').write_text(''.join(json.dumps(r) + '\n'
                                              for r in recs))
    out = tmp_path / 'report'
    _run('analyze', str(tmp_path / 'c.jsonl'), '--per-class', '--out',
         str(out), '--no-progress', '--no-figures')
    tab = browser.open((out / 'report.html').as_uri())
    _assert_nothing_ran_or_left(tab, out, hits)
    assert tab.eval('document.images.length') == 0
    assert tab.eval('document.querySelectorAll("section.cls").length') == 3
    assert _shown_as_text(tab, 'class:cat#1') == HOSTILE.format(port=port)
    assert 'A ship seen from above, variant 3.' in tab.eval(
        'document.body.textContent')
    assert not (out / 'thumbs').exists()
    # were escaping ever to fail, the policy still blocks: markup added
    # to the page loads nothing remote and runs no inline handler
    tab.eval(f'''(() => {{ document.body.insertAdjacentHTML("beforeend",
      '<img src="http://127.0.0.1:{port}/leak.png">' +
      '<img src="nope.png" onerror="window.__pwned = 5">'); return 1; }})()''')
    tab.eval('new Promise(r => setTimeout(r, 500))')
    assert tab.eval('typeof window.__pwned') == 'undefined'
    assert hits == []
    assert any('Content Security Policy' in e for e in tab.errors())


def _experiment(tmp: Path, port: int):
    """An experiment's work dir as a finished run leaves it (configs,
    logs, metrics, curves), three seeds of two arms and a failed run whose
    log line is hostile; the report.md text from the report writer's own
    tables."""
    from gpt4image_mm.experiment.plan import ExperimentSettings, Run
    from gpt4image_mm.experiment.report import (
        arm_table,
        by_arm,
        comparison_table,
        plot_curves,
        seed_table,
    )
    s = ExperimentSettings(config='plain.py', gpt4image_config='g.py',
                           work_dir=str(tmp / 'exp'), arms=[
                               'baseline', 'gpt4image', 'classname'],
                           seeds=3, title='Fashion-MNIST & <friends>')
    runs, results = [], []
    rng = np.random.default_rng(0)
    for arm, gain in (('baseline', 0.0), ('gpt4image', 0.6),
                      ('classname', 0.3)):
        for seed in range(3):
            wd = tmp / 'exp' / 'runs' / arm / f'seed{seed}'
            wd.mkdir(parents=True)
            (wd / 'config.py').write_text(f"_base_ = ['../{arm}.py']\n")
            (wd / 'train.log').write_text('epoch 1 ... done\n')
            run = Run(arm, seed, None, str(wd / 'config.py'), str(wd),
                      f'{arm}{seed}')
            runs.append(run)
            if arm == 'classname' and seed == 2:
                results.append(dict(arm=arm, seed=seed, shots=None,
                                    failed=True, log=str(wd / 'train.log'),
                                    error='<img src=x onerror="window.'
                                    '__pwned = 4"> CUDA out of memory'))
                continue
            (wd / 'test.log').write_text('accuracy/top1: 85\n')
            top1 = 85 + gain + float(rng.normal(0, 0.2))
            (wd / 'test_metrics.json').write_text(json.dumps(
                {'accuracy/top1': top1}))
            curve = [85 - 12 * 0.5 ** e + gain + float(rng.normal(0, 0.1))
                     for e in range(8)]
            results.append(dict(arm=arm, seed=seed, shots=None, top1=top1,
                                config=run.config, train_seconds=60.0,
                                checkpoint=None, curve=curve))
    ok = [r for r in results if not r.get('failed')]
    by = by_arm(s.arms, ok)
    cost = {a: dict(params=1.2e6, flops=3.4e7, train_params=1.5e6)
            for a in s.arms}
    plot_curves(s.arms, ok, os.path.join(s.work_dir, 'curves.png'), s.title)
    lines = [f'# {s.title}', '', f'- plain config: `{s.config}`', '',
             *arm_table(s.arms, by, cost), '',
             *comparison_table(s.arms, by, 'one seed'), '',
             *seed_table(s.arms, by), '',
             '![validation top-1 per epoch](curves.png)', '',
             f'See [the notes](javascript:alert({port})).', '']
    return s, runs, results, '\n'.join(lines)


def test_experiment_page(tmp_path, browser, listener, caplog):
    """The arms table, the forest plot against zero, the curves, links to
    every run's config, logs and metrics; hostile texts run nothing."""
    import logging

    from gpt4image_mm.experiment.html import write_experiment_page
    port, hits = listener
    s, runs, results, text = _experiment(tmp_path, port)
    with caplog.at_level(logging.INFO, 'gpt4image_mm.experiment'):
        page = Path(write_experiment_page(s, runs, results, text))
    assert page == tmp_path / 'exp' / 'report.html'
    assert f'page: {page}' in caplog.messages  # the narration shows it
    tab = browser.open(page.as_uri())
    _assert_nothing_ran_or_left(tab, tmp_path / 'exp', hits)
    assert tab.eval('document.scripts.length') == 0
    assert tab.load_all_images()[0] > 0
    body = tab.eval('document.body.innerText')
    assert 'Fashion-MNIST & <friends>' in body
    assert 'CUDA out of memory' in body and '<img src=x' in body
    assert tab.eval('document.querySelector("th").textContent') == 'arm'
    # forest plot: one mean per comparison, its interval, a zero line
    assert tab.eval('document.querySelectorAll("svg circle").length') == 3
    assert tab.eval('document.querySelectorAll("svg text")[0]'
                    '.textContent') == '0'
    hrefs = tab.eval('[...document.links].map(a => a.href)')
    files = [h for h in hrefs if h.startswith('file://')]
    assert all(h.startswith((tmp_path / 'exp').as_uri()) for h in hrefs)
    assert len(files) == 8 * 4 + 1 * 2  # 8 finished runs, 1 failed
    for h in files:
        assert Path(h[len('file://'):]).is_file()
    tab.screenshot(str(tmp_path / 'experiment.png'))
    _doc_image(tmp_path / 'experiment.png', 'experiment_page.png')


def test_local_links_only():
    from gpt4image_mm.experiment.html import local_href
    assert local_href('javascript:alert(1)') is None
    assert local_href('//evil.example/x') is None
    assert local_href('/etc/passwd') is None
    assert local_href('runs/a b/config.py') == 'runs/a%20b/config.py'

