"""Opt-in (``make test-server``): a real OpenAI-compatible server that nobody
here wrote -- llama-cpp-python's ``llama_cpp.server``, built in its own venv
by ``tools/ci/server_venv.sh`` -- serving the bundled SmolLM2 GGUF on
127.0.0.1 (a second instance with pooled embeddings for ``tools/embed.py``).
Class-level captioning end to end, a server killed mid-run then a rerun,
and the store against the server's own vectors.

Skipped unless ``GPT4IMAGE_LLAMA_VENV`` names that venv (compiling llama.cpp
takes ~13 min on 2 cores: not part of ``make test``). Measured figures are
printed (``-s``) and recorded in docs/captioning.md.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from gpt4image_mm.utils.assets import smollm2_gguf
from gpt4image_mm.utils.descriptions import iter_records, read_descriptions

LLAMA_VENV = os.environ.get('GPT4IMAGE_LLAMA_VENV')
pytestmark = pytest.mark.skipif(
    not LLAMA_VENV, reason='opt-in: make test-server (builds llama.cpp)')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_ENV = 'LLAMA_SERVER_KEY'  # the key travels only through this variable
KEY = 'local-test-key'
CLASSES = ('bag', 'sandal', 'shirt', 'sneaker', 'coat')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` in the server venv, on loopback."""

    def __init__(self, alias: str, *extra: str, port: int = 0,
                 gguf: str = ''):
        self.alias, self.extra = alias, extra
        self.gguf = gguf or smollm2_gguf()
        self.port = port or _free_port()
        self.url = f'http://127.0.0.1:{self.port}/v1'
        self.proc = None

    def start(self, ready_s: float = 180) -> 'LlamaServer':
        cmd = [os.path.join(LLAMA_VENV, 'bin', 'python'), '-m',
               'llama_cpp.server', '--model', self.gguf,
               '--model_alias', self.alias, '--host', '127.0.0.1',
               '--port', str(self.port), '--api_key', KEY,
               '--n_threads', '1', '--n_ctx', '2048', *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, 'llama_cpp.server exited'
            try:
                self.get('/models')
                return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f'llama_cpp.server not up after {ready_s} s')

    def request(self, path: str, body=None):
        req = urllib.request.Request(
            self.url + path, None if body is None else
            json.dumps(body).encode(),
            {'Authorization': f'Bearer {KEY}',
             'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)

    def get(self, path: str):
        return self.request(path)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


@pytest.fixture(scope='module')
def chat_server():
    srv = LlamaServer('smollm2').start()
    yield srv
    srv.kill()


def pooling_copy(src: str, dst: str) -> str:
    """A copy of a GGUF whose metadata asks for mean pooling: llama.cpp
    answers one vector per token for a causal LM otherwise, and
    llama_cpp.server has no option for it."""
    import gguf
    from gguf.scripts.gguf_new_metadata import (
        MetadataDetails,
        copy_with_new_metadata,
    )
    reader = gguf.GGUFReader(src)
    arch = bytes(reader.fields[gguf.Keys.General.ARCHITECTURE].parts[-1])
    arch = arch.decode()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    key = gguf.Keys.LLM.POOLING_TYPE.format(arch=arch)
    copy_with_new_metadata(reader, writer, {key: MetadataDetails(
        gguf.GGUFValueType.UINT32, int(gguf.PoolingType.MEAN))}, [])
    return dst


@pytest.fixture(scope='module')
def embed_server(tmp_path_factory):
    gguf_file = pooling_copy(smollm2_gguf(), str(
        tmp_path_factory.mktemp('gguf') / 'smollm2-mean-pooling.gguf'))
    srv = LlamaServer('smollm2-embed', '--embedding', 'true',
                      gguf=gguf_file).start()
    yield srv
    srv.kill()


def _tool(name: str, *args: str, timeout: float = 900):
    env = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE='1',
               **{KEY_ENV: KEY})
    return subprocess.run([sys.executable, os.path.join(REPO, 'tools', name),
                           *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _caption_args(url: str, classes_file: str, out: str, k: int,
                  max_tokens: int):
    return ('--classes', classes_file, '--per-class', str(k),
            '--prompt', 'class', '--backend', 'openai', '--base-url', url,
            '--api-key-env', KEY_ENV, '--model', 'smollm2', '--max-tokens',
            str(max_tokens), '--concurrency', '2', '--out', out)


def _summary(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _classes(tmp_path) -> str:
    path = tmp_path / 'classes.txt'
    path.write_text('\n'.join(CLASSES) + '\n')
    return str(path)


def test_class_level_caption_end_to_end(tmp_path, chat_server):
    out = str(tmp_path / 'classes.jsonl')
    args = _caption_args(chat_server.url, _classes(tmp_path), out, 3, 32)
    proc = _tool('caption.py', *args)
    assert proc.returncode == 0, proc.stderr
    res = _summary(proc)
    recs = read_descriptions(out)
    assert res['succeeded'] == len(recs) == 15 and res['failed'] == 0
    assert all(r['model'] for r in recs.values())
    # the summary's tokens are the sum of what the server reported
    assert res['prompt_tokens'] == sum(
        r['usage']['prompt_tokens'] for r in recs.values()) > 0
    assert res['completion_tokens'] == sum(
        r['usage']['completion_tokens'] for r in recs.values()) > 0
    assert res['truncated'] == sum(bool(r.get('truncated'))
                                   for r in recs.values())
    print(f'\nMEASURED caption: 15 requests in {res["elapsed_s"]} s, '
          f'prompt {res["prompt_tokens"]} + completion '
          f'{res["completion_tokens"]} tokens, truncated '
          f'{res["truncated"]}')
    again = _tool('caption.py', *args)  # resume: nothing left to ask
    assert again.returncode == 0 and _summary(again)['attempted'] == 0
    assert len(list(iter_records(out))) == 15


def test_server_killed_mid_run_then_rerun(tmp_path):
    srv = LlamaServer('smollm2').start()
    out = str(tmp_path / 'classes.jsonl')
    args = _caption_args(srv.url, _classes(tmp_path), out, 4, 48) + (
        '--max-retries', '1', '--timeout', '30')
    env = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE='1',
               **{KEY_ENV: KEY})
    run = subprocess.Popen([sys.executable, os.path.join(
        REPO, 'tools', 'caption.py'), *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = sum(1 for _ in iter_records(out)) if os.path.exists(
                out) else 0
            if done >= 3:
                break
            time.sleep(0.5)
        srv.kill()  # mid-run: SIGKILL, requests in flight are cut
        stdout, stderr = run.communicate(timeout=600)
    finally:
        run.kill()
        srv.kill()
    assert run.returncode == 1, stderr  # failures left, rerun to retry
    assert 'Traceback' not in stderr
    first = json.loads(stdout.strip().splitlines()[-1])
    assert first['succeeded'] >= 3 and first['failed_left'] > 0
    srv = LlamaServer('smollm2', port=srv.port).start()
    try:
        proc = _tool('caption.py', *args)
    finally:
        srv.kill()
    assert proc.returncode == 0, proc.stderr
    again = _summary(proc)
    successes = [r['key'] for _, r in iter_records(out) if 'error' not in r]
    assert sorted(successes) == sorted(set(successes))  # one per key
    assert len(successes) == 20
    print(f'\nMEASURED kill: {first["succeeded"]} done and '
          f'{first["failed_left"]} failed before/at the kill, '
          f'{again["succeeded"]} redone on rerun')


def test_embed_store_matches_server_vectors(tmp_path, embed_server):
    desc = tmp_path / 'd.jsonl'
    texts = {f'class:{c}#0': f'A photo of a {c}, seen from the side.'
             for c in CLASSES}
    desc.write_text(''.join(json.dumps({'key': k, 'text': t}) + '\n'
                            for k, t in texts.items()))
    store = str(tmp_path / 'store')
    proc = _tool('embed.py', str(desc), '--encoder', 'openai:smollm2-embed',
                 '--api-base', embed_server.url, '--api-key-env', KEY_ENV,
                 '--out', store, '--no-progress')
    assert proc.returncode == 0, proc.stderr
    from gpt4image_mm.datasets.store import EmbeddingStore
    st = EmbeddingStore(store)
    keys, vecs = st.keys(), np.asarray(st.embeddings, dtype=np.float32)
    ref = embed_server.request('/embeddings', {
        'model': 'smollm2-embed', 'input': [texts[k] for k in keys]})
    ref = np.asarray([d['embedding'] for d in ref['data']], np.float32)
    cos = (vecs * ref).sum(1) / (np.linalg.norm(vecs, axis=1)
                                 * np.linalg.norm(ref, axis=1))
    print(f'\nMEASURED embed: {len(keys)} x {vecs.shape[1]}, min cosine '
          f'to the server vectors {cos.min():.6f}')
    assert cos.min() >= 0.9999  # the store keeps fp16 by default
