"""Crafted checkpoints against safe loading, whatever the user trusts.

Each file is built here with a ``__reduce__`` that names what an attacker
would: ``logging.FileHandler`` (truncates a file the moment it is built),
``subprocess.Popen`` (runs a program), the ``HistoryBuffer`` statistics
table every buffer shares. They go through the real commands
(``gpt4image strip``, ``gpt4image test``) with ``GPT4IMAGE_SAFE_GLOBALS``
naming the attacker's class: the variable trusts plain data classes only,
so nothing is written, nothing runs, and the answer is one line, exit 2.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from helpers import write_tiny_project

TRUST = 'GPT4IMAGE_SAFE_GLOBALS'


class _Calls:
    """Pickles as ``func(*args)``: what a crafted file asks the loader."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _crafted(path: Path, payload) -> Path:
    torch.save({'state_dict': {'w': torch.ones(2)},
                'meta': {'x': payload}}, path)
    return path


def _cli(args, cwd, trust=None, extra_env=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), str(cwd), os.environ.get('PYTHONPATH', '')]))
    env.pop(TRUST, None)
    if trust is not None:
        env[TRUST] = trust
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, '-m', 'gpt4image_mm.cli', *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_line_refusal(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    return lines[0]


@pytest.mark.parametrize('trust', [None, 'logging.FileHandler'])
def test_file_handler_truncates_nothing(tmp_path, trust):
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious')
    evil = _crafted(tmp_path / 'evil.pth',
                    _Calls(logging.FileHandler, str(victim), 'w'))
    line = _one_line_refusal(_cli(['strip', evil, 'deploy.pth'], tmp_path,
                                  trust=trust))
    assert victim.read_text() == 'precious'
    assert not (tmp_path / 'deploy.pth').exists()
    # never a way round: the refusal does not suggest trusting the class
    assert 'trust it' not in line and 'weights_only=False' not in line
    if trust:
        assert line.startswith(f"error: {TRUST}: 'logging.FileHandler' is "
                               'not plain data')
    else:
        assert 'logging.FileHandler' in line and 'refused' in line


def test_popen_runs_nothing_when_trusted(tmp_path):
    marker = tmp_path / 'PWNED'
    evil = _crafted(tmp_path / 'evil.pth',
                    _Calls(subprocess.Popen, ['touch', str(marker)]))
    line = _one_line_refusal(_cli(['strip', evil, 'deploy.pth'], tmp_path,
                                  trust='subprocess.Popen'))
    assert line.startswith(f"error: {TRUST}: 'subprocess.Popen' is not "
                           'plain data')
    assert not marker.exists() and not (tmp_path / 'deploy.pth').exists()


@pytest.mark.parametrize('name', ['os.system', 'builtins.open', 'enum.Enum',
                                  'logging.StreamHandler', 'os.PathLike',
                                  'argparse.Namespace'])
def test_only_plain_data_classes_can_be_trusted(name):
    from gpt4image_mm.engine.safe_loading import trusted_globals
    from gpt4image_mm.utils.errors import ToolError
    with pytest.raises(ToolError, match=f"'{name}' is not plain data"):
        trusted_globals(name)


def test_test_command_refuses_popen_even_when_trusted(tmp_path):
    write_tiny_project(tmp_path)
    marker = tmp_path / 'PWNED'
    evil = _crafted(tmp_path / 'evil.pth',
                    _Calls(subprocess.Popen, ['touch', str(marker)]))
    proc = _cli(['test', 'align.py', evil, '--work-dir', 'w'], tmp_path,
                trust='subprocess.Popen')
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith('error')]
    assert len(errors) == 1 and "'subprocess.Popen' is not plain data" in \
        errors[0]
    assert not marker.exists()


PLAIN = '''
import dataclasses, typing
@dataclasses.dataclass
class Notes:
    text: str
    score: float = 0.0
class Point(typing.NamedTuple):
    x: int
    y: int
@dataclasses.dataclass
class Logged:
    path: str
    def __post_init__(self):
        open(self.path, 'w').close()
'''


def test_plain_data_class_of_ones_own_is_trusted(tmp_path):
    (tmp_path / 'mydata.py').write_text(PLAIN)
    sys.path.insert(0, str(tmp_path))
    try:
        import mydata
        torch.save({'state_dict': {'w': torch.ones(2)},
                    'meta': {'n': mydata.Notes('hi', 1.0),
                             'p': mydata.Point(1, 2)}}, tmp_path / 'mine.pth')
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop('mydata', None)
    line = _one_line_refusal(_cli(['strip', 'mine.pth', 'deploy.pth'],
                                  tmp_path))
    assert 'mydata.Notes' in line and TRUST not in line
    proc = _cli(['strip', 'mine.pth', 'deploy.pth'], tmp_path,
                trust='mydata.Notes,mydata.Point')
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'deploy.pth').exists()
    # a dataclass with code of its own is not plain data
    line = _one_line_refusal(_cli(['strip', 'mine.pth', 'other.pth'],
                                  tmp_path, trust='mydata.Logged'))
    assert "'mydata.Logged' is not plain data (it defines " \
        'Logged.__post_init__)' in line


# Loads a crafted file that names the HistoryBuffer statistics table, then
# asks a fresh buffer for its mean.
HISTORY_PROBE = '''
import pickle, sys
import gpt4image_mm.engine
from gpt4image_mm.engine.safe_loading import safe_torch_load
from mmengine.logging.history_buffer import HistoryBuffer
try:
    safe_torch_load(sys.argv[1])
    print('loaded')
except pickle.UnpicklingError as e:
    print('refused:', e)
buf = HistoryBuffer()
for v in (1, 2, 3, 10):
    buf.update(v)
print('mean', buf.statistics('mean'))
'''


class _Buffer:
    """Pickles as a HistoryBuffer whose state remaps the shared table."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return HistoryBuffer, (), self.state


def test_history_buffer_cannot_rewrite_shared_statistics(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer
    evil = _crafted(tmp_path / 'evil.pth', _Buffer(
        {'statistics_methods': {'mean': _Calls(getattr, HistoryBuffer,
                                               'max')}}))
    proc = subprocess.run([sys.executable, '-c', HISTORY_PROBE, str(evil)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert 'mean 4.0' in proc.stdout, proc.stdout
    assert 'refused:' in proc.stdout and 'built-in statistics' in proc.stdout
    line = _one_line_refusal(_cli(['strip', evil, 'deploy.pth'], tmp_path))
    assert 'HistoryBuffer' in line


def test_history_buffer_round_trips_as_plain_data(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer

    import gpt4image_mm.engine  # noqa: F401  (the plain-data pickling)
    from gpt4image_mm.engine.safe_loading import safe_torch_load
    buf = HistoryBuffer()
    for v in (1.0, 5.0):
        buf.update(v)
    torch.save({'hub': buf}, tmp_path / 'hub.pth')
    loaded = safe_torch_load(str(tmp_path / 'hub.pth'))['hub']
    assert loaded.statistics('mean') == 3.0
    assert loaded.statistics('max') == 5.0
    assert 'statistics_methods' not in loaded.__dict__
