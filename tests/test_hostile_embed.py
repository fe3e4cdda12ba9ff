"""Hostile conditions around the embedding stage, each driven through the
real CLIs (subprocesses) against local OpenAI-wire servers
(tests/_openai_server.py): two names of one output, a full disk, an
embeddings server that answers garbage, descriptions that are not JSON
records. After every fault a rerun of the same command completes."""
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _openai_server import (  # noqa: E402
    FakeOpenAI,
    make_images,
    raw_vector,
    start_server,
)

from gpt4image_mm.datasets.store import EmbeddingStore  # noqa: E402
from gpt4image_mm.utils.descriptions import iter_records  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_ENV = 'HOSTILE_EMBED_TEST_KEY'


def cli_env() -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop('OPENAI_API_KEY', None)
    env[KEY_ENV] = 'sk-hostile-embed-local-0000'
    return env


def tool(name: str, *args: str, timeout: int = 300
         ) -> subprocess.CompletedProcess:
    """``tools/<name>.py ARGS`` as a user runs it."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO, 'tools', f'{name}.py'), *args],
        env=cli_env(), capture_output=True, text=True, timeout=timeout)


def embed_args(desc: str, out: str, url: str, *extra: str) -> list:
    return [desc, '--encoder', 'm', '--api-base', url, '--api-key-env',
            KEY_ENV, '--out', out, '--no-progress', *extra]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The tool's error: exactly one line, no traceback."""
    assert 'Traceback' not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith('error:')]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def write_descriptions(path, n: int, words: int = 3) -> dict:
    """``n`` records ``train/<i>``; returns key -> text."""
    texts = {f'train/{i}': f'text {i} ' + 'word ' * (words + i % 5)
             for i in range(n)}
    with open(path, 'w') as f:
        for k, t in texts.items():
            f.write(json.dumps({'key': k, 'text': t}) + '\n')
    return texts


def expected(texts: dict, keys, dim: int) -> np.ndarray:
    v = np.stack([raw_vector(texts[k], dim) for k in keys])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def progress_done(out: str) -> int:
    with open(os.path.join(out + '.partial', 'progress.json')) as f:
        return json.load(f)['done']


@pytest.fixture
def server():
    fake = FakeOpenAI()
    srv, url = start_server(fake)
    yield fake, url
    srv.shutdown()


