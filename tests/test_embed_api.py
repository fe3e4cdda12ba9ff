"""The embeddings-API encoder and tools/embed.py against the project's local
endpoint speaking the OpenAI wire format (tests/_openai_server.py): key
policy, server errors, response shapes, the model check."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _openai_server import raw_vector  # noqa: E402

from gpt4image_mm.datasets.store import EmbeddingStore  # noqa: E402
from gpt4image_mm.embedding.embed import embed_descriptions
from gpt4image_mm.embedding.encoders import build_text_encoder  # noqa: E402
from gpt4image_mm.utils.security import CredentialError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = 'sk-test-secret-1234'
# The OpenAI key of the user: must never reach a local server or an output.
SENTINEL = 'sk-proj-SENTINEL-do-not-leak-0123456789'
TEXTS = [f'description number {i} ' + 'word ' * (i % 7) for i in range(10)]


def expected(texts, dim):
    v = np.stack([raw_vector(t, dim) for t in texts])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write_descriptions(path, texts=TEXTS, failures=0):
    with open(path, 'w') as f:
        for i, t in enumerate(texts):
            f.write(json.dumps(dict(key=f'train/{i}', text=t)) + '\n')
        for i in range(failures):
            f.write(json.dumps(dict(key=f'train/9{i}', error='refused'))
                    + '\n')
    return str(path)


def embed_cli(*args, env_extra=None, timeout=300):
    """tools/embed.py as a user runs it, with the user's OpenAI key set."""
    env = dict(os.environ, OPENAI_API_KEY=SENTINEL, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tools', 'embed.py'), *args],
        capture_output=True, text=True, env=env, timeout=timeout)


def assert_no_leak(proc, *paths, secrets=(SENTINEL,)):
    blobs = [proc.stdout, proc.stderr]
    for p in paths:
        for root, _, files in os.walk(p) if os.path.isdir(p) else [
                (os.path.dirname(p), None, [os.path.basename(p)])]:
            for name in files:
                fp = os.path.join(root, name)
                if os.path.isfile(fp):
                    blobs.append(open(fp, 'rb').read().decode('latin-1'))
    for s in secrets:
        assert not any(s in b for b in blobs), f'{s} leaked'


def one_error_line(proc):
    """The tool's error: one line, no traceback."""
    assert 'Traceback' not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith('error:')]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_encoder_batches_sorts_retries_and_normalises(serve, monkeypatch):
    fake, url = serve(policy=lambda body, n: {'status': 500, 'message': 'boom',
                                              'retry_after_ms': 10}
                      if n == 1 else None)
    monkeypatch.setenv('MY_EMBED_KEY', KEY)
    enc = build_text_encoder('openai:text-embedding-3-small', api_base=url,
                             api_key_env='MY_EMBED_KEY', dimensions=12,
                             request_size=4, concurrency=2)
    assert enc.dim == 12 and enc.name == 'openai:text-embedding-3-small'
    vec = enc.encode(TEXTS).numpy()
    np.testing.assert_allclose(vec, expected(TEXTS, 12), rtol=1e-5,
                               atol=1e-6)
    bodies = [json.loads(b) for b in fake.bodies]
    # the probe got a 500 and was retried once; then 10 texts in 4 + 4 + 2
    assert [len(b['input']) for b in bodies[:2]] == [1, 1]
    assert sorted(len(b['input']) for b in bodies[2:]) == [2, 4, 4]
    assert all(b['dimensions'] == 12 and b['model'] ==
               'text-embedding-3-small' for b in bodies)
    assert set(fake.auth_seen) == {f'Bearer {KEY}'}
    assert enc.truncated is None  # APIs reject, they do not truncate


