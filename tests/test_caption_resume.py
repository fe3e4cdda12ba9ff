"""Crash safety: tools/caption.py SIGKILLed twice mid-run, then rerun."""
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

from gpt4image_mm.utils.descriptions import iter_records  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONCURRENCY = 4


def _lines(path):
    if not os.path.exists(path):
        return 0
    with open(path, 'rb') as f:
        return f.read().count(b'\n')


def test_sigkill_twice_then_resume(tmp_path):
    root = str(tmp_path / 'imgs')
    keys = make_images(root, classes=('a', 'b', 'c'), per_class=12)
    fake = FakeOpenAI(latency=0.12)
    server, url = start_server(fake)
    out = str(tmp_path / 'd.jsonl')
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'caption.py'),
           '--images', root, '--out', out, '--model', 'm', '--base-url', url,
           '--concurrency', str(CONCURRENCY), '--no-progress']
    env = dict(os.environ, OPENAI_API_KEY='sk-local')
    try:
        for target in (6, 16):  # kill once some, then more, are written
            proc = subprocess.Popen(cmd, env=env, cwd=REPO,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while _lines(out) < target and time.monotonic() < deadline:
                assert proc.poll() is None, 'finished before the kill'
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert _lines(out) < len(keys)
        rc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True,
                            timeout=120).returncode
        assert rc == 0
    finally:
        server.shutdown()
    succ = [r['key'] for _, r in iter_records(out) if 'error' not in r]
    assert sorted(succ) == keys  # every key, exactly once
    # only requests in flight at the kills were answered twice
    assert fake.duplicates <= 2 * CONCURRENCY
    assert len(fake.answered) == len(keys)


# -- an interrupted repair pass continues where it stopped ---------------
REDO_KEYS = 11


def _redo_records(path):
    if not os.path.exists(path):
        return []
    return [r for _, r in iter_records(path) if r.get('redo')]


def _gpt4image(*args):
    return [sys.executable, '-m', 'gpt4image_mm.cli', 'caption', *args]


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM])
def test_an_interrupted_redo_pass_asks_only_what_is_left(tmp_path, sig):
    """A repair pass stopped after 5 of 11 answers (kill -9, or SIGTERM as
    timeout/Slurm send it), then the same command: the rerun asks only the
    keys without a repair answer, and no key gets two."""
    root = str(tmp_path / 'imgs')
    keys = make_images(root, classes=('a', 'b'), per_class=7)
    fake = FakeOpenAI()
    server, url = start_server(fake)
    out = str(tmp_path / 'd.jsonl')
    listed = tmp_path / 'flagged_keys.txt'
    listed.write_text(''.join(k + '\n' for k in keys[:REDO_KEYS]))
    cmd = _gpt4image('--images', root, '--out', out, '--model', 'm',
                     '--base-url', url, '--concurrency', '1', '--no-progress')
    env = dict(os.environ, OPENAI_API_KEY='sk-local')
    try:
        first = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True,
                               text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        fake.latency = 0.5  # the pass is slow enough to stop in the middle
        before = fake.n_requests
        proc = subprocess.Popen(cmd + ['--redo-keys', str(listed)], env=env,
                                cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(_redo_records(out)) < 5 and time.monotonic() < deadline:
            assert proc.poll() is None, 'finished before the stop'
            time.sleep(0.01)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == (-9 if sig == signal.SIGKILL else 143), \
            stderr
        redone = {r['key'] for r in _redo_records(out)}
        assert 5 <= len(redone) < REDO_KEYS
        fake.latency = 0.0
        asked_before = fake.n_requests
        again = subprocess.run(cmd + ['--redo-keys', str(listed)], env=env,
                               cwd=REPO, capture_output=True, text=True,
                               timeout=120)
    finally:
        server.shutdown()
    assert again.returncode == 0, again.stderr
    assert fake.n_requests - asked_before == REDO_KEYS - len(redone)
    res = json.loads(again.stdout.strip().splitlines()[-1])
    assert res['already_done'] == len(redone)
    assert res['attempted'] == REDO_KEYS - len(redone)
    per_key = collections.Counter(r['key'] for r in _redo_records(out))
    assert sorted(per_key) == keys[:REDO_KEYS]
    assert set(per_key.values()) == {1}  # no key redone twice
    assert len({r['redo_pass'] for r in _redo_records(out)}) == 1
    # at most the one request in flight at a kill -9 was paid twice
    assert fake.n_requests - before <= REDO_KEYS + 1
