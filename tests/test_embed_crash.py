"""Crash safety: a run killed mid-way leaves no store the dataset wrapper
accepts, and a rerun resumes and completes it."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import make_tiny_clip

from gpt4image_mm.datasets.store import EmbeddingStore, StoreError
from gpt4image_mm.embedding.embed import (
    PARTIAL_SUFFIX,
    PROGRESS_FILE,
    embed_descriptions,
)
from gpt4image_mm.embedding.encoders import build_text_encoder
from gpt4image_mm.utils.assets import minilm_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ('red blue cat dog boat tree sky grass small large photo near under '
         'water bright dark street window old new').split()


def write_desc(path, n, seed=0):
    rng = np.random.default_rng(seed)
    texts = {}
    with open(path, 'w') as f:
        for i in range(n):
            text = ' '.join(rng.choice(WORDS, rng.integers(3, 25)))
            texts[f'img/{i:04d}.jpg'] = text
            f.write(json.dumps(dict(key=f'img/{i:04d}.jpg', text=text)) + '\n')
    return str(path), texts


def progress_of(out):
    try:
        with open(os.path.join(out + PARTIAL_SUFFIX, PROGRESS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def test_sigkill_mid_run_then_resume(tmp_path):
    model = minilm_dir()
    desc, texts = write_desc(tmp_path / 'd.jsonl', 120)
    out = str(tmp_path / 'store')
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'embed.py'), desc,
           '--encoder', model, '--out', out, '--batch-size', '2',
           '--flush-every', '2', '--store-dtype', 'float32', '--no-progress']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            prog = progress_of(out)
            if prog and prog['done'] >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, 'the run ended before it could be killed'
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = progress_of(out)['done']
    assert 0 < killed_at < 120
    # nothing the dataset wrapper (EmbeddingStore) would open
    with pytest.raises(StoreError):
        EmbeddingStore(out)
    with pytest.raises(StoreError):
        EmbeddingStore(out + PARTIAL_SUFFIX)

    enc = build_text_encoder(model)
    res = embed_descriptions(desc, enc, out, batch_size=32,
                             store_dtype='float32', progress=False)
    assert res.resumed_rows == killed_at and res.rows == 120
    assert not os.path.exists(out + PARTIAL_SUFFIX)
    store = EmbeddingStore(out)
    keys = store.keys()
    assert keys == sorted(texts)
    ref = enc.encode([texts[k] for k in keys]).numpy()
    cos = (np.asarray(store.embeddings) * ref).sum(1)
    assert cos.min() > 0.9999


class Boom(Exception):
    pass


def test_exception_mid_run_keeps_the_finished_rows(tmp_path):
    make_tiny_clip(tmp_path / 'clip')
    enc = build_text_encoder(str(tmp_path / 'clip'))
    desc, texts = write_desc(tmp_path / 'd.jsonl', 50)
    out = str(tmp_path / 'store')

    def crash(done):
        if done >= 24:
            raise Boom

    with pytest.raises(Boom):
        embed_descriptions(desc, enc, out, batch_size=4, flush_every=8,
                           progress=False, on_batch=crash)
    assert not os.path.exists(out)
    # 24 were encoded, 16 flushed when it was due: the error saves the rest
    assert progress_of(out)['done'] == 24
    res = embed_descriptions(desc, enc, out, batch_size=4, progress=False)
    assert res.resumed_rows == 24
    fresh = embed_descriptions(desc, enc, str(tmp_path / 'fresh'),
                               batch_size=4, progress=False)
    np.testing.assert_allclose(EmbeddingStore(out).embeddings,
                               EmbeddingStore(fresh.out).embeddings,
                               atol=1e-3)


def test_stale_progress_of_other_descriptions_is_discarded(tmp_path):
    make_tiny_clip(tmp_path / 'clip')
    enc = build_text_encoder(str(tmp_path / 'clip'))
    desc, _ = write_desc(tmp_path / 'd.jsonl', 30)
    out = str(tmp_path / 'store')
    with pytest.raises(Boom):
        embed_descriptions(desc, enc, out, batch_size=4, flush_every=4,
                           progress=False,
                           on_batch=lambda d: (_ for _ in ()).throw(Boom)
                           if d >= 12 else None)
    desc2, texts2 = write_desc(tmp_path / 'd2.jsonl', 30, seed=1)
    res = embed_descriptions(desc2, enc, out, batch_size=4, progress=False)
    assert res.resumed_rows == 0
    ref = enc.encode([texts2[k] for k in sorted(texts2)]).numpy()
    got = np.asarray(EmbeddingStore(out).embeddings, np.float32)
    assert (got * ref).sum(1).min() > 0.999