def test_openai_key_needs_openai_and_stays_home(serve, monkeypatch):
    """14.4: OPENAI_API_KEY is required for OpenAI itself, and never sent
    to another endpoint unless named with api_key_env."""
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    monkeypatch.delenv('OPENAI_BASE_URL', raising=False)
    with pytest.raises(CredentialError, match='OPENAI_API_KEY'):
        build_text_encoder('openai:text-embedding-3-small')
    monkeypatch.setenv('OPENAI_API_KEY', SENTINEL)
    fake, url = serve()
    enc = build_text_encoder('BAAI/bge-small-en', api_base=url)
    assert enc.dim == 16  # asked the server with one probe
    assert fake.auth_seen and all(a == 'Bearer no-key'
                                  for a in fake.auth_seen)


def test_tool_against_endpoint(serve, tmp_path):
    fake, url = serve(api_key=KEY)
    desc = write_descriptions(tmp_path / 'd.jsonl', failures=1)
    out = tmp_path / 'store'
    proc = embed_cli(desc, '--encoder', 'openai:text-embedding-3-large',
                     '--api-base', url, '--api-key-env', 'MY_EMBED_KEY',
                     '--dimensions', '8', '--batch-size', '3', '--out',
                     str(out), '--store-dtype', 'float32',
                     env_extra={'MY_EMBED_KEY': KEY})
    assert proc.returncode == 0, proc.stderr
    assert_no_leak(proc, str(out), secrets=(KEY, SENTINEL))
    assert 'skipped failures: 1' in proc.stdout
    # 13.12: no "None tokens", no "(0 texts/s)"
    assert 'None' not in proc.stdout and '(0 texts/s)' not in proc.stdout
    assert 'truncation: n/a' in proc.stdout
    assert "lists no models; cannot check --model" in proc.stderr
    store = EmbeddingStore(str(out))
    keys = store.keys()
    assert keys == sorted(f'train/{i}' for i in range(10))
    want = expected([TEXTS[int(k.split('/')[1])] for k in keys], 8)
    np.testing.assert_allclose(store.embeddings, want, rtol=1e-5, atol=1e-6)
    assert store.manifest['encoder'] == 'openai:text-embedding-3-large'
    assert store.manifest['encoder_settings']['dimensions'] == 8
    assert store.manifest['truncated'] is None


def test_wrong_key_is_one_scrubbed_line(serve, tmp_path):
    """14.5 + 13.8: a 401 naming the key in full -> rc 2, one line with the
    server's reason and the fix; the key appears nowhere."""
    fake, url = serve(api_key='sk-the-right-one-000000')
    desc = write_descriptions(tmp_path / 'd.jsonl')
    out = tmp_path / 'store'
    wrong = 'sk-wrong-key-SENTINEL-987654321'
    proc = embed_cli(desc, '--encoder', 'm', '--api-base', url,
                     '--api-key-env', 'MY_KEY', '--out', str(out),
                     env_extra={'MY_KEY': wrong})
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert 'HTTP 401' in line and 'Incorrect API key provided: ***' in line
    assert 'check the key in MY_KEY' in line
    assert_no_leak(proc, str(tmp_path), secrets=(wrong, SENTINEL))
    assert f'Bearer {wrong}' in fake.auth_seen  # it was really sent


def test_non_pooling_server_is_named_before_anything_is_written(serve,
                                                                tmp_path):
    """13.7: one vector per token -> 'does not pool', and no progress.json
    with the token count as the dimension."""
    fake, url = serve(per_token=True)
    desc = write_descriptions(tmp_path / 'd.jsonl')
    out = tmp_path / 'store'
    proc = embed_cli(desc, '--encoder', 'smollm2', '--api-base', url,
                     '--out', str(out))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert 'does not pool' in line and '--pooling mean' in line
    assert not os.path.exists(str(out) + '.partial')
    assert not os.path.exists(out)


def test_server_error_that_never_succeeds_fails_fast(serve, tmp_path):
    """13.8: a 500 on every request is retried once, not six times over
    half a minute; the server's reason is in the one line; rc 3."""
    reason = 'Llama model must be created with embedding=True'
    fake, url = serve(policy=lambda body, n: {'status': 500,
                                              'message': reason})
    desc = write_descriptions(tmp_path / 'd.jsonl')
    t = time.monotonic()
    proc = embed_cli(desc, '--encoder', 'm', '--api-base', url, '--out',
                     str(tmp_path / 'store'))
    assert proc.returncode == 3
    assert reason in one_error_line(proc)
    assert fake.statuses[500] == 2  # the probe and its one retry
    assert time.monotonic() - t < 60  # (the CLI's own start-up included)


