"""Loss modes are a table: a mode registered from THIS file (no package
change) is picked by name and trains through the real tools/train.py.

The training subprocess imports this very module through the config's
``custom_imports`` (tests/ on PYTHONPATH), which registers the toy mode."""
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from gpt4image_mm.models import ContrastiveAlignLoss
from gpt4image_mm.registry import ALIGN_LOSS_MODES

TOY_OFFSET = 100.0  # so the training log shows which mode ran


@ALIGN_LOSS_MODES.register_module('toy_offset_cosine', force=True)
def toy_offset_cosine(loss, batch):
    """``1 - cos`` over the local batch, weighted, plus a marker offset."""
    cos = (batch.img * batch.txt).sum(1)
    w = batch.weights
    return TOY_OFFSET + (w * (1 - cos)).sum() / w.sum().clamp_min(1e-12)


def test_a_registered_mode_is_picked_by_name():
    img = torch.randn(6, 8, requires_grad=True)
    txt = torch.randn(6, 8)
    loss = ContrastiveAlignLoss(mode='toy_offset_cosine', loss_weight=0.5)
    value = loss(img, txt)
    cos = (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(1)
    assert value.item() == pytest.approx(0.5 * (TOY_OFFSET + (1 - cos).mean().item()),
                                         rel=1e-6)
    value.backward()
    assert img.grad.abs().sum() > 0


def test_unknown_mode_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"registered .*'clip'.*got 'nope'"):
        ContrastiveAlignLoss(mode='nope')


def test_registered_mode_trains_through_tools_train(tmp_path):
    from conftest import ROOT
    from helpers import write_tiny_project
    write_tiny_project(tmp_path)
    module = os.path.splitext(os.path.basename(__file__))[0]
    toy = tmp_path / 'toy.py'
    with open(toy, 'w') as f:
        f.write("_base_ = ['align.py']\n"
                f"custom_imports = dict(imports=['gpt4image_mm', '{module}'], "
                'allow_failed_imports=False)\n'
                "model = dict(align_loss=dict(mode='toy_offset_cosine'))\n"
                'train_cfg = dict(max_epochs=1, val_interval=5)\n'
                'default_hooks = dict(logger=dict(interval=1))\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.path.dirname(__file__), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'), str(toy),
         '--work-dir', str(tmp_path / 'work')], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    values = [float(v) for v in re.findall(r'loss_align: ([0-9.]+)', log)]
    # loss_weight 0.3 of the base config times (100 + something in [0, 2])
    assert values and all(30.0 <= v <= 30.6 for v in values), values


def test_a_dotted_mode_path_is_imported_and_a_bad_one_named():
    by_path = ContrastiveAlignLoss(mode=f'{__name__}.toy_offset_cosine')
    assert by_path.mode_fn is toy_offset_cosine
    with pytest.raises(ValueError, match="got 'no_such_module.mode'"):
        ContrastiveAlignLoss(mode='no_such_module.mode')
