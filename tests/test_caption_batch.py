"""--backend openai-batch against a local files + batches endpoint."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _openai_server import FakeOpenAI, content_id, make_images, start_server  # noqa: E402

from gpt4image_mm.captioning.batch_api import state_path  # noqa: E402
from gpt4image_mm.cli.caption import caption  # noqa: E402
from gpt4image_mm.utils.descriptions import iter_records  # noqa: E402


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-batch-test-key-123456')


def test_batch_submit_poll_collect_resume(tmp_path):
    root = str(tmp_path / 'imgs')
    keys = make_images(root, per_class=5)
    bad = set()

    def policy(body, n):  # the first image of the first batch fails
        cid = content_id(body)
        if not bad:
            bad.add(cid)
        return {'status': 500, 'message': 'boom'} if cid in bad else None

    fake = FakeOpenAI(policy=policy, api_key='sk-batch-test-key-123456',
                      batch_polls=2)
    server, url = start_server(fake)
    out = str(tmp_path / 'd.jsonl')
    common = dict(images=root, model='gpt-4o-mini', base_url=url,
                  api_key_env='OPENAI_API_KEY', backend='openai-batch',
                  poll_interval=0.01,
                  batch_max_requests=4, progress=False)
    try:
        # 1. submit only (an interrupted run): ids land in the state file
        res = caption(out, wait=False, **common)
        assert 'rerun' in res['stopped'] and res['attempted'] == len(keys)
        st = json.load(open(state_path(out)))
        assert len(st['chunks']) == 3 and all(c['batch_id']
                                              for c in st['chunks'])
        assert len(fake.batches) == 3
        # 2. rerun: collects the same batches, submits nothing new
        res = caption(out, **common)
        assert len(fake.batches) == 3
        assert res['succeeded'] == len(keys) - 1 and res['failed_left'] == 1
        recs = [r for _, r in iter_records(out)]
        fails = [r for r in recs if 'error' in r]
        assert len(fails) == 1 and 'HTTP 500: boom' in fails[0]['error']
        ok = [r for r in recs if 'error' not in r]
        assert all(r['prompt_id'] == 'generic-v1' and r['usage'][
            'prompt_tokens'] > 0 for r in ok)
        assert res['cost_usd'] > 0  # batch prices (half)
        # 3. the failed key goes into a new batch and succeeds
        bad.clear()
        bad.add('none')
        res = caption(out, **common)
        assert res['ok'] and len(fake.batches) == 4
        succ = sorted(r['key'] for _, r in iter_records(out)
                      if 'error' not in r)
        assert succ == keys
        # request files are removed once collected; nothing local was sent
        left = os.listdir(out + '.batch')
        assert not [f for f in left if f.endswith('.requests.jsonl')]
        sent = b''.join(fake.bodies).decode('utf-8', 'replace')
        assert str(tmp_path) not in sent
        assert not any(k in sent for k in keys)
    finally:
        server.shutdown()


def test_batch_crash_between_create_and_save_is_found(tmp_path):
    """A batch created but not recorded is found by its metadata, not paid
    for twice."""
    from gpt4image_mm.captioning.batch_api import BatchState
    root = str(tmp_path / 'imgs')
    keys = make_images(root, classes=('x',), per_class=3)
    fake = FakeOpenAI(batch_polls=1)
    server, url = start_server(fake)
    out = str(tmp_path / 'd.jsonl')
    common = dict(images=root, model='m', base_url=url,
                  backend='openai-batch', poll_interval=0.01, progress=False)
    try:
        caption(out, wait=False, **common)
        st = BatchState(state_path(out))
        st.chunks[0]['batch_id'] = None  # as if killed before the save
        st.chunks[0]['status'] = 'written'
        st.save()
        res = caption(out, **common)
        assert res['ok'] and len(fake.batches) == 1
        assert sorted(r['key'] for _, r in iter_records(out)) == keys
    finally:
        server.shutdown()


def test_batch_resumes_from_another_working_directory(tmp_path,
                                                      monkeypatch):
    """The state names chunk files relative to itself (resume from any
    directory)."""
    root = str(tmp_path / 'imgs')
    keys = make_images(root, classes=('x',), per_class=3)
    fake = FakeOpenAI(batch_polls=1)
    server, url = start_server(fake)
    (tmp_path / 'runs').mkdir()
    (tmp_path / 'elsewhere').mkdir()
    common = dict(images=root, model='m', base_url=url,
                  backend='openai-batch', poll_interval=0.01, progress=False)
    try:
        monkeypatch.chdir(tmp_path)
        caption(os.path.join('runs', 'd.jsonl'), wait=False, **common)
        monkeypatch.chdir(tmp_path / 'elsewhere')
        res = caption(os.path.join('..', 'runs', 'd.jsonl'), **common)
        assert res['ok'] and len(fake.batches) == 1
    finally:
        server.shutdown()
    out = str(tmp_path / 'runs' / 'd.jsonl')
    assert sorted(r['key'] for _, r in iter_records(out)) == keys
    st = json.load(open(state_path(out)))
    assert all('/' not in c['keys'] for c in st['chunks'])


def test_answers_of_another_chunk_are_never_written_to_this_ones_keys(
        tmp_path):
    """A result whose custom_id names another chunk is
    refused; this chunk's keys become failures, not wrong successes."""
    root = str(tmp_path / 'imgs')
    keys = make_images(root, classes=('x',), per_class=4)
    fake = FakeOpenAI(batch_polls=1)
    server, url = start_server(fake)
    out = str(tmp_path / 'd.jsonl')
    common = dict(images=root, model='m', base_url=url,
                  backend='openai-batch', poll_interval=0.01,
                  batch_max_requests=2, progress=False)
    try:
        caption(out, wait=False, **common)
        first, second = list(fake.batches.values())
        # the second batch answers the first chunk's requests
        second['input_file_id'] = first['input_file_id']
        res = caption(out, **common)
    finally:
        server.shutdown()
    st = json.load(open(state_path(out)))
    chunk2 = [k for k, _ in map(json.loads, open(os.path.join(
        out + '.batch', st['chunks'][1]['keys'])))]
    recs = [r for _, r in iter_records(out)]
    ok = {r['key'] for r in recs if 'error' not in r}
    failed = {r['key']: r['error'] for r in recs if 'error' in r}
    assert ok == set(keys) - set(chunk2) and set(failed) == set(chunk2)
    assert all('not of chunk' in e for e in failed.values())
    assert res['failed_left'] == 2 and not res['ok']


