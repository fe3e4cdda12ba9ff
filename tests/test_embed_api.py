"""The embeddings-API encoder against a local endpoint speaking the OpenAI
embeddings format (also what vLLM / TEI servers speak)."""
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from gpt4image_mm.datasets.store import EmbeddingStore
from gpt4image_mm.embedding import build_text_encoder, embed_descriptions
from gpt4image_mm.embedding.encoders import EncoderError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = 'sk-test-secret-1234'


def raw_vector(text, dim):
    """Deterministic, unnormalised vector of a text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], 'big')
    return np.random.default_rng(seed).standard_normal(dim) * 3.0


class EmbeddingServer:
    """POST /v1/embeddings; answers out of order (clients must sort by
    ``index``); the first ``fail_first`` requests get a 500."""

    def __init__(self, dim=16, fail_first=0):
        self.dim, self.fail_first = dim, fail_first
        self.requests, self.auth = [], []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(
                    int(self.headers['Content-Length'])))
                with server.lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get('Authorization'))
                    n = len(server.requests)
                if self.path != '/v1/embeddings':
                    return self._send(404, {'error': {'message': 'nope'}})
                if n <= server.fail_first:
                    return self._send(500, {'error': {'message': 'boom'}},
                                      {'retry-after-ms': '10'})
                dim = body.get('dimensions') or server.dim
                inputs = body['input']
                data = [dict(object='embedding', index=i,
                             embedding=raw_vector(t, dim).tolist())
                        for i, t in enumerate(inputs)][::-1]
                self._send(200, dict(object='list', data=data,
                                     model=body['model'],
                                     usage=dict(prompt_tokens=1,
                                                total_tokens=1)))

            def _send(self, status, payload, headers=None):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_port}/v1'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    s = EmbeddingServer(fail_first=1)
    yield s
    s.close()


TEXTS = [f'description number {i} ' + 'word ' * (i % 7) for i in range(10)]


def expected(texts, dim):
    v = np.stack([raw_vector(t, dim) for t in texts])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_encoder_batches_sorts_retries_and_normalises(server, monkeypatch):
    monkeypatch.setenv('MY_EMBED_KEY', KEY)
    enc = build_text_encoder('openai:text-embedding-3-small',
                             api_base=server.url, api_key_env='MY_EMBED_KEY',
                             dimensions=12, request_size=4, concurrency=2)
    assert enc.dim == 12 and enc.name == 'openai:text-embedding-3-small'
    vec = enc.encode(TEXTS).numpy()
    np.testing.assert_allclose(vec, expected(TEXTS, 12), rtol=1e-5,
                               atol=1e-6)
    ok = [r for r in server.requests[1:]]  # the first got a 500, retried
    assert sorted(len(r['input']) for r in ok) == [2, 4, 4]
    assert all(r['dimensions'] == 12 and r['model'] ==
               'text-embedding-3-small' for r in ok)
    assert set(server.auth) == {f'Bearer {KEY}'}
    assert enc.truncated is None  # APIs reject, they do not truncate


def test_unknown_model_probes_dim_and_needs_a_key(server, monkeypatch):
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    with pytest.raises(EncoderError, match='OPENAI_API_KEY'):
        build_text_encoder('openai:text-embedding-3-small')
    enc = build_text_encoder('BAAI/bge-small-en', api_base=server.url)
    assert enc.dim == 16  # asked the server once (after its retried 500)
    assert server.auth[-1] == 'Bearer EMPTY'


def test_tool_against_endpoint(server, tmp_path):
    desc = tmp_path / 'd.jsonl'
    with open(desc, 'w') as f:
        for i, t in enumerate(TEXTS):
            f.write(json.dumps(dict(key=f'train/{i}', text=t)) + '\n')
        f.write(json.dumps(dict(key='train/99', error='refused')) + '\n')
    out = tmp_path / 'store'
    env = dict(os.environ, MY_EMBED_KEY=KEY)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tools', 'embed.py'), str(desc),
         '--encoder', 'openai:text-embedding-3-large', '--api-base',
         server.url, '--api-key-env', 'MY_EMBED_KEY', '--dimensions', '8',
         '--batch-size', '3', '--out', str(out), '--store-dtype', 'float32'],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert KEY not in proc.stdout + proc.stderr  # never logged
    assert 'skipped failures: 1' in proc.stdout
    store = EmbeddingStore(str(out))
    keys = store.keys()
    assert keys == sorted(f'train/{i}' for i in range(10))
    want = expected([TEXTS[int(k.split('/')[1])] for k in keys], 8)
    np.testing.assert_allclose(store.embeddings, want, rtol=1e-5, atol=1e-6)
    assert store.manifest['encoder'] == 'openai:text-embedding-3-large'
    assert store.manifest['encoder_settings']['dimensions'] == 8
    assert store.manifest['truncated'] is None


def test_pipeline_with_api_encoder_in_process(server, tmp_path):
    enc = build_text_encoder('local-model', api_base=server.url,
                             request_size=2)
    desc = tmp_path / 'd.jsonl'
    with open(desc, 'w') as f:
        for i, t in enumerate(TEXTS[:5]):
            f.write(json.dumps(dict(key=f'k{i}', text=t)) + '\n')
    res = embed_descriptions(str(desc), enc, str(tmp_path / 's'),
                             batch_size=4, progress=False)
    assert res.rows == 5 and res.dim == 16 and res.truncated is None
