"""Every shipped config trains as shipped, through MMEngine's own Runner.

For each config under configs/ (found by glob: a config added later is
covered without touching this file) the Runner builds the config's model,
pipelines, optimizer wrapper, param schedulers, hooks, train loop and val
loop and runs one epoch plus one validation pass on stand-in data written in
the layout the config's dataset class reads (tests/_standin_data.py), with a
store written by the project's store writer.

Overridden, and only these (each must be, to run here in seconds):
  * ``data_root`` of every dataset -> the stand-in data;
  * the ``DescriptionDataset`` store path -> the store made for it;
  * ``batch_size=2``, ``num_workers=0``, ``persistent_workers=False``;
  * input size: ImageNet-scale pipelines (sizes >= 128 px) are scaled by
    1/7 (224 -> 32, CUB's 600/448 -> 85/64) and ViT backbones get the
    matching ``img_size`` (Swin keeps 224 for its 7 x 7 windows): the same
    transforms and layers on fewer pixels, so that all configs run within
    minutes on two CPU cores;
  * ``val_interval=1``, and a hook stops the loop after its first epoch
    (2 iterations on the stand-in data): the schedulers are built for all
    of the config's epochs, as in a real run;
  * ``work_dir`` -> a temporary folder;
  * configs with ``save_best``: no periodic checkpoint (``interval`` past
    the run, ``save_last=False``): the best checkpoint, asserted below, is
    the same save, and one copy of DeiT-B's (over 1 GB with AdamW and EMA
    state) is enough;
  * AmpOptimWrapper -> OptimWrapper (AMP needs a GPU; this runs on the CPU);
  * ``Pretrained`` init and ``load_from`` off (no checkpoint downloads);
  * CIFAR's md5 table -> None (the stand-in pickles cannot have the real
    files' checksums; the files themselves are read by mmpretrain's code).
Not a config value, but set for speed: one torch thread (``one_thread``).
Measured on the shared 2-core machine: this file's 66 tests take 4-6 min
wall (about 2.2 min CPU); the slowest is DeiT-B (31-43 s, mostly writing its
checkpoints).

The schedules are checked separately: each config's param schedulers are
stepped over all of its epochs on a dummy optimizer, and the learning rate at
every epoch start is compared with the curve the config's comment promises.
"""
import copy
import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _standin_data import N_TRAIN, WRITERS
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import PARAM_SCHEDULERS, init_default_scope

import gpt4image_mm.engine  # noqa: F401  (registers the plugin)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob('configs/**/*.py')
                 if '_base_' not in p.parts)
WRAPPERS = ('DescriptionDataset', 'RepeatDataset', 'ClassBalancedDataset')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
BATCH = 2


@functools.cache
def _parsed(path):
    return Config.fromfile(path)


def load_config(path):
    """A fresh copy of a shipped config: each file is parsed once for the
    tests here that read it (a parse costs about 0.25 CPU s)."""
    return copy.deepcopy(_parsed(str(ROOT / path)))


def stem(path):
    return Path(path).stem


def innermost(ds_cfg):
    """The dataset config that names the files (wrappers removed)."""
    while ds_cfg.get('type') in WRAPPERS:
        ds_cfg = ds_cfg['dataset']
    return ds_cfg


def no_cifar_md5(monkeypatch):
    from mmpretrain.datasets import CIFAR10, CIFAR100
    for cls in (CIFAR10, CIFAR100):
        for attr in ('train_list', 'test_list'):
            monkeypatch.setattr(cls, attr,
                                [[name, None] for name, _ in getattr(cls, attr)])
        monkeypatch.setattr(cls, 'meta', dict(cls.meta, md5=None))


def point_at_standin(cfg, data_dir):
    """Write stand-in data for every dataset type the config reads."""
    for name in LOADERS:
        if not cfg.get(name):
            continue
        inner = innermost(cfg[name]['dataset'])
        kind = inner['type']
        assert kind in WRITERS, f'no stand-in data for dataset {kind}: add a ' \
            'writer to tests/_standin_data.py'
        root = data_dir / kind
        if not root.exists():
            WRITERS[kind](root)
        inner['data_root'] = str(root)