def test_bad_descriptions_file_is_one_line(tmp_path, serve):
    """13.8: a raw DescriptionFileError becomes one line naming file and
    line, rc 2."""
    fake, url = serve()
    desc = write_descriptions(tmp_path / 'd.jsonl')
    with open(desc, 'a') as f:
        f.write('{"key": "train/77", "text": ""}\n')
    proc = embed_cli(desc, '--encoder', 'm', '--api-base', url, '--out',
                     str(tmp_path / 'store'))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert 'd.jsonl:11' in line and 'train/77' in line


def test_server_dies_mid_run_then_resume(tmp_path):
    """13.8: the server killed mid-run -> rc 3 'cannot reach ... rerun';
    the rerun against a new server finishes the store."""
    # 20 rows: 10 requests of 0.3 s, the kill lands after 2 of them
    texts = [f'text {i} ' + 'x ' * i for i in range(20)]
    desc = write_descriptions(tmp_path / 'd.jsonl', texts)
    out = tmp_path / 'store'

    def start():
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'tests', '_openai_server.py'),
             '--latency', '0.3'], stdout=subprocess.PIPE, text=True)
        port = int(proc.stdout.readline().split()[1])
        return proc, f'http://127.0.0.1:{port}/v1'
    server, url = start()
    args = [desc, '--encoder', 'm', '--out', str(out), '--batch-size', '2',
            '--flush-every', '2', '--concurrency', '1', '--no-progress']
    env = dict(os.environ, OPENAI_API_KEY=SENTINEL)
    tool = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'tools', 'embed.py'), *args,
         '--api-base', url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env)
    try:
        progress = os.path.join(str(out) + '.partial', 'progress.json')
        deadline = time.time() + 240
        while time.time() < deadline:
            if os.path.exists(progress) and json.load(
                    open(progress))['done'] >= 4:
                break
            time.sleep(0.1)
        server.kill()
        server.wait()
        stdout, stderr = tool.communicate(timeout=240)
    finally:
        server.kill()
        tool.kill()
    assert tool.returncode == 3, stderr
    line = one_error_line(subprocess.CompletedProcess([], 3, stdout, stderr))
    assert 'cannot reach' in line and 'rerun' in line
    server, url = start()
    try:
        proc = embed_cli(*args, '--api-base', url)
    finally:
        server.kill()
    assert proc.returncode == 0, proc.stderr
    assert 'resumed at row 0 ' not in proc.stdout
    store = EmbeddingStore(str(out))
    np.testing.assert_allclose(
        store.embeddings,
        expected([texts[int(k.split('/')[1])] for k in store.keys()], 16),
        rtol=1e-3, atol=1e-3)


def test_model_the_server_does_not_list_is_refused(serve, tmp_path):
    """13.10: the server lists its models; another name is refused before
    any embedding request."""
    fake, url = serve(models=['smollm2-embed'])
    desc = write_descriptions(tmp_path / 'd.jsonl')
    proc = embed_cli(desc, '--encoder', 'does-not-exist', '--api-base', url,
                     '--out', str(tmp_path / 'store'))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "does not serve model 'does-not-exist'" in line
    assert 'smollm2-embed' in line
    assert fake.bodies == []  # no embedding request was sent
    enc = build_text_encoder('smollm2-embed', api_base=url)
    assert enc.dim == 16


def test_pipeline_with_api_encoder_in_process(serve, tmp_path):
    fake, url = serve()
    enc = build_text_encoder('local-model', api_base=url, request_size=2)
    desc = write_descriptions(tmp_path / 'd.jsonl', TEXTS[:5])
    res = embed_descriptions(desc, enc, str(tmp_path / 's'), batch_size=4,
                             progress=False)
    assert res.rows == 5 and res.dim == 16 and res.truncated is None
