"""``tools/train.py`` under ``torchrun --nproc_per_node 2`` on CPU (gloo).

A few real training iterations of the GPT4Image config, as
``tools/dist_train.sh`` launches them: two ranks share the epoch (the
sampler splits the 12 images), the alignment loss gathers negatives across
ranks, and rank 0 writes a checkpoint that loads safely. The pre-flight
checks run under the launcher too, on rank 0 only: a config mistake is one
line from rank 0, and every rank exits non-zero.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from helpers import write_tiny_project

from gpt4image_mm.engine.safe_loading import safe_torch_load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _torchrun(tmp_path: Path, *options: str, torchrun_options=()):
    env = dict(os.environ, OMP_NUM_THREADS='1',
               TORCH_FORCE_WEIGHTS_ONLY_LOAD='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [str(ROOT), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    cmd = [sys.executable, '-m', 'torch.distributed.run',
           '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(_free_port()), *torchrun_options,
           str(ROOT / 'tools' / 'train.py'),
           'align.py', '--launcher', 'pytorch', '--work-dir',
           str(tmp_path / 'work'),
           # CPU host: gpt4image_mm.engine.runner switches to gloo and CPU
           # DDP itself
           '--cfg-options', 'train_dataloader.batch_size=2',
           'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
           'val_dataloader.batch_size=3', *options]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def test_torchrun_two_ranks_gloo(tmp_path: Path):
    write_tiny_project(tmp_path)
    work = tmp_path / 'work'
    proc = _torchrun(tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # the checks ran, on rank 0 only: its hooks are on every rank
    assert log.count('pre-flight checks passed') == 1, log[-4000:]
    # two ranks: MMEngine reports the world size, and each rank trains on
    # half of the 12 images -> 3 iterations of batch 2 per epoch, not 6
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert 'Epoch(train) [1][3/3]' in log and '[1][6/6]' not in log
    assert 'loss_align' in log and 'align_acc' in log
    # validation is sharded too and gathered: 12 images over 2 ranks
    assert 'Epoch(val) [1][2/2]' in log and 'accuracy/top1' in log
    ckpt = safe_torch_load(str(work / 'epoch_1.pth'), map_location='cpu')
    assert ckpt['meta']['iter'] == 3
    state = ckpt['state_dict']
    assert any(k.startswith('align_neck.') for k in state)
    assert all(v.isfinite().all() for v in state.values()
               if v.is_floating_point())


def test_preflight_error_under_torchrun_is_one_line_from_rank_0(
        tmp_path: Path):
    """A store of the wrong width: rank 0 says so in one line before any
    rank builds a model; every rank exits 2 (each rank's output is kept in
    its own log by torchrun's --redirects)."""
    write_tiny_project(tmp_path)
    logs = tmp_path / 'logs'
    proc = _torchrun(tmp_path, 'model.align_neck.out_channels=16',
                     torchrun_options=('--log-dir', str(logs),
                                       '--redirects', '3',
                                       '--monitor-interval', '2'))
    assert proc.returncode != 0
    rank_logs = {int(p.parent.name): p.read_text()
                 for p in logs.rglob('stderr.log')}
    assert sorted(rank_logs) == [0, 1], proc.stderr[-3000:]
    errors = [ln for ln in rank_logs[0].splitlines()
              if ln.startswith('error: ')]
    assert len(errors) == 1, rank_logs[0][-3000:]
    assert '8-d vectors' in errors[0] and 'out_channels is 16' in errors[0]
    assert 'Traceback' not in rank_logs[0]
    assert 'error' not in rank_logs[1] and 'Traceback' not in rank_logs[1]
    # torchrun's report: both ranks ended with exit code 2 themselves
    assert proc.stderr.count('exitcode  : 2') == 2, proc.stderr[-3000:]
    assert not (tmp_path / 'work' / 'epoch_1.pth').exists()
