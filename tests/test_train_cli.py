"""tools/train.py's command line: schedules follow an overridden
max_epochs, and no warning a user cannot act on."""
import argparse
import logging
import os
import subprocess
import sys

import torch

from gpt4image_mm.cli.train import configure_parser
from gpt4image_mm.engine.runner import train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, schedulers):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        'max_epochs = 6\n'
        f'param_scheduler = {schedulers}\n'
        'train_cfg = dict(by_epoch=True, max_epochs=max_epochs)\n'
        'train_dataloader = dict(batch_size=2, num_workers=0, dataset=dict('
        "type='CustomDataset', data_root='x'))\n")
    return str(cfg)


def _train_cfg(path, *options):
    argv = [path] + (['--cfg-options', *options] if options else [])
    parser = configure_parser(argparse.ArgumentParser())
    return train_config(parser.parse_args(argv))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_cosine_follows_overridden_max_epochs(tmp_path):
    from mmengine.logging import MMLogger
    logger, seen = MMLogger.get_current_instance(), _Records()
    logger.addHandler(seen)  # the log line says what was changed
    try:
        cfg = _train_cfg(_config(tmp_path, "dict(type='CosineAnnealingLR', "
                                 'by_epoch=True, T_max=max_epochs)'),
                         'train_cfg.max_epochs=2')
    finally:
        logger.removeHandler(seen)
    assert cfg.train_cfg.max_epochs == 2 and cfg.param_scheduler.T_max == 2
    assert any('max_epochs 6 -> 2: param_scheduler[0] (CosineAnnealingLR) '
               'T_max follows' in m for m in seen.messages), seen.messages


def test_warmup_then_cosine_end_and_t_max(tmp_path):
    cfg = _train_cfg(_config(tmp_path, (
        "[dict(type='LinearLR', by_epoch=True, begin=0, end=1), "
        "dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=6, "
        'T_max=5), '
        "dict(type='ConstantLR', by_epoch=False, begin=0, end=6)]")),
        'train_cfg.max_epochs=10')
    warm, cos, iters = cfg.param_scheduler
    assert (warm.begin, warm.end) == (0, 1)  # warm-up length is its own
    assert (cos.begin, cos.end, cos.T_max) == (1, 10, 9)
    assert iters.end == 6  # iteration units: left alone


def test_explicit_scheduler_options_win(tmp_path):
    cfg = _train_cfg(_config(tmp_path, "dict(type='CosineAnnealingLR', "
                                       'by_epoch=True, T_max=max_epochs)'),
                     'train_cfg.max_epochs=2', 'param_scheduler.T_max=4')
    assert cfg.param_scheduler.T_max == 4


def test_no_pin_memory_without_an_accelerator(tmp_path):
    cfg = _train_cfg(_config(tmp_path, 'None'))
    assert cfg.train_dataloader.pin_memory == \
        torch.accelerator.is_available()


def test_import_does_not_print_the_mmcv_lite_warning():
    proc = subprocess.run(
        [sys.executable, '-W', 'default', '-c', 'import gpt4image_mm.engine'],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    assert 'MultiScaleDeformableAttention' not in proc.stderr
    # the filter was scoped to that import, not left behind
    proc = subprocess.run(
        [sys.executable, '-c', 'import warnings, gpt4image_mm.engine; '
         'print(any("MultiScaleDeformable" in str(f[1]) for f in '
         'warnings.filters))'],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.stdout.strip() == 'False', proc.stderr


RECORDING_RUNNER = '''
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


@RUNNERS.register_module()
class RecordingRunner(Runner):
    """Says in a file that the config's runner_type built it."""

    @classmethod
    def from_cfg(cls, cfg):
        runner = super().from_cfg(cfg)
        with open(cfg.work_dir + '/runner_used.txt', 'w') as f:
            f.write(cls.__name__)
        return runner
'''


def test_runner_type_builds_the_configured_runner(tmp_path):
    """mmpretrain's tools/train.py builds through RUNNERS when the config
    names ``runner_type``; ours did ``Runner.from_cfg`` whatever it said."""
    from conftest import make_image_folder
    from helpers import BASE_CFG
    make_image_folder(tmp_path / 'imgs', per_class=2)
    (tmp_path / 'my_runner.py').write_text(RECORDING_RUNNER)
    (tmp_path / 'base.py').write_text(BASE_CFG.format(root=tmp_path / 'imgs'))
    (tmp_path / 'cfg.py').write_text(
        "_base_ = ['base.py']\nrunner_type = 'RecordingRunner'\n"
        "custom_imports = dict(imports=['my_runner'], "
        'allow_failed_imports=False)\n'
        'train_cfg = dict(max_epochs=1)\n')
    work = tmp_path / 'work'
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'tools', 'train.py'), 'cfg.py',
         '--work-dir', str(work)], cwd=tmp_path, capture_output=True,
        text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(tmp_path), os.environ.get('PYTHONPATH', '')])))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / 'runner_used.txt').read_text() == 'RecordingRunner'
    assert (work / 'epoch_1.pth').exists()
