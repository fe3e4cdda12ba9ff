"""caption.py against a local OpenAI-wire server that injects faults."""
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _openai_server import make_images  # noqa: E402

from gpt4image_mm.captioning.runner import TokenBucket  # noqa: E402
from gpt4image_mm.cli.caption import (
    caption,  # noqa: E402
    main,  # noqa: E402
)
from gpt4image_mm.utils.descriptions import iter_records, read_descriptions  # noqa: E402

KEY = 'sk-test-SECRET-0123456789abcdef'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def images(tmp_path):
    root = str(tmp_path / 'imgs')
    return root, make_images(root, per_class=4)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', KEY)


def records(path):
    return [r for _, r in iter_records(path)]


def successes(path):
    out = {}
    for r in records(path):
        if 'error' not in r:
            assert r['key'] not in out, f'two successes for {r["key"]}'
            out[r['key']] = r
    return out


def test_faults_are_retried_or_recorded(tmp_path, images, serve):
    """429+Retry-After, 500, slow and timed-out answers are retried by the
    SDK and end as successes; empty answers and refusals are failures; a
    rerun retries only those."""
    root, keys = images
    plan = ['429', '500', 'slow', 'timeout', 'empty', 'refusal']
    assigned, attempts, times = {}, {}, {}

    def policy(body, n):
        from _openai_server import content_id
        cid = content_id(body)
        kind = assigned.setdefault(cid, plan[len(assigned)]
                                   if len(assigned) < len(plan) else 'ok')
        attempts[cid] = attempts.get(cid, 0) + 1
        times.setdefault(cid, []).append(time.monotonic())
        first = attempts[cid] == 1
        if kind == '429' and first:
            return {'status': 429, 'retry_after': 1}
        if kind == '500' and first:
            return {'status': 500}
        if kind == 'slow':
            return {'delay': 0.4}
        if kind == 'timeout' and first:
            return {'delay': 2.5}
        if kind == 'empty':
            return {'empty': True}
        if kind == 'refusal':
            return {'text': "I'm sorry, but I can't help with that."}
        return None

    fake, url = serve(api_key=KEY, policy=policy)
    out = str(tmp_path / 'd.jsonl')
    res = caption(out, images=root, model='gpt-4o-mini', base_url=url,
                  api_key_env='OPENAI_API_KEY', concurrency=3, timeout=1.5,
                  max_retries=3, progress=False)
    assert not res['ok'] and res['failed_left'] == 2
    ok = successes(out)
    assert len(ok) == len(keys) - 2
    errors = sorted(r['error'] for r in records(out) if 'error' in r)
    assert errors[0].startswith('empty answer') and 'refusal' in errors[1]
    by_kind = {k: c for c, k in assigned.items()}
    # Retry-After: 1 honoured between the 429 and its retry
    t429 = times[by_kind['429']]
    assert len(t429) == 2 and t429[1] - t429[0] >= 0.9
    assert attempts[by_kind['500']] == 2
    assert attempts[by_kind['timeout']] >= 2
    assert attempts[by_kind['slow']] == 1
    # no record carries the key; every success names model and prompt
    text = open(out).read()
    assert KEY not in text
    assert all(r['prompt_id'] == 'generic-v1' and r['usage']['prompt_tokens']
               for r in ok.values())

    # rerun: only the two failed keys are asked again
    before = fake.n_requests
    assigned.update({c: 'ok' for c in assigned})
    res2 = caption(out, images=root, model='gpt-4o-mini', base_url=url,
                   api_key_env='OPENAI_API_KEY', concurrency=3, timeout=1.5,
                   progress=False)
    assert res2['ok'] and res2['already_done'] == len(keys) - 2
    assert fake.n_requests - before == 2
    assert sorted(successes(out)) == keys
    assert len(read_descriptions(out)) == len(keys)


