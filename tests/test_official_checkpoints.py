"""Checkpoints written by other code load safely; code-running ones never do.

The official GPT4Image/DeiT code saves ``'args': argparse.Namespace`` next to
the weights (deit/main.py:386-394); stock MMEngine (no ``gpt4image_mm``
imported) pickles ``HistoryBuffer`` statistics through ``getattr``; numpy
1.x wrote ``numpy.core.*`` names. Each must load through every entry point
-- ``load_from``, ``--resume``, ``tools/test.py``, strip -- with
``weights_only=True``; a pickle that runs code is refused at each of them in
one line, and the file it would write never appears.
"""
from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from helpers import write_tiny_project

TOOLS = ROOT / 'tools'


def _run(args, cwd, env=None, ok=True):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env=env)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _official_args() -> argparse.Namespace:
    """Parsed the way deit/main.py parses (a subset of its options)."""
    p = argparse.ArgumentParser('DeiT training and evaluation script')
    p.add_argument('--batch-size', default=64, type=int)
    p.add_argument('--epochs', default=300, type=int)
    p.add_argument('--model', default='deit_base_patch16_224', type=str)
    p.add_argument('--lr', type=float, default=5e-4)
    p.add_argument('--lr-noise', type=float, nargs='+', default=None)
    p.add_argument('--model-ema', action='store_true')
    p.add_argument('--text_emb', default='imagenet_clip_text_emb.pth')
    p.add_argument('--proj_type', default='mlp', choices=['mlp', 'linear'])
    p.add_argument('--output_dir', default='./outputs')
    return p.parse_args(['--lr', '1e-3'])


