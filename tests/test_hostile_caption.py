"""A hostile server and a hostile image tree against the real caption CLI.

Each test drives ``tools/caption.py`` as a subprocess against the local
OpenAI-wire server (tests/_openai_server.py) misbehaving in one way, then
reruns the same command against a well-behaved server: the rerun completes
and every key ends with exactly one success.
"""
import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _openai_server import FakeOpenAI, make_images, start_server  # noqa: E402

from gpt4image_mm.captioning.runner import SIGNAL_GRACE_S  # noqa: E402
from gpt4image_mm.utils.descriptions import (  # noqa: E402
    MAX_TEXT_CHARS,
    iter_records,
    read_descriptions,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_ENV = 'HOSTILE_CAPTION_KEY'
RUN_TIMEOUT = 120  # a hang fails the test instead of blocking the suite


def caption_cmd(root, out, url, *extra):
    return [sys.executable, os.path.join(REPO, 'tools', 'caption.py'),
            '--images', root, '--out', out, '--model', 'm', '--base-url', url,
            '--api-key-env', KEY_ENV, '--no-progress', *extra]


def run_caption(root, out, url, *extra):
    env = dict(os.environ, PYTHONPATH=REPO, **{KEY_ENV: 'sk-local-0000'})
    return subprocess.run(caption_cmd(root, out, url, *extra), env=env,
                          capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


def summary(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def records(out):
    return [r for _, r in iter_records(out)] if os.path.exists(out) else []


class Switchable:
    """A server policy that misbehaves until switched off (the rerun)."""

    def __init__(self, fault_of):
        self.fault_of, self.on = fault_of, True

    def __call__(self, body, n):
        return self.fault_of(body, n) if self.on else None


@pytest.fixture
def hostile(tmp_path):
    """``start(fault_of)``: a server misbehaving by ``fault_of(body, n)``;
    ``.on = False`` on the returned policy makes it behave."""
    servers = []

    def start(fault_of):
        policy = Switchable(fault_of)
        fake = FakeOpenAI(policy=policy)
        srv, url = start_server(fake)
        servers.append(srv)
        return fake, url, policy
    yield start
    for srv in servers:
        srv.shutdown()


def rerun_completes(root, out, url, keys, policy):
    """The same command against a well-behaved server: exit 0, and every
    key has exactly one success record."""
    policy.on = False
    again = run_caption(root, out, url)
    assert again.returncode == 0, again.stderr
    assert 'Traceback' not in again.stderr
    ok = collections.Counter(r['key'] for r in records(out)
                             if 'error' not in r)
    assert sorted(ok) == sorted(keys) and set(ok.values()) == {1}
    read_descriptions(out)  # what embed.py reads: no record is refused


# -- an oversized answer never becomes a record the readers refuse -------
def test_oversized_answers_are_cut_or_failed_never_unreadable(tmp_path,
                                                               hostile):
    root, out = str(tmp_path / 'imgs'), str(tmp_path / 'd.jsonl')
    keys = make_images(root, per_class=3)
    sizes = {1: 20_000_000, 2: 3 * MAX_TEXT_CHARS}  # bytes over / chars over

    fake, url, policy = hostile(lambda body, n: {'huge': sizes[n]}
                                if n in sizes else None)
    first = run_caption(root, out, url, '--concurrency', '1')
    assert first.returncode == 1, first.stderr  # a failure is left
    recs = records(out)
    fails = [r for r in recs if 'error' in r]
    assert len(fails) == 1 and 'answer body over' in fails[0]['error']
    cut = [r for r in recs if len(r.get('text', '')) > 1000]
    assert len(cut) == 1 and cut[0]['truncated'] is True
    assert len(cut[0]['text']) == MAX_TEXT_CHARS
    assert len(read_descriptions(out)) == len(keys) - 1
    rerun_completes(root, out, url, keys, policy)


# -- --timeout is a deadline; a signal ends the run in seconds -------------
def test_timeout_bounds_a_dripping_answer(tmp_path, hostile):
    root, out = str(tmp_path / 'imgs'), str(tmp_path / 'd.jsonl')
    keys = make_images(root, per_class=2)
    # one byte every 0.5 s: a ~400-byte answer would take minutes
    fake, url, policy = hostile(lambda body, n: {'drip': 0.5}
                                if n == 1 else None)
    first = run_caption(root, out, url, '--timeout', '2', '--max-retries',
                        '0', '--concurrency', '2')
    assert first.returncode == 1, first.stderr
    fails = [r for r in records(out) if 'error' in r]
    assert [r['error'] for r in fails] == ['timeout']
    rerun_completes(root, out, url, keys, policy)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_requests_in_flight(tmp_path, hostile, sig):
    root, out = str(tmp_path / 'imgs'), str(tmp_path / 'd.jsonl')
    keys = make_images(root, per_class=2)
    fake, url, policy = hostile(lambda body, n: {'drip': 1.0})
    env = dict(os.environ, PYTHONPATH=REPO, **{KEY_ENV: 'sk-local-0000'})
    proc = subprocess.Popen(
        caption_cmd(root, out, url, '--concurrency', '2', '--timeout', '600'),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # until both requests are being answered
            if fake.n_requests >= 2:
                break
            time.sleep(0.1)
        assert fake.n_requests >= 2
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, stderr
    assert 'Traceback' not in stderr
    assert (f'\n{sig.name}: stopping; requests in flight get '
            f'{SIGNAL_GRACE_S:.0f} s to finish (again to abort them now)\n'
            ) in stderr  # the runner's record
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res['attempted'] == 0 and res['not_attempted'] == len(keys)
    assert records(out) == []
    rerun_completes(root, out, url, keys, policy)


# -- the image walk takes what the dataset loads, and no read blocks -----
def test_fifos_and_dot_files_are_skipped_and_named(tmp_path, hostile):
    root, out = str(tmp_path / 'imgs'), str(tmp_path / 'd.jsonl')
    keys = make_images(root, per_class=2)
    os.mkfifo(os.path.join(root, 'cat', 'pipe.png'))  # open() would block
    with open(os.path.join(root, 'cat', '0.jpg'), 'rb') as f:
        data = f.read()
    with open(os.path.join(root, 'dog', '.hidden.jpg'), 'wb') as f:
        f.write(data)  # a real image mmengine's CustomDataset never lists
    fake, url, policy = hostile(lambda body, n: None)
    run = run_caption(root, out, url)
    assert run.returncode == 0, run.stderr
    assert 'pipe.png: not a regular file' in run.stderr
    assert '.hidden.jpg: its name starts with a dot' in run.stderr
    assert sorted(r['key'] for r in records(out)) == keys
    assert fake.n_requests == len(keys)  # nothing unused was paid for


def test_an_image_that_turns_into_a_fifo_is_a_failure(tmp_path):
    """Listed as a file, then replaced by a FIFO: the read must not block
    (run in a thread, so a blocking open fails the test, not the suite)."""
    import threading

    from gpt4image_mm.captioning.images import open_rgb
    path = str(tmp_path / 'x.png')
    os.mkfifo(path)
    raised = []

    def read():
        try:
            open_rgb(path)
        except Exception as e:  # noqa: BLE001 (what it raises is checked)
            raised.append(e)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), 'reading a FIFO blocked'
    assert type(raised[0]).__name__ == 'ImageError'
    assert 'x.png: not a regular file' in str(raised[0])


# -- a malformed answer is its key's failure; the run goes on ------------
MALFORMED = {
    1: ({'raw': b'{"choices": [', 'ctype': 'application/json'},
        'malformed answer: not JSON'),
    2: ({'raw': b'<html><body>502 Bad Gateway</body></html>',
         'ctype': 'text/html'}, 'malformed answer: not JSON'),
    3: ({'raw': b'{"choices": [{"message": {"content": "a \\ud800 cat"},'
                b' "finish_reason": "stop"}]}'}, 'not valid Unicode'),
    4: ({'content': 42}, 'content is a JSON int'),
    5: ({'body': {'error': {'message': 'model overloaded, try later'}}},
        'model overloaded, try later'),
    6: ({'body': ['not', 'an', 'object']}, 'a JSON list, not an object'),
    7: ({'body': {'choices': ['x']}}, 'choices[0] holds no message'),
}


def test_malformed_answers_are_failure_records_and_the_run_goes_on(
        tmp_path, hostile):
    root, out = str(tmp_path / 'imgs'), str(tmp_path / 'd.jsonl')
    keys = make_images(root, per_class=8)
    fake, url, policy = hostile(
        lambda body, n: MALFORMED[n][0] if n in MALFORMED
        else {'content': [{'type': 'text', 'text': 'a cat '},
                          {'type': 'text', 'text': 'on a mat'}]}
        if n == 8 else None)
    first = run_caption(root, out, url, '--concurrency', '4',
                        '--max-retries', '0')
    assert first.returncode == 1, first.stderr  # failures left: rerunnable
    assert 'Traceback' not in first.stderr
    recs = records(out)
    assert len(recs) == fake.n_requests == len(keys)  # no answer lost
    errors = sorted(r['error'] for r in recs if 'error' in r)
    assert len(errors) == len(MALFORMED)
    for _, expected in MALFORMED.values():
        assert sum(expected in e for e in errors) >= 1, (expected, errors)
    assert 'a cat on a mat' in [r.get('text') for r in recs]
    rerun_completes(root, out, url, keys, policy)


# -- a file name that is not UTF-8 never blocks the others ---------------
def test_a_name_that_is_not_utf8_is_a_failure_that_names_it(tmp_path,
                                                             hostile):
    root, out = str(tmp_path / 'imgs'), str(tmp_path / 'd.jsonl')
    keys = make_images(root, per_class=2)
    with open(os.path.join(root, 'cat', '0.jpg'), 'rb') as f:
        data = f.read()
    for bad in (b'bad\xffname.png', b'new\nline.png'):
        with open(os.path.join(os.fsencode(root), b'cat', bad), 'wb') as f:
            f.write(data)
    fake, url, policy = hostile(lambda body, n: None)
    for _ in range(2):  # the rerun is not stuck on it either
        run = run_caption(root, out, url)
        assert run.returncode == 1, run.stderr
        assert 'Traceback' not in run.stderr
        fails = {r['key']: r['error'] for r in records(out)
                 if 'error' in r}
        assert set(fails) == {'cat/bad\\xffname.png', 'cat/new\\nline.png'}
        assert 'cat/bad\\xffname.png: the file name is not UTF-8' in \
            fails['cat/bad\\xffname.png']
        ok = collections.Counter(r['key'] for r in records(out)
                                 if 'error' not in r)
        assert sorted(ok) == keys and set(ok.values()) == {1}
    assert summary(run)['attempted'] == 2


# -- rate and ETA: a batch's answers are counted together ----------------
def test_a_batch_is_reported_after_its_last_answer():
    """A local model answers B rows at once: a line after the first row
    would charge the whole batch's time to one request (rate and ETA x B)."""
    import io

    from gpt4image_mm.captioning.pricing import CostMeter
    from gpt4image_mm.captioning.runner import Progress
    stream = io.StringIO()
    bar = Progress(16, None, CostMeter('m'), stream=stream)
    bar.holding = True  # as the runner records one batch
    for _ in range(8):
        bar.update(True)
    bar.holding = False
    bar.report()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [ln.split(',')[0] for ln in lines] == ['caption: 16 requests to do',
                                                  'caption: 8/16 done']


def test_a_bad_batch_state_line_is_named_by_file_and_line(tmp_path):
    from gpt4image_mm.captioning.batch_api import _read_keys
    from gpt4image_mm.utils.errors import ToolError
    path = tmp_path / 'chunk.keys.jsonl'
    path.write_text('["cat/0.jpg", "generic-v1"]\n{"torn": \n')
    with pytest.raises(ToolError, match=r'chunk.keys.jsonl:2: not a \[key'):
        _read_keys(str(path))


# -- a key the server echoes in a successful answer never reaches the file
def test_a_key_echoed_in_a_successful_answer_is_scrubbed(tmp_path, hostile):
    """The server repeats the request's key in the caption text, in the
    model name and as a bearer header: each record is written without it
    (the key is not shaped like an OpenAI key: only the registered value
    can be caught)."""
    root, out = str(tmp_path / 'imgs'), str(tmp_path / 'd.jsonl')
    keys = make_images(root, per_class=2)
    secret = 'local-Secret-4242-abcd'

    def echo(body, n):
        said = {1: f'A cat. Your key {secret} was accepted.',
                2: f'A dog. Authorization: Bearer {secret}'}.get(n)
        if said:
            return {'text': said}
        return {'body': {'choices': [{'index': 0, 'finish_reason': 'stop',
                                      'message': {'role': 'assistant',
                                                  'content': 'A pet.'}}],
                         'model': f'm-for-{secret}',
                         'usage': {'prompt_tokens': 1,
                                   'completion_tokens': 1}}}
    fake, url, policy = hostile(echo)
    env = dict(os.environ, PYTHONPATH=REPO, **{KEY_ENV: secret})
    proc = subprocess.run(caption_cmd(root, out, url, '--concurrency', '1'),
                          env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert fake.auth_seen[-1] == f'Bearer {secret}'  # it was sent
    with open(out, encoding='utf-8') as f:
        written = f.read()
    assert secret not in written and secret not in proc.stdout + proc.stderr
    recs = {r['key']: r for r in records(out)}
    assert sorted(recs) == keys and all('error' not in r
                                        for r in recs.values())
    texts = sorted(r['text'] for r in recs.values())
    assert 'A cat. Your key *** was accepted.' in texts
    assert 'A dog. Authorization: Bearer ***' in texts
    assert {r['model'] for r in recs.values()} >= {'m-for-***'}