def caption_cli(*args, env_extra=None):
    """tools/caption.py as a user runs it, the user's OpenAI key set."""
    env = dict(os.environ, OPENAI_API_KEY=KEY, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tools', 'caption.py'), *args],
        capture_output=True, text=True, env=env, timeout=300)


def one_error_line(err):
    assert 'Traceback' not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith('error:')]
    assert len(lines) == 1, err
    return lines[0]


def test_openai_key_stays_with_openai(tmp_path, images, serve):
    """14.4: another endpoint never gets OPENAI_API_KEY; it gets the key of
    --api-key-env; nothing shows the key."""
    root, _ = images
    fake, url = serve()
    out = str(tmp_path / 'd.jsonl')
    proc = caption_cli('--images', root, '--out', out, '--model', 'm',
                       '--base-url', url, '--limit', '2', '--no-progress')
    assert proc.returncode == 0, proc.stderr
    assert fake.auth_seen and set(fake.auth_seen) == {'Bearer no-key'}
    other = 'sk-local-server-key-55555555'
    proc = caption_cli('--images', root, '--out', out, '--model', 'm',
                       '--base-url', url, '--api-key-env', 'MY_KEY',
                       '--limit', '2', '--no-progress',
                       env_extra={'MY_KEY': other})
    assert proc.returncode == 0, proc.stderr
    assert f'Bearer {other}' in fake.auth_seen
    assert not any(KEY in (a or '') for a in fake.auth_seen)
    blobs = proc.stdout + proc.stderr + open(out).read()
    assert KEY not in blobs and other not in blobs


@pytest.mark.parametrize('url,env,sent', [
    ('https://api.openai.com/v1', None, 'sk-openai'),
    ('https://api.openai.com.evil.example/v1', None, None),
    ('http://api.openai.com/v1', None, None),
    ('https://my-vllm.example/v1', None, None),
    ('https://my-vllm.example/v1', 'MY_KEY', 'sk-mine'),
    ('http://localhost:8000/v1', 'MY_KEY', 'sk-mine'),
    ('http://127.0.0.5:8000/v1', 'MY_KEY', 'sk-mine'),
    ('http://[::1]:8000/v1', 'MY_KEY', 'sk-mine'),
    ('http://gpu-box.example:8000/v1', 'MY_KEY', 'refused'),
    ('http://10.0.0.7:8000/v1', 'MY_KEY', 'refused'),
])
def test_key_policy(monkeypatch, url, env, sent):
    """14.4: the one policy every client set-up goes through."""
    from gpt4image_mm.utils.security import CredentialError, api_key_for
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-openai')
    monkeypatch.setenv('MY_KEY', 'sk-mine')
    if sent == 'refused':
        with pytest.raises(CredentialError, match='plain http'):
            api_key_for(url, env)
    else:
        assert api_key_for(url, env) == sent


def test_key_never_sent_over_plain_http(tmp_path, images, monkeypatch,
                                        capsys):
    root, _ = images
    monkeypatch.setenv('MY_KEY', 'sk-mine-0000000')
    out = str(tmp_path / 'd.jsonl')
    t = time.monotonic()
    rc = main(['--images', root, '--out', out, '--model', 'm', '--base-url',
               'http://gpu-box.invalid:8000/v1', '--api-key-env', 'MY_KEY',
               '--no-progress'])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and 'refusing to send the key from MY_KEY' in line
    assert time.monotonic() - t < 5 and not os.path.exists(out)


