"""End to end through tools/: train, resume (safe loading), test, strip."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_image_folder
from helpers import BASE_CFG, write_tiny_project


def run(*args, cwd):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_resume_test_strip(tmp_path, monkeypatch):
    """Resume, strip and the stripped test run as the user runs them
    (subprocesses); the first training and the full model's test run
    train's and test's own code in this process (their CLIs' subprocess
    runs: test_reliability.py, test_docs.py), saving two interpreter
    starts."""
    from gpt4image_mm.cli.main import parse_and_run

    def train_main(argv):
        return parse_and_run('train', argv, 'train')

    def test_main(argv):
        return parse_and_run('test', argv, 'test')
    write_tiny_project(tmp_path)
    tools = ROOT / 'tools'
    work = tmp_path / 'work'
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('LOCAL_RANK', '0')  # what the tools' parser sets

    train_main(['align.py', '--work-dir', str(work)])
    log = ''.join(p.read_text() for p in work.rglob('*.log'))
    assert 'loss_align' in log and 'align_acc' in log
    assert (work / 'epoch_2.pth').exists()

    # resume from epoch 1 into a fresh work dir: safe loading must accept it
    work2 = tmp_path / 'work2'
    log = run(tools / 'train.py', 'align.py', '--work-dir', work2,
              '--resume', work / 'epoch_1.pth', cwd=tmp_path)
    assert 'resumed epoch: 1' in log.lower() or 'Load checkpoint' in log
    assert (work2 / 'epoch_2.pth').exists() and not (
        work2 / 'epoch_1.pth').exists()

    full = tmp_path / 'full.json'
    test_main(['align.py', str(work2 / 'epoch_2.pth'), '--out', str(full),
               '--work-dir', str(tmp_path / 't1')])
    out = run(tools / 'strip_align.py', work2 / 'epoch_2.pth',
              tmp_path / 'deploy.pth', cwd=tmp_path)
    assert 'removed' in out
    deploy = torch.load(tmp_path / 'deploy.pth', weights_only=True)
    assert not [k for k in deploy['state_dict'] if k.startswith('align_')]
    stripped = tmp_path / 'stripped.json'
    run(tools / 'test.py', 'base.py', tmp_path / 'deploy.pth', '--out',
        stripped, '--work-dir', tmp_path / 't2', cwd=tmp_path)
    a, b = json.loads(full.read_text()), json.loads(stripped.read_text())
    assert a['accuracy/top1'] == b['accuracy/top1']


class _Evil:
    """A pickle that would create a file if unpickling ran its code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker), ))


@pytest.mark.parametrize('tool', ['test.py', 'strip_align.py'])
def test_untrusted_checkpoint_cannot_run_code(tmp_path, tool):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'meta': _Evil(marker)},
               evil)
    root = tmp_path / 'imgs'
    make_image_folder(root, per_class=1)
    (tmp_path / 'base.py').write_text(BASE_CFG.format(root=root))
    args = (['base.py', evil, '--work-dir', tmp_path / 'w']
            if tool == 'test.py' else [evil, tmp_path / 'out.pth'])
    # torch told to unpickle anything: our loads pass weights_only=True
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    proc = subprocess.run([sys.executable, ROOT / 'tools' / tool, *args],
                          cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode != 0
    assert 'Weights only load failed' in proc.stderr or \
        'weights_only' in proc.stderr
    assert not marker.exists()
