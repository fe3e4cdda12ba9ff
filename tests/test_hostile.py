"""Hostile inputs and misuse: each test builds the bad input itself
and drives the real tool (CLI subprocesses against a local OpenAI-wire
server where a run is involved)."""
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _openai_server import FakeOpenAI, make_images, start_server  # noqa: E402

from gpt4image_mm.utils.descriptions import iter_records  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_ENV = 'HOSTILE_TEST_KEY'  # a named variable: never OPENAI_API_KEY to a local URL


def bomb_png(path: str, side: int = 30000) -> int:
    """A tiny PNG whose header claims ``side`` x ``side`` pixels (a
    decompression bomb for PIL's 2 x 89.5 M pixel limit); its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data)))
    raw = (b'\x89PNG\r\n\x1a\n'
           + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 2, 0, 0, 0))
           + chunk(b'IDAT', zlib.compress(b'\0' * 16))
           + chunk(b'IEND', b''))
    with open(path, 'wb') as f:
        f.write(raw)
    return len(raw)


def caption_cmd(root: str, out: str, url: str, *extra: str) -> list:
    return [sys.executable, os.path.join(REPO, 'tools', 'caption.py'),
            '--images', root, '--out', out, '--model', 'm', '--base-url', url,
            '--api-key-env', KEY_ENV, '--no-progress', *extra]


def cli_env() -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    env[KEY_ENV] = 'sk-hostile-local-0000'
    return env


def records(out: str) -> list:
    return [r for _, r in iter_records(out)] if os.path.exists(out) else []


@pytest.fixture
def server():
    fake = FakeOpenAI(latency=0.0)
    srv, url = start_server(fake)
    yield fake, url
    srv.shutdown()


# -- 14.1 a decompression bomb is one failure record ---------------------
def test_decompression_bomb_is_a_failure_record_and_the_run_goes_on(
        tmp_path, server):
    fake, url = server
    root = str(tmp_path / 'imgs')
    keys = make_images(root, classes=('a', 'b', 'c'), per_class=12)
    assert bomb_png(os.path.join(root, 'b', 'bomb.png')) < 80
    out = str(tmp_path / 'd.jsonl')
    env = cli_env()
    dry = subprocess.run(caption_cmd(root, out, url, '--dry-run'), env=env,
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)['requests'] == len(keys) + 1
    run = subprocess.run(caption_cmd(root, out, url, '--concurrency', '4'),
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr  # a failure is left: rerunnable
    assert 'Traceback' not in run.stderr
    recs = records(out)
    fails = [r for r in recs if 'error' in r]
    assert [r['key'] for r in fails] == ['b/bomb.png']
    assert 'decompression bomb' in fails[0]['error']
    assert 'b/bomb.png' in fails[0]['error']
    assert sorted(r['key'] for r in recs if 'error' not in r) == keys
    assert len(fake.answered) == len(keys)  # every paid answer was kept
    # a rerun retries only the bomb, fails it again, and goes on
    rerun = subprocess.run(caption_cmd(root, out, url), env=env,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 1 and 'Traceback' not in rerun.stderr
    assert json.loads(rerun.stdout.strip().splitlines()[-1])['attempted'] == 1


def test_every_image_decoder_names_the_bomb(tmp_path):
    from gpt4image_mm.captioning.images import (
        ImageError,
        image_size,
        open_rgb,
        prepare_image,
    )
    path = str(tmp_path / 'bomb.png')
    bomb_png(path)
    for decode in (open_rgb, image_size, prepare_image):
        with pytest.raises(ImageError, match='bomb.png: decompression bomb'):
            decode(path)


# -- 14.3 one run at a time per --out --------------------------------------
def test_second_caption_run_on_the_same_out_is_refused(tmp_path):
    release = threading.Event()  # the first run's answers wait for this
    fake = FakeOpenAI(policy=lambda body, n: release.wait(120) and None)
    srv, url = start_server(fake)
    root = str(tmp_path / 'imgs')
    make_images(root, per_class=4)
    out = str(tmp_path / 'd.jsonl')
    first = subprocess.Popen(caption_cmd(root, out, url, '--concurrency', '1'),
                             env=cli_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while fake.n_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = subprocess.run(caption_cmd(root, out, url), env=cli_env(),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f'pid {first.pid}' in second.stderr.replace('"pid": ', 'pid ')
        assert 'another run' in second.stderr
    finally:
        release.set()
        first.kill()
        first.wait()
        srv.shutdown()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    from gpt4image_mm.utils.files import LockHeld, OutputLock
    path = str(tmp_path / 'x.lock')
    code = (f'import sys, os; sys.path.insert(0, {REPO!r})\n'
            'from gpt4image_mm.utils.files import OutputLock\n'
            f'OutputLock({path!r}, "x").acquire(); os._exit(0)')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=60)
    assert 'pid' in open(path).read()  # the dead holder's record is there
    with OutputLock(path, 'x'):
        with pytest.raises(LockHeld, match=f'"pid": {os.getpid()}'):
            OutputLock(path, 'x').acquire()


# -- 14.7 a signal is not success ------------------------------------------
@pytest.mark.parametrize('sig,code', [(signal.SIGINT, 130),
                                      (signal.SIGTERM, 143)])
def test_run_stopped_by_a_signal_exits_non_zero(tmp_path, sig, code):
    fake = FakeOpenAI(latency=0.3)
    srv, url = start_server(fake)
    root = str(tmp_path / 'imgs')
    make_images(root, per_class=10)
    out = str(tmp_path / 'd.jsonl')
    proc = subprocess.Popen(caption_cmd(root, out, url, '--concurrency', '2'),
                            env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(records(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        srv.shutdown()
    assert proc.returncode == code, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary['ok'] is False and summary['signal'] == int(sig)
    assert summary['not_attempted'] > 0
    assert len(records(out)) == summary['succeeded']  # answers kept


def test_limit_stop_still_exits_zero(tmp_path, server):
    _, url = server
    root = str(tmp_path / 'imgs')
    make_images(root, per_class=3)
    out = str(tmp_path / 'd.jsonl')
    run = subprocess.run(caption_cmd(root, out, url, '--limit', '2'),
                         env=cli_env(), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(records(out)) == 2


# -- 14.2 --force replaces what the tool wrote, nothing else ---------------
def test_embed_force_never_deletes_a_directory_that_is_not_a_store(tmp_path):
    from gpt4image_mm.utils.assets import minilm_dir
    desc = tmp_path / 'd.jsonl'
    desc.write_text(json.dumps({'key': 'a.png', 'text': 'a red car'}) + '\n')
    out = tmp_path / 'photos'
    out.mkdir()
    (out / 'holiday.jpg').write_bytes(b'precious')
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, 'tools', 'embed.py'), str(desc),
         '--encoder', minilm_dir(), '--out', str(out), '--force',
         '--device', 'cpu', '--no-progress'],
        env=cli_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert 'is not an embedding store' in run.stderr
    assert 'Traceback' not in run.stderr
    assert (out / 'holiday.jpg').read_bytes() == b'precious'
    assert sorted(os.listdir(tmp_path)) == ['d.jsonl', 'photos']


def test_store_writer_and_merges_refuse_to_replace_unknown_outputs(tmp_path):
    import numpy as np

    from gpt4image_mm.captioning.merge import merge
    from gpt4image_mm.datasets.store import StoreError, write_store
    from gpt4image_mm.embedding.importers import ImportSourceError, import_map
    other = tmp_path / 'notes'
    other.mkdir()
    (other / 'x.txt').write_text('keep')
    with pytest.raises(StoreError, match='not an embedding store'):
        write_store(str(other), ['a'], np.ones((1, 2)), 'e', overwrite=True)
    store = tmp_path / 'store'
    write_store(str(store), ['a'], np.ones((1, 2)), 'e')
    write_store(str(store), ['b'], np.ones((1, 2)), 'e', overwrite=True)
    assert (other / 'x.txt').read_text() == 'keep'
    part = tmp_path / 'p.jsonl'
    part.write_text(json.dumps({'key': 'a', 'text': 't'}) + '\n')
    notes = tmp_path / 'notes.txt'
    notes.write_text('my thesis\n')
    with pytest.raises(ValueError, match='not a descriptions file'):
        merge(str(notes), [str(part)], overwrite=True)
    csv = tmp_path / 'm.csv'
    csv.write_text('key,text\na.png,a cat\n')
    with pytest.raises(ImportSourceError, match='not a descriptions file'):
        import_map(str(csv), str(notes), force=True)
    assert notes.read_text() == 'my thesis\n'
    merge(str(tmp_path / 'm.jsonl'), [str(part)])
    merge(str(tmp_path / 'm.jsonl'), [str(part)], overwrite=True)


# -- 14.8 checkpoints load safely whatever torch's default -----------------
EVIL_LOAD = '''
import http.server, os, pickle, sys, threading
sys.path.insert(0, {repo!r})
import gpt4image_mm.engine, torch
from mmengine.runner import load_checkpoint
model = torch.nn.Linear(2, 2)
for src in ({pth!r}, 'http://127.0.0.1:{{}}/evil.pth'):
    if src.startswith('http'):
        os.chdir(os.path.dirname({pth!r}))
        srv = http.server.ThreadingHTTPServer(
            ('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        src = src.format(srv.server_address[1])
    try:
        load_checkpoint(model, src, map_location='cpu')
        print('LOADED', src)
    except pickle.UnpicklingError as e:  # one line, naming the file
        print('REFUSED', type(e).__name__, '\\n' not in str(e))
'''


class _Evil:
    """Unpickling this opens (creates) the marker file: code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


