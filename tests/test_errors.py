"""A user error is one line, exit 2; a bug is a traceback, exit 1.

Told apart where the input is checked (``ToolError``/``InputError`` raised
there, an ``OSError`` on a path the user named), never by exception type:
a numpy shape error inside a command is a bug, whatever its type says.
``GPT4IMAGE_DEBUG=1`` shows the traceback of a one-line error too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# Makes caption-merge hit a real numpy shape error while it reads a part:
# the kind of internal bug that used to print as "error: ... exit 2".
SITECUSTOMIZE = '''
import importlib
import numpy as np
merge = importlib.import_module('gpt4image_mm.captioning.merge')

def _broken(path):
    np.ones(2) + np.ones(3)  # operands could not be broadcast together
    yield from ()

merge.iter_records = _broken
'''


def _record(key: str) -> str:
    return json.dumps({'key': key, 'text': 'a cat', 'model': 'm',
                       'prompt_id': 'generic-v1'}) + '\n'


def _merge(tmp: Path, *args: str, env_extra=None, sitecustomize=False):
    env = dict(os.environ)
    env.pop('GPT4IMAGE_DEBUG', None)
    paths = [str(ROOT), env.get('PYTHONPATH', '')]
    if sitecustomize:
        (tmp / 'site').mkdir(exist_ok=True)
        (tmp / 'site' / 'sitecustomize.py').write_text(SITECUSTOMIZE)
        paths.insert(0, str(tmp / 'site'))
    env['PYTHONPATH'] = os.pathsep.join(paths)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, '-m', 'gpt4image_mm.cli', 'caption-merge', *args],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


def test_user_error_is_one_line_exit_2(tmp_path):
    (tmp_path / 'a.jsonl').write_text(_record('cat/0.png'))
    (tmp_path / 'out.jsonl').write_text(_record('cat/0.png'))
    proc = _merge(tmp_path, 'out.jsonl', 'a.jsonl')
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f'error: merge: {tmp_path}/out.jsonl exists (pass --overwrite)']


def test_missing_named_file_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, '-m', 'gpt4image_mm.cli', 'strip', 'nothere.pth',
         'out.pth'], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ')
    assert 'nothere.pth' in lines[0]


def test_internal_bug_is_a_traceback_exit_1(tmp_path):
    (tmp_path / 'a.jsonl').write_text(_record('cat/0.png'))
    proc = _merge(tmp_path, 'out.jsonl', 'a.jsonl', sitecustomize=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith('Traceback (most recent call last):')
    assert 'operands could not be broadcast' in proc.stderr
    assert 'in _broken' in proc.stderr
    assert 'error: ' not in proc.stderr
    assert not (tmp_path / 'out.jsonl').exists()


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    (tmp_path / 'a.jsonl').write_text(_record('cat/0.png'))
    (tmp_path / 'out.jsonl').write_text(_record('cat/0.png'))
    proc = _merge(tmp_path, 'out.jsonl', 'a.jsonl',
                  env_extra={'GPT4IMAGE_DEBUG': '1'})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith('Traceback (most recent call last):')
    assert 'in merge' in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f'error: merge: {tmp_path}/out.jsonl exists (pass --overwrite)')
