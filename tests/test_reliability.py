"""Reliability under real conditions: jobs killed at any moment,
hostile inputs, secrets that must not leak.

One training job is SIGKILLed right after a mid-epoch checkpoint and resumed
with ``--resume`` (safe loading forced on, an API key in the environment);
several tests inspect that run. The other tests are in-process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict

import pytest
import torch
from conftest import ROOT, random_store
from helpers import write_tiny_project

import gpt4image_mm.engine  # noqa: F401  (registers the plugin)
from gpt4image_mm.datasets import DescriptionDataset, StoreError
from gpt4image_mm.datasets.description_dataset import SampleLoadError
from gpt4image_mm.utils.keys import dataset_keys, file_key

SENTINEL = f'sk-sentinel-{uuid.uuid4().hex}'
ITERS_PER_EPOCH = 6   # 12 images, batch 2
MAX_EPOCHS = 3
CKPT_EVERY = 2        # iterations
KILL_OPTS = ['train_dataloader.batch_size=2',
             f'train_cfg.max_epochs={MAX_EPOCHS}',
             'train_cfg.val_interval=100',
             'default_hooks.checkpoint.by_epoch=False',
             f'default_hooks.checkpoint.interval={CKPT_EVERY}',
             'default_hooks.logger.interval=1']


_write_configs = write_tiny_project


def _env() -> Dict[str, str]:
    env = dict(os.environ, OPENAI_API_KEY=SENTINEL,
               # safe loading on even where a caller passed weights_only=False
               TORCH_FORCE_WEIGHTS_ONLY_LOAD='1', PYTHONUNBUFFERED='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [str(ROOT), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    return env


def _last_iter(work: Path) -> int:
    """Iteration of the checkpoint ``last_checkpoint`` names (0: none)."""
    try:
        name = Path((work / 'last_checkpoint').read_text().strip()).name
    except OSError:
        return 0
    return int(name[len('iter_'):-len('.pth')]) if name.startswith(
        'iter_') else 0


@pytest.fixture(scope='module')
def killed_run(tmp_path_factory):
    """Train, SIGKILL right after the first mid-epoch checkpoint of epoch 2,
    then ``--resume`` (latest checkpoint of the work dir) to the end."""
    tmp = tmp_path_factory.mktemp('kill')
    cfg = _write_configs(tmp)
    work = tmp / 'work'
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(cfg),
           '--work-dir', str(work), '--cfg-options', *KILL_OPTS]
    with open(tmp / 'first.log', 'w') as log:
        proc = subprocess.Popen(cmd, cwd=tmp, env=_env(), stdout=log,
                                stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        killed_at = 0
        while proc.poll() is None and time.time() < deadline:
            it = _last_iter(work)
            if it > ITERS_PER_EPOCH and it % ITERS_PER_EPOCH:
                os.kill(proc.pid, signal.SIGKILL)  # only the job we started
                killed_at = it
                break
            time.sleep(0.02)
        proc.wait(timeout=60)
    first = (tmp / 'first.log').read_text()
    assert killed_at, f'never reached a mid-epoch checkpoint:\n{first[-3000:]}'
    assert proc.returncode == -signal.SIGKILL
    second = subprocess.run(cmd + ['--resume'], cwd=tmp, env=_env(),
                            capture_output=True, text=True, timeout=300)
    return dict(tmp=tmp, work=work, cfg=cfg, killed_at=killed_at,
                first=first, second=second,
                output=first + second.stdout + second.stderr)


def test_sigkill_mid_epoch_then_resume_completes(killed_run):
    second = killed_run['second']
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    killed_at = killed_run['killed_at']
    log = second.stdout + second.stderr
    epoch = killed_at // ITERS_PER_EPOCH
    assert f'resumed epoch: {epoch}, iter: {killed_at}' in log
    # the interrupted epoch is re-run from its start, then the rest follow
    assert f'Epoch(train) [{MAX_EPOCHS}][{ITERS_PER_EPOCH}/{ITERS_PER_EPOCH}]' \
        in log
    assert _last_iter(killed_run['work']) >= MAX_EPOCHS * ITERS_PER_EPOCH


def test_final_checkpoint_is_usable(killed_run, tmp_path):
    """Loads with ``weights_only=True`` strictly into the config's model and
    predicts finite scores; stripped, it loads strictly into the plain
    baseline classifier (the deployable model)."""
    from mmengine.config import Config
    from mmengine.dataset import default_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS, MODELS

    from gpt4image_mm.engine.checkpoint import strip_checkpoint

    work = killed_run['work']
    name = (work / 'last_checkpoint').read_text().strip()
    ckpt = torch.load(name, map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] >= MAX_EPOCHS * ITERS_PER_EPOCH
    cfg = Config.fromfile(str(killed_run['cfg']))
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.load_state_dict(ckpt['state_dict'], strict=True)
    model.eval()
    ds = DATASETS.build(cfg.val_dataloader.dataset)
    data = model.data_preprocessor(default_collate([ds[i] for i in
                                                    range(len(ds))]))
    with torch.no_grad():
        preds = model(**data, mode='predict')
    scores = torch.stack([p.pred_score for p in preds])
    assert scores.shape == (12, 3) and torch.isfinite(scores).all()

    assert strip_checkpoint(name, str(tmp_path / 'deploy.pth')) > 0
    base = Config.fromfile(str(killed_run['tmp'] / 'base.py'))
    plain = MODELS.build(base.model)
    plain.load_state_dict(torch.load(tmp_path / 'deploy.pth',
                                     weights_only=True)['state_dict'],
                          strict=True)


def test_api_key_appears_in_no_output(killed_run):
    """Logs, dumped configs, scalars and checkpoints (as bytes) of both runs,
    and everything they printed, are free of the key in the environment."""
    assert SENTINEL not in killed_run['output']
    files = [p for p in killed_run['tmp'].rglob('*') if p.is_file()]
    assert any(p.suffix == '.pth' for p in files)
    assert any(p.suffix == '.log' for p in files)
    leaks = [p for p in files if SENTINEL.encode() in p.read_bytes()]
    assert not leaks


def folder_cfg(root: Path) -> dict:
    return dict(type='mmpretrain.CustomDataset', data_root=str(root),
                pipeline=[dict(type='LoadImageFromFile'),
                          dict(type='PackInputs')])


def test_corrupt_truncated_and_missing_images_are_named(image_folder,
                                                        tmp_path):
    """Policy: a bad image stops training with one line naming sample key
    and file; it is never skipped or replaced silently."""
    root, keys = image_folder
    random_store(tmp_path / 'store', keys)
    ds = DescriptionDataset(folder_cfg(root), store=str(tmp_path / 'store'))
    png = (root / 'cat/0.png').read_bytes()
    (root / 'cat/0.png').write_bytes(png[:len(png) // 2])   # truncated
    (root / 'dog/1.png').write_bytes(b'\x89PNG garbage')     # corrupt
    (root / 'ship/2.png').unlink()                           # vanished
    index = {k: i for i, k in enumerate(keys)}
    for key in ('cat/0.png', 'dog/1.png', 'ship/2.png'):
        with pytest.raises(SampleLoadError) as info:
            ds[index[key]]
        msg = str(info.value)
        assert f"sample '{key}' ({root / key})" in msg, msg
        assert 'failed to load' in msg and '\n' not in msg
    assert ds[index['cat/1.png']]['inputs'].shape == (3, 16, 16)
    # the same line surfaces from a dataloader worker
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, [index['dog/1.png']]), num_workers=1,
        collate_fn=lambda x: x)
    with pytest.raises(SampleLoadError, match=r"sample 'dog/1\.png'"):
        next(iter(loader))


def test_store_from_another_encoder_is_refused(image_folder, tmp_path):
    root, keys = image_folder
    random_store(tmp_path / 'store', keys)  # manifest: encoder random-test
    with pytest.raises(StoreError, match="made by encoder 'random-test', "
                       "expected 'clip-rn50'"):
        DescriptionDataset(folder_cfg(root), store=str(tmp_path / 'store'),
                           encoder='clip-rn50')
    ds = DescriptionDataset(folder_cfg(root), store=str(tmp_path / 'store'),
                            encoder='random-test')
    assert len(ds) == len(keys)


def test_store_keyed_for_another_dataset_says_so(image_folder, tmp_path):
    """Keys with a different root (here 'train/...') match nothing: the
    error shows what the store's keys look like next to the wanted ones."""
    root, keys = image_folder
    random_store(tmp_path / 'store', [f'train/{k}' for k in keys])
    with pytest.raises(StoreError) as info:
        DescriptionDataset(folder_cfg(root), store=str(tmp_path / 'store'))
    msg = str(info.value)
    assert '12 of 12 samples have no description' in msg
    assert str(tmp_path / 'store') in msg and "'cat/0.png'" in msg
    assert "keys look like 'train/cat/0.png'" in msg