def _save_official(model_state, path: Path) -> None:
    """The layout deit/main.py:386-394 writes with ``utils.save_on_master``
    (optimizer and scheduler states as plain dicts, ``args`` a Namespace)."""
    params = [torch.nn.Parameter(v.float().clone())
              for v in model_state.values() if v.is_floating_point()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    torch.save({
        'model': model_state,
        'optimizer': opt.state_dict(),
        'lr_scheduler': {'t_initial': 300, 'base_values': [1e-3],
                         'noise_range_t': None, 't_in_epochs': True},
        'epoch': 1,
        'model_ema': model_state,
        'scaler': {'scale': 65536.0, 'growth_factor': 2.0, '_growth_tracker':
                   0},
        'args': _official_args(),
    }, path)


# A checkpoint saved by stock MMEngine: this process never imports
# gpt4image_mm, so HistoryBuffer pickles its statistics through getattr;
# DeiT-derived scripts keep their ``args`` in it too.
RESAVE_STOCK = '''
import argparse, sys, torch
from mmengine.logging.history_buffer import HistoryBuffer  # noqa: F401
ckpt = torch.load(sys.argv[1], map_location='cpu', weights_only=False)
ckpt['args'] = argparse.Namespace(lr=1e-3, epochs=2, model='resnet18')
torch.save(ckpt, sys.argv[2])
assert b'getattr' in open(sys.argv[2], 'rb').read()
'''


class _RunsCode:
    """Unpickling this calls os.system, which writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'echo pwned > {self.marker}', )


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """A tiny project trained for one epoch; its checkpoint re-saved the
    stock-MMEngine way and the official-DeiT way, and a code-running one."""
    tmp = tmp_path_factory.mktemp('ckpts')
    write_tiny_project(tmp)
    _run([TOOLS / 'train.py', 'align.py', '--work-dir', tmp / 'work',
          '--cfg-options', 'train_cfg.max_epochs=1'], cwd=tmp)
    ours = tmp / 'work' / 'epoch_1.pth'
    stock = tmp / 'stock.pth'
    # no gpt4image_mm on the path of this process
    _run(['-c', RESAVE_STOCK, ours, stock], cwd=tmp,
         env=dict(os.environ, PYTHONPATH=''))
    official = tmp / 'official.pth'
    from gpt4image_mm.engine.safe_loading import safe_torch_load
    state = safe_torch_load(str(ours), map_location='cpu')
    _save_official(state['state_dict'], official)
    evil = tmp / 'evil.pth'
    torch.save({'state_dict': state['state_dict'], 'meta': {
        'epoch': 1, 'note': _RunsCode(tmp / 'PWNED')}}, evil)
    return tmp, stock, official, evil


def _entry_points(tmp, ckpt, work):
    """Every way a checkpoint reaches torch.load through our tools."""
    return {
        'load_from': [TOOLS / 'train.py', 'align.py', '--work-dir', work,
                      '--cfg-options', 'train_cfg.max_epochs=1',
                      f'load_from={ckpt}'],
        'resume': [TOOLS / 'train.py', 'align.py', '--work-dir', work,
                   '--resume', ckpt, '--cfg-options',
                   'train_cfg.max_epochs=2'],
        'test': [TOOLS / 'test.py', 'align.py', ckpt, '--work-dir', work],
        'strip': [TOOLS / 'strip_align.py', ckpt, work / 'deploy.pth'],
    }


def test_official_and_stock_checkpoints_load_everywhere(project):
    tmp, stock, official, _ = project
    # --resume needs MMEngine's layout (meta, message hub): the stock file;
    # the others take the official DeiT layout as it is.
    for name, args in _entry_points(tmp, official, tmp / 'o').items():
        if name == 'resume':
            args = _entry_points(tmp, stock, tmp / 'o')['resume']
        proc = _run(args, cwd=tmp)
        assert 'Weights only load failed' not in proc.stderr, name
    assert (tmp / 'o' / 'epoch_2.pth').exists()  # the resumed run finished
    deploy = torch.load(tmp / 'o' / 'deploy.pth', weights_only=True)
    assert deploy['state_dict'].keys() == torch.load(
        official, weights_only=False)['model'].keys()
    # the stock file through strip too (its getattr and Namespace)
    _run([TOOLS / 'strip_align.py', stock, tmp / 'stock_deploy.pth'],
         cwd=tmp)


@pytest.mark.parametrize('entry', ['load_from', 'resume', 'test', 'strip'])
def test_code_running_checkpoint_is_refused_in_one_line(project, entry):
    tmp, _, _, evil = project
    work = tmp / f'evil_{entry}'
    # torch told to unpickle anything: our loads pass weights_only=True
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    proc = _run(_entry_points(tmp, evil, work)[entry], cwd=tmp, env=env,
                ok=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    refusal = [ln for ln in proc.stderr.splitlines()
               if ln.startswith('error: ')]
    assert len(refusal) == 1 and refusal[0].startswith(
        f'error: {evil}: refused: loading it would call posix.system, which '
        'safe loading never allows (weights_only=True); do not use this file')
    assert not (tmp / 'PWNED').exists()
    assert not (work / 'deploy.pth').exists()


def test_own_class_is_named_and_trusted_only_when_asked(tmp_path):
    (tmp_path / 'mydata.py').write_text(
        'import dataclasses\n@dataclasses.dataclass\nclass Notes:\n'
        '    text: str\n')
    saver = ('import sys, torch, mydata; torch.save({"state_dict": '
             '{"w": torch.ones(2)}, "meta": {"notes": mydata.Notes("hi")}},'
             ' "mine.pth")')
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    _run(['-c', saver], cwd=tmp_path, env=env)
    strip = [TOOLS / 'strip_align.py', 'mine.pth', 'deploy.pth']
    proc = _run(strip, cwd=tmp_path, env=env, ok=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        'error: mine.pth: refused: it holds mydata.Notes, which safe loading '
        '(weights_only=True) does not allow -- use a checkpoint that holds '
        'only tensors and plain data (one this package or MMEngine saved); '
        'nothing written')
    trusted = dict(env, GPT4IMAGE_SAFE_GLOBALS='mydata.Notes')
    _run(strip, cwd=tmp_path, env=trusted)
    assert (tmp_path / 'deploy.pth').exists()
    # a function is never trusted: the file would choose its arguments
    proc = _run(strip, cwd=tmp_path, ok=False,
                env=dict(env, GPT4IMAGE_SAFE_GLOBALS='os.system'))
    assert proc.returncode == 2
    assert "'os.system' is not plain data (not a class)" in proc.stderr


def _as_numpy1(src: Path, dst: Path) -> None:
    """Rewrite a checkpoint's pickle with the names numpy 1.x wrote."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith('data.pkl'):
                data = data.replace(b'numpy._core.multiarray',
                                    b'numpy.core.multiarray')
            zout.writestr(info, data)


def test_numpy1_scalars_and_arrays_load(tmp_path):
    from gpt4image_mm.engine.safe_loading import safe_torch_load
    torch.save({'meta': {'best_score': np.float64(0.75),
                         'history': np.arange(3.0)}}, tmp_path / 'np2.pth')
    _as_numpy1(tmp_path / 'np2.pth', tmp_path / 'np1.pth')
    with zipfile.ZipFile(tmp_path / 'np1.pth') as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith('data.pkl')))
    assert b'numpy.core.multiarray\nscalar' in pkl
    meta = safe_torch_load(str(tmp_path / 'np1.pth'))['meta']
    assert meta['best_score'] == 0.75
    assert meta['history'].tolist() == [0.0, 1.0, 2.0]


def test_getattr_resolves_history_buffer_statistics_only(tmp_path):
    """``getattr`` is allowed as stock MMEngine uses it, nothing more."""
    from gpt4image_mm.engine.safe_loading import safe_torch_load

    class Reach:  # Namespace is allowed; its __init__ must not be reached
        def __reduce__(self):
            return getattr, (argparse.Namespace, '__init__')

    torch.save({'x': Reach()}, tmp_path / 'reach.pth')
    with pytest.raises(pickle.UnpicklingError) as e:
        safe_torch_load(str(tmp_path / 'reach.pth'))
    assert str(e.value).startswith(f'{tmp_path}/reach.pth: not a checkpoint')
    assert 'HistoryBuffer statistics only' in str(e.value)
    assert '\n' not in str(e.value)