def test_batch_asks_renamed_classes_again_and_keeps_the_answers(tmp_path):
    """A rerun with corrected class names submits the renamed class's keys
    and writes their answers as superseding ones (a done key's answer is
    never dropped when it was asked for a new name)."""
    from gpt4image_mm.utils.descriptions import read_descriptions
    root = str(tmp_path / 'imgs')
    keys = make_images(root, per_class=2)
    fake = FakeOpenAI(api_key='sk-batch-test-key-123456', batch_polls=1)
    server, url = start_server(fake)
    out = str(tmp_path / 'd.jsonl')
    names = tmp_path / 'names.json'
    names.write_text(json.dumps({'cat': 'kitten'}))
    common = dict(images=root, model='gpt-4o-mini', base_url=url,
                  api_key_env='OPENAI_API_KEY', backend='openai-batch',
                  poll_interval=0.01, prompt='class', progress=False)
    try:
        assert caption(out, **common)['ok']
        res = caption(out, class_names=str(names), **common)
        assert res['ok'] and res['names_changed'] == 2
        assert res['succeeded'] == 2 and fake.n_requests == len(keys) + 2
        again = caption(out, class_names=str(names), **common)
        assert again['attempted'] == 0 and fake.n_requests == len(keys) + 2
    finally:
        server.shutdown()
    texts = {k: r['text'] for k, r in read_descriptions(out).items()}
    assert all('kitten' in texts[k] for k in keys if k.startswith('cat/'))
    assert all('a photo of a dog' in texts[k] for k in keys
               if k.startswith('dog/'))
    redos = [r['key'] for _, r in iter_records(out) if r.get('redo')]
    assert sorted(redos) == [k for k in keys if k.startswith('cat/')]