@pytest.mark.parametrize('override,error', [
    (dict(out_channels=16), '8-d but align_neck.out_channels is 16'),
    (dict(in_channels=32), r'expects \(B, 32\) features but got shape '
                           r'\(6, 64\)'),
])
def test_config_aligning_a_wrong_size_fails_at_the_first_step(
        tmp_path, override, error):
    """A full config through MMEngine's Runner: the size mismatch stops the
    first iteration with a message naming the setting to change."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(str(_write_configs(tmp_path, dim=8)))
    cfg.model.align_neck.update(override)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg.max_epochs = 1
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=error):
        runner.train()
    assert not list((tmp_path / 'work').rglob('*.pth'))


@pytest.mark.parametrize('root,path', [
    ('/data/in1k/train', '/data/in1k/train/n01/x.JPEG'),
    ('/data/in1k/train/', '/data/in1k/train/n01/x.JPEG'),
    ('data/./in1k', 'data/in1k/n01/x.JPEG'),
    ('data/in1k', 'data/in1k/n01/../n02/x.JPEG'),
    ('data/in1k', 'data/in1k//n01/x.JPEG'),
    ('data/in1k', 'data/in1k2/n01/x.JPEG'),
    ('data/in1k', 'other/n01/x.JPEG'),
    ('.', './n01/x.JPEG'),
    ('/', '/x.JPEG'),
])
def test_fast_file_key_equals_relpath(root, path):
    """The string-slicing fast path of the key join gives relpath's keys."""
    assert file_key(path, root) == os.path.relpath(path, root)


@pytest.mark.parametrize('kw', [dict(), dict(serialize_data=False),
                                dict(indices=5)])
def test_dataset_keys_bulk_read_matches_get_data_info(image_folder, kw):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    root, keys = image_folder
    init_default_scope('mmpretrain')
    ds = DATASETS.build(dict(folder_cfg(root), **kw))
    expected = [os.path.relpath(ds.get_data_info(i)['img_path'], str(root))
                for i in range(len(ds))]
    assert dataset_keys(ds) == expected == keys[:len(ds)]