def _evil_checkpoint(tmp_path):
    import torch
    marker = tmp_path / 'PWNED'
    pth = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _Evil(str(marker))}, pth)
    return pth, marker


def test_evil_checkpoint_cannot_run_code_even_when_torch_is_told_to(tmp_path):
    pth, marker = _evil_checkpoint(tmp_path)
    env = dict(cli_env(), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1',
               TORCH_HOME=str(tmp_path / 'hub'))
    run = subprocess.run(
        [sys.executable, '-c', EVIL_LOAD.format(repo=REPO, pth=str(pth))],
        env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count('REFUSED UnsafeCheckpoint True') == 2, run.stdout
    assert not marker.exists()


# -- 14.6 a complete last record without newline is kept -------------------
def test_last_record_without_newline_is_kept_by_reader_and_writer(tmp_path):
    from gpt4image_mm.utils.descriptions import DescriptionWriter
    path = tmp_path / 'd.jsonl'
    first = json.dumps({'key': 'a', 'text': 'one'})
    last = json.dumps({'key': 'b', 'text': 'two'})
    path.write_text(first + '\n' + last)  # killed before the newline
    assert [r['key'] for r in records(str(path))] == ['a', 'b']
    with DescriptionWriter(str(path)) as w:
        w.write({'key': 'c', 'text': 'three'})
    assert [r['key'] for r in records(str(path))] == ['a', 'b', 'c']
    assert path.read_text().endswith('}\n') and path.read_text().count(
        '\n') == 3
    # a torn last line is still cut, and the reader never reported it
    path.write_text(first + '\n' + last[:-3])
    assert [r['key'] for r in records(str(path))] == ['a']
    with DescriptionWriter(str(path)) as w:
        w.write({'key': 'c', 'text': 'three'})
    assert [r['key'] for r in records(str(path))] == ['a', 'c']


# -- 14.14 reading descriptions streams ------------------------------------
def test_reading_descriptions_does_not_hold_the_file(tmp_path):
    import tracemalloc

    from gpt4image_mm.utils.descriptions import iter_records
    path = tmp_path / 'd.jsonl'
    text = 'a photo of a small dog on a lawn ' * 25
    with open(path, 'w') as f:
        for i in range(20_000):
            f.write(json.dumps({'key': f'k/{i}', 'text': text}) + '\n')
    size = path.stat().st_size  # ~17 MB
    tracemalloc.start()
    n = sum(1 for _ in iter_records(str(path)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 20_000
    assert peak < size / 20, f'peak {peak} bytes for a {size}-byte file'


# -- 14.9 symlink loops and links out of the root ---------------------------
def test_symlink_loops_and_escapes_list_each_image_once(tmp_path):
    from gpt4image_mm.utils.image_files import list_images
    root = tmp_path / 'imgs'
    keys = make_images(str(root), classes=('a', 'b'), per_class=1)
    os.symlink('..', root / 'a' / 'up')              # a loop
    os.symlink(str(root / 'b'), root / 'a' / 'b2')   # the same dir again
    outside = tmp_path / 'private'
    make_images(str(outside), classes=('x',), per_class=1)
    os.symlink(str(outside), root / 'a' / 'out')     # leaves the root
    os.symlink(str(outside / 'x' / '0.jpg'), root / 'a' / 'leak.jpg')
    listed = [os.path.relpath(p, root) for p in list_images(str(root))]
    assert sorted(listed) == keys  # each image once, by its own path
    assert {os.path.realpath(root / p) for p in listed} == {
        os.path.realpath(root / k) for k in keys}
    assert not any('out' in p or 'leak' in p for p in listed)


# -- 14.13 store integrity and provenance ----------------------------------
def _folder_cfg(root) -> dict:
    return dict(type='CustomDataset', data_root=str(root),
                pipeline=[dict(type='LoadImageFromFile'),
                          dict(type='PackInputs')])


def test_reordered_or_duplicated_store_keys_are_refused(tmp_path,
                                                        image_folder):
    import numpy as np
    from conftest import random_store

    from gpt4image_mm.datasets import DescriptionDataset, StoreError
    from gpt4image_mm.datasets.store import EmbeddingStore, write_store
    root, keys = image_folder
    store = tmp_path / 'store'
    random_store(store, keys)
    kfile = store / 'keys.txt'
    kfile.write_text('\n'.join(reversed(keys)) + '\n')  # right length
    with pytest.raises(StoreError, match='reordered or edited'):
        DescriptionDataset(_folder_cfg(root), store=str(store))
    with pytest.raises(StoreError, match="'b' appears twice"):
        write_store(str(tmp_path / 'dup'), ['a', 'b', 'b'], np.ones((3, 2)),
                    'e')
    assert not (tmp_path / 'dup').exists()
    # a store of the old format (no digest) with duplicates: refused on open
    man = json.loads((store / 'manifest.json').read_text())
    del man['keys_sha256']
    (store / 'manifest.json').write_text(json.dumps(man))
    kfile.write_text('\n'.join([keys[0]] + keys[:-1]) + '\n')
    with pytest.raises(StoreError, match='appears twice'):
        EmbeddingStore(str(store)).keys()


def test_a_nan_row_is_named_by_its_key(tmp_path, image_folder):
    import numpy as np
    from conftest import random_store

    from gpt4image_mm.datasets import DescriptionDataset, StoreError
    root, keys = image_folder
    store = tmp_path / 'store'
    random_store(store, keys)
    rows = np.load(store / 'embeddings.npy', mmap_mode='r+')
    rows[2] = np.nan
    rows.flush()
    del rows
    ds = DescriptionDataset(_folder_cfg(root), store=str(store))
    with pytest.raises(StoreError, match=repr(keys[2])):
        ds[2]


def test_store_of_another_image_folder_with_the_same_layout_is_refused(
        tmp_path, server, monkeypatch):
    import shutil

    from conftest import make_image_folder

    from gpt4image_mm.cli.caption import caption
    from gpt4image_mm.datasets import DescriptionDataset, StoreError
    from gpt4image_mm.embedding.embed import embed_descriptions
    from gpt4image_mm.embedding.encoders import build_text_encoder
    from gpt4image_mm.utils.assets import minilm_dir
    _, url = server
    mine, theirs = tmp_path / 'mine', tmp_path / 'theirs'
    make_image_folder(mine, per_class=2)
    shutil.copytree(mine, theirs)
    for p in theirs.rglob('*.png'):  # same keys, other pictures
        p.write_bytes((mine / p.relative_to(theirs)).read_bytes()[::-1])
    out = str(tmp_path / 'd.jsonl')
    monkeypatch.setenv(KEY_ENV, 'sk-hostile-local-0000')
    res = caption(out, images=str(mine), model='m', base_url=url,
                  api_key_env=KEY_ENV, progress=False)
    assert res['ok']
    with pytest.raises(ValueError, match='write to another --out'):
        caption(out, images=str(theirs), model='m', base_url=url,
                api_key_env=KEY_ENV, progress=False)
    store = str(tmp_path / 'store')
    embed_descriptions(out, build_text_encoder(minilm_dir()), store,
                       progress=False)
    assert len(DescriptionDataset(_folder_cfg(mine), store=store)) == 6
    with pytest.raises(StoreError, match='check_source=False'):
        DescriptionDataset(_folder_cfg(theirs), store=store)
    moved = DescriptionDataset(_folder_cfg(theirs), store=store,
                               check_source=False)
    assert len(moved) == 6
    with pytest.raises(StoreError, match='check_source=False'):
        DescriptionDataset(_folder_cfg(theirs), descriptions=out)
    assert len(DescriptionDataset(_folder_cfg(mine), descriptions=out)) == 6


def test_merged_descriptions_keep_their_source(tmp_path):
    from gpt4image_mm.captioning.merge import merge
    from gpt4image_mm.utils.descriptions import read_source, record_source
    src = {'root': str(tmp_path / 'imgs'), 'split': None}
    parts = []
    for i in range(2):
        part = tmp_path / f'p{i}.jsonl'
        part.write_text(json.dumps({'key': f'k{i}', 'text': 't'}) + '\n')
        record_source(str(part), src)
        parts.append(str(part))
    merge(str(tmp_path / 'all.jsonl'), parts)
    assert read_source(str(tmp_path / 'all.jsonl')) == src
    record_source(parts[1], src)  # same source: accepted
    with pytest.raises(ValueError, match='write to another --out'):
        record_source(parts[1], dict(src, root='/elsewhere'))


def test_strip_align_never_overwrites_a_file_that_is_not_a_checkpoint(
        tmp_path):
    import torch

    from gpt4image_mm.engine.checkpoint import strip_checkpoint
    src = tmp_path / 'train.pth'
    torch.save({'state_dict': {'backbone.w': torch.ones(2),
                               'align_neck.w': torch.ones(2)}}, src)
    cfg = tmp_path / 'my_config.py'
    cfg.write_text('model = dict()\n')
    with pytest.raises(ValueError, match='is not a checkpoint'):
        strip_checkpoint(str(src), str(cfg))  # a typo'd argument order
    assert cfg.read_text() == 'model = dict()\n'
    dst = str(tmp_path / 'deploy.pth')
    assert strip_checkpoint(str(src), dst) == 1
    assert strip_checkpoint(str(src), dst) == 1  # its own output: replaced


@pytest.mark.parametrize('content', [b'key,text\ncat/1.png,A cat.\n', b''])
def test_strip_of_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path,
                                                               content):
    """tools/strip_align.py (and ``gpt4image strip``) printed torch's
    traceback for a CSV or an empty file given as the checkpoint."""
    src = tmp_path / 'descriptions.csv'
    src.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'tools', 'strip_align.py'),
         str(src), str(tmp_path / 'deploy.pth')],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {src}: not a '
                                                   'checkpoint'), lines
    assert not (tmp_path / 'deploy.pth').exists()
