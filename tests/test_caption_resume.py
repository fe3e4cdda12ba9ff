"""Crash safety: tools/caption.py SIGKILLed twice mid-run, then rerun."""
import os
import signal
import subprocess
import sys
import time

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
