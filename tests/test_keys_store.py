"""Sample keys, descriptions JSONL and the embedding store format."""
import json
import pickle

import numpy as np
import pytest
from conftest import random_store

from gpt4image_mm.datasets.store import (
    EmbeddingStore,
    StoreError,
    StoreWriter,
    write_store,
)
from gpt4image_mm.utils import keys as K
from gpt4image_mm.utils.descriptions import (
    DescriptionFileError,
    DescriptionWriter,
    KeyStates,
    read_descriptions,
    texts_checksum,
)


def test_key_helpers():
    assert K.file_key('/data/in1k/train/n01/x.JPEG', '/data/in1k/train') == \
        'n01/x.JPEG'
    assert K.class_key('T-shirt/top') == 'class:T-shirt/top'
    assert K.description_key('a/b.png', 3) == 'a/b.png#3'
    assert K.base_key('class:cat#12') == 'class:cat'
    assert K.base_key('a#b.png') == 'a#b.png'
    with pytest.raises(ValueError, match='line breaks'):
        K.check_key('a\nb')


def test_store_roundtrip_and_mmap(tmp_path):
    keys = [f'k{i}' for i in range(5)]
    vecs = random_store(tmp_path / 's', keys, dim=4)
    store = EmbeddingStore(str(tmp_path / 's'), expected_dim=4)
    assert store.keys() == keys
    assert isinstance(store.embeddings, np.memmap)
    np.testing.assert_array_equal(store.row(2), vecs['k2'])
    manifest = json.loads((tmp_path / 's' / 'manifest.json').read_text())
    assert manifest['count'] == 5 and manifest['dtype'] == 'float16'
    assert manifest['normalized'] is True and manifest['format_version'] == 1
    # workers get no copy of the map: they map the file themselves
    clone = pickle.loads(pickle.dumps(store))
    assert clone._array is None
    np.testing.assert_array_equal(clone.row(2), vecs['k2'])


def test_store_errors(tmp_path):
    keys = ['a', 'b']
    random_store(tmp_path / 's', keys, dim=4)
    with pytest.raises(StoreError, match='4-d but the model aligns to 8-d'):
        EmbeddingStore(str(tmp_path / 's'), expected_dim=8)
    with pytest.raises(StoreError, match="expected 'clip'"):
        EmbeddingStore(str(tmp_path / 's'), expected_encoder='clip')
    # NaN rows are refused when written...
    bad = np.ones((2, 4), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(StoreError, match="key 'b'"):
        write_store(str(tmp_path / 'nan'), keys, bad, encoder='x')
    assert not (tmp_path / 'nan').exists()
    # ...and found when read from a store that was edited afterwards
    arr = np.load(tmp_path / 's' / 'embeddings.npy', mmap_mode='r+')
    arr[1] = 0
    arr.flush()
    store = EmbeddingStore(str(tmp_path / 's'))
    with pytest.raises(StoreError, match='all zero'):
        store.row(1, key='b')
    with pytest.raises(StoreError, match='1 rows'):
        store.verify()
    # count mismatch, unknown version, missing manifest
    (tmp_path / 's' / 'keys.txt').write_text('a\n')
    with pytest.raises(StoreError, match='1 keys but the manifest counts 2'):
        EmbeddingStore(str(tmp_path / 's')).keys()
    m = json.loads((tmp_path / 's' / 'manifest.json').read_text())
    m['format_version'] = 99
    (tmp_path / 's' / 'manifest.json').write_text(json.dumps(m))
    with pytest.raises(StoreError, match='version 99'):
        EmbeddingStore(str(tmp_path / 's'))
    (tmp_path / 's' / 'manifest.json').unlink()
    with pytest.raises(StoreError, match='no manifest.json'):
        EmbeddingStore(str(tmp_path / 's'))


def test_store_writer_is_atomic(tmp_path):
    writer = StoreWriter(str(tmp_path / 's'), count=3, dim=2)
    writer.rows[:2] = 1.0
    # not committed yet: nothing at the destination a reader would accept
    assert not (tmp_path / 's').exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StoreError, match='exists'):
        (tmp_path / 't').mkdir()
        StoreWriter(str(tmp_path / 't'), count=1, dim=2)