def test_auth_error_fails_fast_without_leaking_key(tmp_path, images, serve):
    """14.5, 13.8, 13.9: a wrong key -> rc 2 before any image is sent, one
    line with the server's reason (any error-body shape) and the fix."""
    root, _ = images
    fake, url = serve(api_key='sk-the-right-one-000000')
    out = str(tmp_path / 'd.jsonl')
    wrong = 'sk-wrong-key-0123456789'
    proc = caption_cli('--images', root, '--out', out, '--model', 'm',
                       '--base-url', url, '--api-key-env', 'MY_KEY',
                       '--concurrency', '2', '--no-progress',
                       env_extra={'MY_KEY': wrong})
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert 'HTTP 401' in line and 'Incorrect API key provided: ***' in line
    assert 'check the key in MY_KEY' in line
    assert fake.bodies == []  # stopped at the model listing: no image sent
    blobs = proc.stdout + proc.stderr + (open(out).read()
                                         if os.path.exists(out) else '')
    assert wrong not in blobs and KEY not in blobs
    # no key at all (OPENAI_API_KEY is not sent there): the fix says so
    proc = caption_cli('--images', root, '--out', out, '--model', 'm',
                       '--base-url', url, '--no-progress')
    assert proc.returncode == 2
    assert '--api-key-env VAR' in one_error_line(proc.stderr)


def test_llama_cpp_401_reason_is_kept(tmp_path, images, serve, monkeypatch,
                                      capsys):
    """13.9: llama-cpp-python answers {"detail": "Invalid API key"}."""
    root, _ = images
    fake, url = serve(api_key='sk-right-0000000', auth_shape='fastapi')
    monkeypatch.setenv('MY_KEY', 'sk-wrong-0000000')
    rc = main(['--images', root, '--out', str(tmp_path / 'd.jsonl'),
               '--model', 'm', '--base-url', url, '--api-key-env', 'MY_KEY',
               '--no-progress'])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and 'HTTP 401' in line and 'Invalid API key' in line


@pytest.mark.parametrize('shape', ['openai', 'fastapi', 'text'])
def test_error_body_shapes(tmp_path, images, serve, shape):
    """13.9: the server's reason is read from every common error shape."""
    root, _ = images
    reason = f'prompt too long for this server ({shape})'
    fake, url = serve(policy=lambda body, n: {'status': 400, 'shape': shape,
                                              'message': reason})
    out = str(tmp_path / 'd.jsonl')
    caption(out, images=root, model='m', base_url=url, limit=1,
            progress=False)
    (err,) = [r['error'] for r in records(out)]
    assert err == f'HTTP 400: {reason}'


def test_model_the_server_does_not_list_is_refused(tmp_path, images, serve,
                                                   capsys, caplog):
    """13.10: a server that echoes any model name must not record a wrong
    one: refuse it at start; Ollama's ':latest' is the same model."""
    root, _ = images
    fake, url = serve(models=['smollm2', 'llava:latest'])
    out = str(tmp_path / 'd.jsonl')
    rc = main(['--images', root, '--out', out, '--model', 'does-not-exist',
               '--base-url', url, '--no-progress'])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "does not serve model 'does-not-exist'" in line
    assert 'llava:latest, smollm2' in line and fake.bodies == []
    for model in ('smollm2', 'llava'):
        res = caption(out, images=root, model=model, base_url=url, limit=1,
                      progress=False)
        assert res['succeeded'] == 1
    # a server without a listing: a warning (a log record: the Python API
    # prints nothing itself), and the run goes on
    _, url2 = serve()
    res = caption(out, images=root, model='anything', base_url=url2,
                  limit=1, progress=False)
    assert res['succeeded'] == 1
    assert "lists no models; cannot check --model 'anything'" in \
        caplog.text