def write_config_store(cfg, store_dir):
    """A store over the train split's keys, from the project's writer."""
    from mmpretrain.registry import DATASETS

    from gpt4image_mm.datasets.store import write_store
    from gpt4image_mm.utils.keys import class_key, class_names, dataset_keys
    wrapper = cfg.train_dataloader.dataset
    inner = copy.deepcopy(innermost(wrapper))
    inner['pipeline'] = []
    dataset = DATASETS.build(inner)
    if wrapper.get('per_class'):
        keys = [class_key(c) for c in class_names(dataset)]
    else:
        keys = dataset_keys(dataset)
    dim = cfg.model.align_neck.out_channels
    rows = np.random.default_rng(0).standard_normal((len(keys), dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    write_store(str(store_dir), keys, rows.astype(np.float32), 'stand-in')
    wrapper['store'] = str(store_dir)
    # class-conditioned captioning needs a name for every class
    assert len(class_names(dataset)) == cfg.model.head.num_classes


SHRINK = 7  # 224 px -> 32 px
SIZE_KEYS = ('scale', 'crop_size', 'img_size')


def shrink(value):
    """Scale an ImageNet-scale size (int or pair) down by SHRINK."""
    if isinstance(value, int) and value >= 128:
        return max(value // SHRINK, 16)
    if isinstance(value, (tuple, list)) and all(
            isinstance(v, int) and v >= 128 for v in value):
        return type(value)(max(v // SHRINK, 16) for v in value)
    return value


def shrink_inputs(cfg):
    backbone = cfg.model.backbone
    if 'Swin' in backbone['type']:
        return  # 7 x 7 windows on every stage need the full 224 px
    for name in LOADERS:
        if cfg.get(name):
            for step in innermost(cfg[name]['dataset']).get('pipeline', []):
                for key in SIZE_KEYS:
                    if key in step:
                        step[key] = shrink(step[key])
    if 'img_size' in backbone:
        backbone['img_size'] = shrink(backbone['img_size'])


def overrides_for_cpu(cfg, work_dir):
    for name in LOADERS:
        if cfg.get(name):
            cfg[name].update(batch_size=BATCH, num_workers=0,
                             persistent_workers=False)
    cfg.train_cfg['val_interval'] = 1
    cfg.work_dir = str(work_dir)
    cfg.load_from = None
    ckpt = cfg.default_hooks.get('checkpoint') or {}
    if ckpt.get('save_best'):
        ckpt.update(interval=cfg.train_cfg.max_epochs + 1, save_last=False)
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        cfg.optim_wrapper['type'] = 'OptimWrapper'
        for key in ('loss_scale', 'dtype'):
            cfg.optim_wrapper.pop(key, None)
    init = cfg.model.backbone.get('init_cfg')
    if isinstance(init, dict) and init.get('type') == 'Pretrained':
        cfg.model.backbone.pop('init_cfg')


class StopAfterFirstEpoch(Hook):
    """Ends the train loop after one epoch; the param schedulers were
    already built for the config's full ``max_epochs``."""

    def before_train(self, runner):
        runner.train_loop._max_epochs = 1


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP's spinning
    threads thrash (measured: ResNet-101 step 10.4 s with 2 threads under
    load, 0.63 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_all_families_are_shipped():
    names = ' '.join(stem(c) for c in CONFIGS) + ' '
    for family in ('resnet50_8xb32_in1k', 'deit-small', 'swin-tiny',
                   'resnet18_8xb16_cifar100', 'cub', 'mobilenet', 'fmnist',
                   'official', 'deit-base', 'deit-tiny', 'resnet101',
                   'resnet18_4xb256', 'resnet18_8xb16_cifar10 ',
                   'resnet50_8xb16_cifar10 ', 'resnet50_8xb16_cifar100',
                   'stanford-cars', 'fgvc-aircraft', 'flowers102'):
        assert family in names, family


@pytest.mark.parametrize('path', CONFIGS, ids=stem)
def test_config_trains_through_runner(path, tmp_path, monkeypatch):
    from mmengine.runner import Runner
    monkeypatch.chdir(ROOT)  # configs name data/... relative to the repo
    no_cifar_md5(monkeypatch)
    cfg = load_config(path)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    point_at_standin(cfg, tmp_path / 'data')
    aligned = cfg.model.type == 'TextAlignedClassifier'
    if aligned:
        assert cfg.train_dataloader.dataset.type == 'DescriptionDataset'
        assert cfg.custom_imports['imports'] == ['gpt4image_mm.engine']
        write_config_store(cfg, tmp_path / 'store')
    overrides_for_cpu(cfg, tmp_path / 'work')
    shrink_inputs(cfg)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(StopAfterFirstEpoch())
    runner.train()
    assert runner.iter == N_TRAIN // BATCH
    scalars = runner.message_hub.log_scalars
    assert math.isfinite(scalars['train/loss'].current())
    if aligned:
        assert math.isfinite(scalars['train/loss_align'].current())
    assert 'val/accuracy/top1' in scalars
    ckpt = cfg.default_hooks.get('checkpoint', {})
    if ckpt.get('save_best'):
        assert list((tmp_path / 'work').glob('best_accuracy_top1*.pth'))


# ---------------------------------------------------------------- schedules

def epoch_start_lrs(cfg, iters_per_epoch=4):
    """LR at the start of every epoch, stepping the config's schedulers as
    MMEngine's ParamSchedulerHook does (iter-based after each iteration,
    epoch-based after each epoch) on a dummy optimizer."""
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    max_epochs = cfg.train_cfg.max_epochs
    lr = cfg.optim_wrapper.optimizer.lr
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    by_iter, by_epoch = [], []
    scheds = cfg.param_scheduler
    for s in (scheds if isinstance(scheds, list) else [scheds]):
        s = dict(copy.deepcopy(s))
        s.pop('_scope_', None)
        convert = s.pop('convert_to_iter_based', False)
        s.setdefault('end', max_epochs)
        cls = PARAM_SCHEDULERS.get(s.pop('type'))
        if s.get('by_epoch', True) and convert:
            by_iter.append(cls.build_iter_from_epoch(
                opt, epoch_length=iters_per_epoch, **s))
        elif s.get('by_epoch', True):
            by_epoch.append(cls(opt, **s))
        else:
            raise AssertionError('iteration-based schedules: extend this test')
    lrs = []
    for _ in range(max_epochs):
        lrs.append(opt.param_groups[0]['lr'])
        for _ in range(iters_per_epoch):
            for s in by_iter:
                s.step()
        for s in by_epoch:
            s.step()
    return np.array(lrs)


def warmup_cosine(epochs, peak, eta_min, warmup=0, warmup_start=None,
                  warmup_per_iter=False, iters_per_epoch=4):
    """The promised curve: linear warm-up from ``warmup_start`` to ``peak``
    over ``warmup`` epochs (stepped per epoch, or per iteration), then cosine
    from ``peak`` to ``eta_min`` over the remaining epochs. MMEngine's LinearLR
    reaches its end factor on its last step (``end - begin - 1`` steps)."""
    steps = warmup * (iters_per_epoch if warmup_per_iter else 1)
    out = []
    for e in range(epochs):
        if e < warmup:
            t = e * (iters_per_epoch if warmup_per_iter else 1)
            out.append(warmup_start + (peak - warmup_start) * min(
                t / (steps - 1), 1))
        else:
            t = (e - warmup) / (epochs - warmup)
            out.append(eta_min + (peak - eta_min) * (1 + math.cos(math.pi * t))
                       / 2)
    return np.array(out)


# What each config's comment promises: (epochs, peak lr, eta_min, warm-up
# epochs, warm-up start lr). Configs not listed get the generic check.
OFFICIAL_RESNET = dict(epochs=120, peak=0.4, eta_min=1e-5)
OFFICIAL_DEIT = dict(epochs=300, peak=1e-3, warmup=5, warmup_start=1e-6,
                     eta_min=1e-5)
FINE_GRAINED = dict(epochs=100, peak=0.01, warmup=5, warmup_start=1e-4,
                    eta_min=0, warmup_per_iter=True)
PROMISES = {
    'gpt4image_resnet50_8xb32_in1k': dict(epochs=120, peak=0.1, eta_min=1e-5),
    'gpt4image-official_resnet50_4xb256-cos120e_in1k': OFFICIAL_RESNET,
    'gpt4image_resnet18_4xb256-cos120e_in1k': OFFICIAL_RESNET,
    'gpt4image_resnet101_4xb256-cos120e_in1k': OFFICIAL_RESNET,
    'gpt4image-official_deit-base_8xb128-300e_in1k': OFFICIAL_DEIT,
    'gpt4image-official_deit-small_8xb128-300e_in1k': OFFICIAL_DEIT,
    'gpt4image_deit-tiny_8xb128-300e_in1k': OFFICIAL_DEIT,
    'gpt4image_resnet50_8xb8_cub': FINE_GRAINED,
    'gpt4image_resnet50_8xb8_stanford-cars': FINE_GRAINED,
    'gpt4image_resnet50_8xb8_fgvc-aircraft': FINE_GRAINED,
    'gpt4image_resnet50_8xb8_flowers102': FINE_GRAINED,
    'gpt4image_deit-small_4xb256_in1k': dict(
        epochs=300, peak=1e-3, warmup=20, warmup_start=1e-6, eta_min=1e-5,
        warmup_per_iter=True),
    'resnet18-w16_fmnist': dict(epochs=20, peak=0.05, eta_min=0),
    'gpt4image_resnet18-w16_fmnist': dict(epochs=20, peak=0.05, eta_min=0),
}


@pytest.mark.parametrize('path', CONFIGS, ids=stem)
def test_lr_curve_is_the_promised_one(path):
    cfg = load_config(path)
    lrs = epoch_start_lrs(cfg)
    assert len(lrs) == cfg.train_cfg.max_epochs
    assert np.isfinite(lrs).all() and (lrs > 0).all()
    promise = PROMISES.get(stem(path))
    if promise is None:  # generic: no rise after the peak, ends below it
        peak = int(lrs.argmax())
        assert (np.diff(lrs[peak:]) <= 1e-12).all()
        assert lrs[-1] < lrs[peak]
        return
    expected = warmup_cosine(**promise)
    np.testing.assert_allclose(lrs, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize('path', CONFIGS, ids=stem)
def test_gpt4image_configs_name_a_class_conditioned_prompt(path):
    from gpt4image_mm.captioning.prompts import image_prompts
    cfg = load_config(path)
    if cfg.model.type != 'TextAlignedClassifier' or cfg.train_dataloader[
            'dataset'].get('per_class'):
        return  # baselines; class-level (text-only) descriptions
    prompts = image_prompts(str(ROOT / cfg.caption_prompt))
    assert prompts and all(p.needs_class for p in prompts)


def test_official_configs_state_the_effective_alignment_weight():
    for name, gpus in (('gpt4image-official_resnet50_4xb256-cos120e_in1k', 4),
                       ('gpt4image-official_deit-base_8xb128-300e_in1k', 8)):
        cfg = load_config(f'configs/gpt4image/{name}.py')
        assert cfg.model.align_loss.loss_weight == pytest.approx(0.3 / gpus)
        assert f'0.3 / {gpus}' in (
            ROOT / 'configs' / 'gpt4image' / f'{name}.py').read_text()
        world_batch = gpus * cfg.train_dataloader.batch_size
        assert world_batch == cfg.auto_scale_lr.base_batch_size == 1024
    cfg = load_config(
        'configs/gpt4image/gpt4image-official_resnet50_4xb256-cos120e_in1k.py')
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.4)
    assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    assert not cfg.optim_wrapper.get('paramwise_cfg')  # wd on all params
    assert cfg.train_cfg.max_epochs == 120


def test_tools_accept_packaged_mmpretrain_configs():
    from gpt4image_mm.engine.runner import load_config
    cfg = load_config('mmpretrain::resnet/resnet50_8xb32_in1k.py')
    assert cfg.model.type == 'ImageClassifier'
    with pytest.raises(FileNotFoundError, match='nope.py'):
        load_config('mmpretrain::nope/nope.py')