# -- an output is one output by every name --------------------------------
def test_caption_runs_on_two_names_of_one_out_are_refused(tmp_path):
    """A run on ``d.jsonl`` and one on a link to it would both pay for
    every image and write two successes per key."""
    release = threading.Event()
    fake = FakeOpenAI(policy=lambda body, n: release.wait(120) and None)
    srv, url = start_server(fake)
    root = str(tmp_path / 'imgs')
    make_images(root, per_class=3)
    out = tmp_path / 'd.jsonl'
    link = tmp_path / 'link.jsonl'
    link.symlink_to(out)  # dangling until the first run writes d.jsonl

    def cmd(o):
        return [sys.executable, os.path.join(REPO, 'tools', 'caption.py'),
                '--images', root, '--out', str(o), '--model', 'm',
                '--base-url', url, '--api-key-env', KEY_ENV, '--no-progress',
                '--concurrency', '1']
    first = subprocess.Popen(cmd(out), env=cli_env(),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while fake.n_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = subprocess.run(cmd(link), env=cli_env(), text=True,
                                capture_output=True, timeout=120)
        assert second.returncode == 2, second.stderr
        line = one_error_line(second)
        assert 'another run' in line and f'"pid": {first.pid}' in line
        release.set()
        assert first.wait(timeout=120) == 0
        rerun = subprocess.run(cmd(link), env=cli_env(), text=True,
                               capture_output=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
    finally:
        release.set()
        first.kill()
        first.wait()
        srv.shutdown()
    keys = [r['key'] for _, r in iter_records(str(out))]
    assert len(keys) == len(set(keys)) == 6  # each image paid once
    assert link.is_symlink() and fake.n_requests == 6


def test_embed_lock_and_force_follow_a_link_to_the_store(tmp_path):
    release = threading.Event()
    fake = FakeOpenAI(policy=lambda body, n: None if body['input'] == [
        'dimension probe'] else release.wait(120) and None)
    srv, url = start_server(fake)
    desc = str(tmp_path / 'd.jsonl')
    texts = write_descriptions(desc, 6)
    store, link = tmp_path / 'store', tmp_path / 'link'
    link.symlink_to(store)
    first = subprocess.Popen(
        [sys.executable, os.path.join(REPO, 'tools', 'embed.py'),
         *embed_args(desc, str(store), url, '--batch-size', '2')],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while fake.n_requests < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # the probe is answered, a batch waits
        second = tool('embed', *embed_args(desc, str(link), url))
        assert second.returncode == 2, second.stderr
        assert 'another embed run' in one_error_line(second)
    finally:
        release.set()
        first.wait(timeout=120)
        srv.shutdown()
    assert first.returncode == 0
    fake2 = FakeOpenAI(dim=8)  # another encoder: --force replaces
    srv2, url2 = start_server(fake2)
    try:
        forced = tool('embed', *embed_args(desc, str(link), url2, '--force'))
    finally:
        srv2.shutdown()
    assert forced.returncode == 0, forced.stderr
    assert link.is_symlink() and os.readlink(link) == str(store)
    assert sorted(os.listdir(tmp_path)) == ['d.jsonl', 'link', 'store']
    s = EmbeddingStore(str(store))
    np.testing.assert_allclose(s.embeddings, expected(texts, s.keys(), 8),
                               atol=1e-3)


def test_merges_refuse_an_out_that_is_a_part_by_another_name(tmp_path,
                                                             server):
    from gpt4image_mm.embedding.embed import embed_descriptions
    from gpt4image_mm.embedding.encoders import build_text_encoder
    _, url = server
    part = tmp_path / 'part.jsonl'
    part.write_text(json.dumps({'key': 'a', 'text': 't'}) + '\n')
    alias = tmp_path / 'alias.jsonl'
    alias.symlink_to(part)
    merged = tool('caption', 'merge', str(alias), str(part), '--overwrite')
    assert merged.returncode == 2 and 'is also an input' in \
        one_error_line(merged)
    assert part.read_text() == json.dumps({'key': 'a', 'text': 't'}) + '\n'
    desc = str(tmp_path / 'd.jsonl')
    write_descriptions(desc, 8)
    enc = build_text_encoder('m', api_base=url)
    parts = [str(tmp_path / f'p{i}') for i in range(2)]
    for i, p in enumerate(parts):
        embed_descriptions(desc, enc, p, shard=f'{i}/2', progress=False)
    plink = tmp_path / 'plink'
    plink.symlink_to(parts[0])
    proc = tool('embed', 'merge', *parts, '--out', str(plink), '--force')
    assert proc.returncode == 2 and 'is also a part' in one_error_line(proc)
    assert EmbeddingStore(parts[0]).manifest['shard'] == [0, 2]


# -- a full disk is one line naming the path --------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at ``tmp_path/disk`` and a function that grows it
    (the "larger disk" of the rerun). Needs root (mount)."""
    disk = tmp_path / 'disk'
    disk.mkdir()
    if shutil.which('mount') is None:
        pytest.skip('no mount command: cannot make a small disk here')
    made = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs',
                           str(disk)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip('cannot mount a 1 MiB tmpfs (needs root): '
                    f'{made.stderr.strip()}')

    def grow():
        subprocess.run(['mount', '-o', 'remount,size=64m', str(disk)],
                       check=True)
    try:
        yield disk, grow
    finally:
        subprocess.run(['umount', '-l', str(disk)], check=False)


def assert_disk_full_line(proc, path) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    line = one_error_line(proc)
    assert os.path.realpath(path) in line and 'no space left' in line, line


# rows of 40 x 8192 float32 (1.3 MB) do not fit on 1 MiB: the run fails at
# its start; 40 x 4096 (0.66 MB) fit, but not twice: it fails when the
# finished rows are committed as a store
@pytest.mark.parametrize('dim,when', [(8192, 'start'), (4096, 'commit')])
def test_embed_on_a_full_disk_is_one_line_then_the_rerun_finishes(
        tmp_path, server, small_disk, dim, when):
    fake, url = server
    disk, grow = small_disk
    desc = str(tmp_path / 'd.jsonl')
    texts = write_descriptions(desc, 40)
    out = str(disk / 'store')
    args = embed_args(desc, out, url, '--dimensions', str(dim),
                      '--store-dtype', 'float32', '--batch-size', '8')
    proc = tool('embed', *args)
    assert_disk_full_line(proc, out)
    assert not os.path.exists(out)  # no torn store
    assert not glob.glob(out + '.tmp-*')
    if when == 'commit':  # every row was finished: kept for the rerun
        assert progress_done(out) == 40
    grow()
    before = fake.n_requests
    rerun = tool('embed', *args)
    assert rerun.returncode == 0, rerun.stderr
    if when == 'commit':
        assert 'resumed at row 40 ' in rerun.stdout
        assert fake.n_requests - before == 1  # the probe only
    s = EmbeddingStore(out)
    np.testing.assert_allclose(s.embeddings, expected(texts, s.keys(), dim),
                               atol=1e-5)
    assert sorted(os.listdir(disk)) == ['store']


def test_importer_and_store_merge_on_a_full_disk(tmp_path, server,
                                                 small_disk):
    from gpt4image_mm.embedding.embed import embed_descriptions
    from gpt4image_mm.embedding.encoders import build_text_encoder
    _, url = server
    disk, grow = small_disk
    csv = tmp_path / 'm.csv'
    with open(csv, 'w') as f:
        f.write('key,text\n')
        for i in range(1500):  # 1.5 MB of descriptions
            f.write(f'img{i}.png,{"a long description " * 50}\n')
    desc = disk / 'd.jsonl'
    imp = tool('embed', 'import-map', str(csv), '--out', str(desc))
    assert_disk_full_line(imp, desc)
    assert os.listdir(disk) == []  # no torn file, no temp file
    small = str(tmp_path / 'd.jsonl')
    write_descriptions(small, 40)
    enc = build_text_encoder('m', api_base=url, dimensions=8192)
    parts = [str(tmp_path / f'p{i}') for i in range(2)]
    for i, p in enumerate(parts):  # 1.3 MB together
        embed_descriptions(small, enc, p, shard=f'{i}/2', progress=False,
                           store_dtype='float32')
    merged = str(disk / 'store')
    proc = tool('embed', 'merge', *parts, '--out', merged)
    assert_disk_full_line(proc, merged)
    assert os.listdir(disk) == []
    grow()
    assert tool('embed', 'import-map', str(csv), '--out',
                str(desc)).returncode == 0
    assert len(list(iter_records(str(desc)))) == 1500
    proc = tool('embed', 'merge', *parts, '--out', merged)
    assert proc.returncode == 0, proc.stderr
    assert EmbeddingStore(merged).count == 40


# -- an embeddings server that answers garbage ----------------------------
def _nan(a):
    a['data'][0]['embedding'][1] = float('nan')  # sent as NaN
    return a


def _one_less(a):
    a['data'].pop()
    return a


def _other_width(a):
    for d in a['data']:
        d['embedding'] = d['embedding'][:8]
    return a


def _same_index(a):
    for d in a['data']:
        d['index'] = 0
    return a


def _one_wider(a):
    a['data'][0]['embedding'].append(1.0)
    return a


def _strings(a):
    a['data'][0]['embedding'][0] = 'x'
    return a


def _zero(a):
    a['data'][0]['embedding'] = [0.0] * len(a['data'][0]['embedding'])
    return a


def _overflow(a):
    a['data'][0]['embedding'][0] = 1e300  # inf as float32
    return a


HTML = {'raw': '<!DOCTYPE html><html><body>Sign in</body></html>'}
BAD_ANSWERS = {
    'html': (HTML, 'not JSON'),
    'truncated json': ({'raw': '{"data": [', 'content_type':
                        'application/json'}, 'not JSON'),
    'no data': ({'mangle': lambda a: {'object': 'list'}}, '"data" list'),
    'a list': ({'mangle': lambda a: [1, 2]}, '"data" list'),
    'one vector short': ({'mangle': _one_less}, '1 embeddings for 2 texts'),
    'indices twice': ({'mangle': _same_index}, 'not 0..1 once each'),
    'per token': ({'mangle': lambda a: {**a, 'data': [
        {**d, 'embedding': [d['embedding']] * 2} for d in a['data']]}},
        'does not pool'),
    'strings': ({'mangle': _strings}, 'not a list of numbers'),
    'ragged': ({'mangle': _one_wider}, 'different sizes [16, 17]'),
    'other width': ({'mangle': _other_width}, '8-d vectors, not the 16-d'),
    'nan': ({'mangle': _nan}, 'NaN/inf or all-zero'),
    'overflow': ({'mangle': _overflow}, 'NaN/inf or all-zero'),
    'zero': ({'mangle': _zero}, 'NaN/inf or all-zero'),
}


# a one-text answer (the probe's) cannot be ragged, reordered, or of
# another width than itself
FINE_AS_PROBE = ('indices twice', 'ragged', 'other width')


@pytest.mark.parametrize('name', list(BAD_ANSWERS))
def test_every_bad_answer_is_one_line_naming_the_request(serve, name):
    """The whole class in process (the CLI runs below drive part of it end
    to end): after a good probe, request 2 of the batch is bad -> one
    line naming it, exit 3 (rerun); a bad probe -> exit 2 (not set up)."""
    from gpt4image_mm.embedding.encoders import build_text_encoder
    from gpt4image_mm.utils.errors import ToolError
    fault, words = BAD_ANSWERS[name]
    _, url = serve(policy=lambda body, n: fault if n == 3 else None)
    enc = build_text_encoder('m', api_base=url, request_size=2,
                             concurrency=1, max_retries=0)
    with pytest.raises(ToolError) as e:
        enc.encode(['a b', 'c d', 'e f', 'g h'])
    assert 'embedding request 2 of 2 (texts 2-3 of the batch)' in str(e.value)
    assert words in str(e.value) and e.value.exit_code == 3
    if name in FINE_AS_PROBE:
        return
    _, url = serve(policy=lambda body, n: fault)
    with pytest.raises(ToolError) as e:
        build_text_encoder('m', api_base=url, max_retries=0)
    assert 'first embedding request' in str(e.value)
    assert words.replace('2 texts', '1 texts').replace(
        '1 embeddings', '0 embeddings') in str(e.value)
    assert e.value.exit_code == 2


def test_bad_answers_mid_run_keep_what_is_finished(tmp_path):
    """Through the CLI: a proxy's HTML page for the probe is one line, exit
    2; then each run meets a bad answer on its second request (HTML, NaN,
    a vector short, another width): one line naming the batch, exit 3, and
    the batch before it is kept -- even with no flush due; the last rerun
    finishes the store, each text paid for once beyond the failed ones."""
    plan = {'probe': HTML, 'fault': None, 'seen': 0}

    def policy(body, n):
        if body['input'] == ['dimension probe']:
            return plan['probe']
        plan['seen'] += 1
        return plan['fault'] if plan['seen'] == 2 else None
    fake = FakeOpenAI(policy=policy)
    srv, url = start_server(fake)
    desc = str(tmp_path / 'd.jsonl')
    texts = write_descriptions(desc, 12)
    out = str(tmp_path / 'store')
    args = embed_args(desc, out, url, '--batch-size', '2', '--concurrency',
                      '1', '--max-retries', '0', '--flush-every', '1000')
    try:
        proc = tool('embed', *args)
        assert proc.returncode == 2
        line = one_error_line(proc)
        assert 'first embedding request' in line and 'not JSON' in line
        assert not os.path.exists(out) and not os.path.exists(
            out + '.partial')
        plan['probe'] = None
        for run, fault in enumerate((HTML, {'mangle': _nan},
                                     {'mangle': _one_less},
                                     {'mangle': _other_width}), 1):
            plan.update(fault=fault, seen=0)
            proc = tool('embed', *args)
            assert proc.returncode == 3, proc.stderr
            line = one_error_line(proc)
            assert 'batch 2 of' in line and "first key 'train/" in line
            assert 'rerun the same command to resume' in line
            assert progress_done(out) == 2 * run  # the good batch is kept
        plan['fault'] = None
        proc = tool('embed', *args)
    finally:
        srv.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert 'resumed at row 8 ' in proc.stdout
    s = EmbeddingStore(out)
    np.testing.assert_allclose(s.embeddings, expected(texts, s.keys(), 16),
                               atol=1e-3)


# -- descriptions that are not JSON records -------------------------------
@pytest.mark.parametrize('line,words', [
    ('[' * 100000 + ']' * 100000, 'nested too deeply'),
    ('{"key": "a", "text": "x", "n": ' + '9' * 5000 + '}', '4300 digits'),
    ('{"key": "a", "text": "\\ud800"}', 'lone surrogate'),
    ('{"key": "\\udc80.png", "text": "x"}', 'lone surrogate'),
])
def test_descriptions_that_are_no_usable_records_name_file_and_line(
        tmp_path, line, words):
    from gpt4image_mm.utils.descriptions import DescriptionFileError
    path = tmp_path / 'd.jsonl'
    path.write_text('{"key": "ok", "text": "fine"}\n' + line + '\n')
    with pytest.raises(DescriptionFileError, match=f'd.jsonl:2: .*{words}'):
        list(iter_records(str(path)))


def test_deeply_nested_description_line_is_one_line_from_embed(tmp_path,
                                                               server):
    _, url = server
    desc = tmp_path / 'd.jsonl'
    desc.write_text('{"key": "ok", "text": "fine"}\n' + '[' * 100000
                    + ']' * 100000 + '\n')
    proc = tool('embed', *embed_args(str(desc), str(tmp_path / 's'), url))
    assert proc.returncode == 2
    assert 'd.jsonl:2: not a usable JSON record' in one_error_line(proc)
    desc.write_text('{"key": "ok", "text": "fine"}\n')
    assert tool('embed', *embed_args(str(desc), str(tmp_path / 's'),
                                     url)).returncode == 0


def test_a_local_encoder_that_turns_nan_is_stopped_at_its_batch(tmp_path):
    """A model that starts producing NaN (fp16 overflow, here: weights
    poisoned after two batches) is named at the batch, before any NaN row is
    written; the rerun resumes after the good batches."""
    from helpers import make_tiny_clip

    from gpt4image_mm.datasets.store import StoreError
    from gpt4image_mm.embedding.embed import embed_descriptions
    from gpt4image_mm.embedding.encoders import build_text_encoder
    make_tiny_clip(tmp_path / 'clip')
    enc = build_text_encoder(str(tmp_path / 'clip'))
    desc = str(tmp_path / 'd.jsonl')
    write_descriptions(desc, 20)
    out = str(tmp_path / 'store')

    def poison(done):
        if done == 8:
            for p in enc.modules()[0].parameters():
                p.data.fill_(float('nan'))
    with pytest.raises(StoreError, match=r"batch 3 of 5 \(texts 8-11 .*"
                       r"NaN/inf or all zero"):
        embed_descriptions(desc, enc, out, batch_size=4, progress=False,
                           flush_every=1000, on_batch=poison)
    assert progress_done(out) == 8
    fresh = build_text_encoder(str(tmp_path / 'clip'))
    res = embed_descriptions(desc, fresh, out, batch_size=4, progress=False)
    assert res.resumed_rows == 8
    EmbeddingStore(out).verify()