def _failed(path):
    return {k: r['error'] for k, r in KeyStates.load(str(path)).failed.items()}


def test_one_latest_record_rule_for_caption_merge_and_embed(tmp_path):
    """A success is final: a failure logged after it (a retry of a done key)
    does not make the key failed, for the resume state, merge and embed
    alike. The old ``failed_keys`` said the key was failed."""
    from gpt4image_mm.captioning.merge import merge
    from gpt4image_mm.embedding.embed import load_description_texts
    path = tmp_path / 'd.jsonl'
    with DescriptionWriter(str(path)) as w:
        w.write({'key': 'a', 'error': 'timeout'})
        w.write({'key': 'a', 'text': 'a cat'})
        w.write({'key': 'a', 'error': 'late retry'})
        w.write({'key': 'b', 'error': 'first'})
        w.write({'key': 'b', 'error': 'second'})
    assert _failed(path) == {'b': 'second'}
    out = str(tmp_path / 'm.jsonl')
    assert merge(out, [str(path)])['failures'] == 1
    texts = load_description_texts(out)
    assert texts.keys == ['a'] and texts.failures == 1


def test_descriptions_torn_tail_and_bad_records(tmp_path):
    path = tmp_path / 'd.jsonl'
    with DescriptionWriter(str(path)) as w:
        w.write({'key': 'a', 'text': 'a cat'})
        w.write({'key': 'b', 'error': 'timeout'})
    with open(path, 'ab') as f:
        f.write(b'{"key": "c", "te')  # killed mid-write
    assert list(read_descriptions(str(path))) == ['a']
    assert _failed(path) == {'b': 'timeout'}
    with DescriptionWriter(str(path)) as w:  # cuts the torn line
        w.write({'key': 'b', 'text': 'a dog'})
    lines = path.read_bytes().split(b'\n')
    assert lines[-1] == b'' and all(json.loads(x) for x in lines[:-1])
    assert list(read_descriptions(str(path))) == ['a', 'b']
    assert _failed(path) == {}

    bad = tmp_path / 'bad.jsonl'
    bad.write_bytes(b'{"key": "a", "text": "ok"}\n{"key": "b", "te\n{}\n')
    with pytest.raises(DescriptionFileError, match=r'bad.jsonl:2: not a JSON'):
        read_descriptions(str(bad))
    bad.write_bytes(b'{"key": "a", "text": "ok"}\n\xff\xfe\n')
    with pytest.raises(DescriptionFileError, match=r'bad.jsonl:2: not UTF-8'):
        read_descriptions(str(bad))
    bad.write_text('{"key": "a", "text": ""}\n')
    with pytest.raises(DescriptionFileError, match=r":1: record 'a' has an empty"):
        read_descriptions(str(bad))
    bad.write_text(json.dumps({'key': 'a', 'text': 'x' * 1_000_000}) + '\n')
    with pytest.raises(DescriptionFileError, match='1000000 characters'):
        read_descriptions(str(bad))
    bad.write_text('{"key": "a", "text": "one"}\n{"key": "a", "text": "two"}\n')
    with pytest.raises(DescriptionFileError, match="duplicate key 'a'.*line 1"):
        read_descriptions(str(bad))
    assert read_descriptions(str(bad), on_duplicate='last')['a']['text'] == 'two'


def test_checksum_ignores_order():
    a = texts_checksum([('k1', 'x'), ('k2', 'y')])
    assert a == texts_checksum([('k2', 'y'), ('k1', 'x')])
    assert a != texts_checksum([('k1', 'x'), ('k2', 'z')])