def test_class_level_token_estimate_counts_the_system_prompt(tmp_path):
    """13.11: the estimate is made on the exact messages sent: system +
    user, 3 tokens each + 3 for the reply (OpenAI's chat format), 4
    characters a token."""
    from gpt4image_mm.captioning.prompts import TEXT_SYSTEM
    from gpt4image_mm.captioning.runner import build_request
    from gpt4image_mm.cli.caption import build_plan
    classes = tmp_path / 'classes.txt'
    classes.write_text('bag\n')
    est = caption(str(tmp_path / 'c.jsonl'), model='m', classes=str(classes),
                  per_class=1, dry_run=True)
    prompt = ('Describe in detail what a photo of a bag typically looks '
              'like.')
    exact = 3 + (3 + len(TEXT_SYSTEM) // 4) + (3 + len(prompt) // 4)
    # 52 (llama.cpp counted 48 with SmolLM2's template; the old estimate,
    # the user message alone, was 23)
    assert exact == 3 + (3 + 28) + (3 + 15) == 52
    assert est['est_prompt_tokens_per_request'] == exact
    plan = build_plan(classes=str(classes), per_class=1)
    req = build_request(plan.item(0), 'data_url', 512, 85, None,
                        system=TEXT_SYSTEM)
    assert req.prompt == prompt and req.est_prompt_tokens == exact


@pytest.mark.parametrize('retries,note', [(0, False), (1, True)])
def test_after_retries_only_when_retried(tmp_path, images, serve, retries,
                                         note):
    """13.12: "(after retries)" only when there were retries."""
    root, _ = images
    fake, url = serve(policy=lambda body, n: {'status': 500,
                                              'message': 'boom',
                                              'retry_after': 0})
    out = str(tmp_path / 'd.jsonl')
    caption(out, images=root, model='m', base_url=url, limit=1,
            max_retries=retries, progress=False)
    (err,) = [r['error'] for r in records(out)]
    assert err.startswith('HTTP 500: boom')
    assert ('(after retries)' in err) == note
    assert fake.statuses[500] == 1 + retries


def test_timed_out_request_hangs_up_with_max_tokens(tmp_path, images, serve):
    """13.12: a timed-out request closes its connection (so the server can
    stop generating) and carried max_tokens."""
    root, _ = images
    fake, url = serve(policy=lambda body, n: {'delay': 1.5})
    out = str(tmp_path / 'd.jsonl')
    caption(out, images=root, model='m', base_url=url, limit=1, timeout=0.4,
            max_retries=0, max_tokens=77, progress=False)
    (err,) = [r['error'] for r in records(out)]
    assert err == 'timeout'
    deadline = time.time() + 5
    while fake.abandoned < 1 and time.time() < deadline:
        time.sleep(0.1)
    assert fake.abandoned == 1
    assert json.loads(fake.bodies[0])['max_tokens'] == 77


def test_bad_images_are_failures_not_crashes(tmp_path, images, serve):
    root, keys = images
    with open(os.path.join(root, 'cat', 'broken.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n garbage')
    good = os.path.join(root, 'cat', '0.jpg')
    data = open(good, 'rb').read()
    with open(os.path.join(root, 'dog', 'trunc.jpg'), 'wb') as f:
        f.write(data[:len(data) // 2])
    _, url = serve()
    out = str(tmp_path / 'd.jsonl')
    res = caption(out, images=root, model='m', base_url=url, progress=False)
    fails = {r['key']: r['error'] for r in records(out) if 'error' in r}
    assert set(fails) == {'cat/broken.png', 'dog/trunc.jpg'}
    assert all('cannot read image' in e and k in e for k, e in fails.items())
    assert res['succeeded'] == len(keys) and res['failed_left'] == 2


def test_class_prompt_limit_max_cost_dry_run(tmp_path, images, serve,
                                             capsys):
    root, keys = images
    fake, url = serve()
    out = str(tmp_path / 'd.jsonl')
    est = caption(out, images=root, model='gpt-4o', dry_run=True)
    assert est['requests'] == len(keys) and fake.n_requests == 0
    # 48x40 image -> one 512px tile: 85 + 170 tokens plus the prompt
    assert 255 < est['est_prompt_tokens_per_request'] < 300
    assert est['est_cost_usd'] > 0 and est['price_known']
    rc = main(['--images', root, '--out', out, '--model', 'gpt-4o',
               '--dry-run'])
    assert rc == 0 and json.loads(capsys.readouterr().out)['requests'] == 8

    res = caption(out, images=root, model='gpt-4o', base_url=url,
                  prompt='class', limit=3, progress=False)
    assert res['attempted'] == 3 and res['stopped'].startswith('--limit')
    recs = records(out)
    assert len(recs) == 3
    for r in recs:
        # the template's id, and which class name it said
        name = r['key'].split('/')[0]
        assert r['prompt_id'] == 'class-v1/name-' + hashlib.sha1(
            name.encode()).hexdigest()[:8]
        assert f'a photo of a {r["key"].split("/")[0]}' in r['text']
    # worst case of one request ~ 280 in + 300 out tokens at gpt-4o prices
    res = caption(out, images=root, model='gpt-4o', base_url=url,
                  max_cost=0.005, concurrency=1, progress=False)
    assert res['stopped'].startswith('--max-cost')
    assert 0 < res["cost_usd"] <= 0.005 and res['succeeded'] >= 1
    assert res['not_attempted'] > 0


def test_rate_limit_requests_per_minute(tmp_path, images, serve):
    root, keys = images
    _, url = serve()
    out = str(tmp_path / 'd.jsonl')
    t = time.monotonic()
    # 600/min = 10/s with a 2 s burst (20): 8 requests need no wait ...
    caption(out, images=root, model='m', base_url=url, rpm=600,
            progress=False)
    fast = time.monotonic() - t
    # ... 120/min = 2/s, burst 4: the last 4 of 8 requests wait 2 s
    os.remove(out)
    t = time.monotonic()
    caption(out, images=root, model='m', base_url=url, rpm=120,
            concurrency=8, progress=False)
    assert time.monotonic() - t >= 1.8 > fast


def test_token_bucket_long_run_rate():
    import asyncio

    async def go():
        b = TokenBucket(60 * 50, burst_s=0.1)  # 50/s, capacity 5
        t = time.monotonic()
        for _ in range(10):
            await b.take(4)  # 40 units: ~ (40 - 5) / 50 s
        return time.monotonic() - t
    assert asyncio.run(go()) >= 0.6


def test_shards_are_disjoint_and_merge(tmp_path, images, serve, capsys):
    root, keys = images
    _, url = serve()
    parts = []
    for i in range(3):
        p = str(tmp_path / f'part{i}.jsonl')
        res = caption(p, images=root, model='m', base_url=url,
                      shard=f'{i}/3', progress=False)
        assert res['ok']
        parts.append(p)
    got = [set(successes(p)) for p in parts]
    assert sum(len(g) for g in got) == len(keys)
    assert set().union(*got) == set(keys)
    # stable: the same shard again has nothing to do
    again = caption(parts[0], images=root, model='m', base_url=url,
                    shard='0/3', progress=False)
    assert again['attempted'] == 0 and again['already_done'] == len(got[0])
    merged = str(tmp_path / 'all.jsonl')
    assert main(['merge', merged] + parts + [parts[0]]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['successes'] == len(keys)
    assert info['duplicates_dropped'] == len(got[0])
    assert sorted(successes(merged)) == keys


def test_torn_tail_is_repaired_on_resume(tmp_path, images, serve):
    root, keys = images
    fake, url = serve()
    out = str(tmp_path / 'd.jsonl')
    caption(out, images=root, model='m', base_url=url, limit=3,
            progress=False)
    with open(out, 'ab') as f:
        f.write(b'{"key": "dog/3.png", "text": "half a rec')
    res = caption(out, images=root, model='m', base_url=url, progress=False)
    assert res['ok'] and res['already_done'] == 3
    assert sorted(successes(out)) == keys


def test_nothing_local_is_sent(tmp_path, images, serve):
    """Only pixels and the prompt go out: no path, no file name."""
    root, keys = images
    fake, url = serve()
    caption(str(tmp_path / 'd.jsonl'), images=root, model='m', base_url=url,
            progress=False)
    sent = b''.join(fake.bodies).decode()
    assert str(tmp_path) not in sent
    assert not any(k in sent for k in keys)
