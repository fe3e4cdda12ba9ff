"""``tools/train.py`` under ``torchrun --nproc_per_node 2`` on CPU (gloo).

A few real training iterations of the GPT4Image config, as
``tools/dist_train.sh`` launches them: two ranks share the epoch (the
sampler splits the 12 images), the alignment loss gathers negatives across
ranks, and rank 0 writes a checkpoint that loads safely.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import ROOT
from helpers import write_tiny_project


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_gloo(tmp_path: Path):
    write_tiny_project(tmp_path)
    work = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1',
               TORCH_FORCE_WEIGHTS_ONLY_LOAD='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [str(ROOT), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    cmd = [sys.executable, '-m', 'torch.distributed.run',
           '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(_free_port()),
           str(ROOT / 'tools' / 'train.py'),
           'align.py', '--launcher', 'pytorch', '--work-dir', str(work),
           # CPU host: gpt4image_mm.engine.runner switches to gloo and CPU DDP itself
           '--cfg-options', 'train_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
           'default_hooks.logger.interval=1', 'val_dataloader.batch_size=3']
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # two ranks: MMEngine reports the world size, and each rank trains on
    # half of the 12 images -> 3 iterations of batch 2 per epoch, not 6
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert 'Epoch(train) [1][3/3]' in log and '[1][6/6]' not in log
    assert 'loss_align' in log and 'align_acc' in log
    # validation is sharded too and gathered: 12 images over 2 ranks
    assert 'Epoch(val) [1][2/2]' in log and 'accuracy/top1' in log
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu',
                      weights_only=True)
    assert ckpt['meta']['iter'] == 3
    state = ckpt['state_dict']
    assert any(k.startswith('align_neck.') for k in state)
    assert all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())
