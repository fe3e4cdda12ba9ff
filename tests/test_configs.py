"""Every shipped config builds with its real backbone and trains a step."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import gpt4image_mm  # noqa: F401

CONFIGS = sorted(str(p) for p in Path(__file__).parents[1].glob(
    'configs/**/*.py') if '_base_' not in p.parts)
# input side used for the step (CNNs take any size; ViT/Swin need theirs)
SIDE = {'fmnist': 28, 'cifar': 32, 'swin': 224, 'deit': 224}


def side_of(path):
    return next((s for k, s in SIDE.items() if k in path), 96)


def test_all_families_are_shipped():
    names = ' '.join(Path(c).name for c in CONFIGS)
    for family in ('resnet50_8xb32_in1k', 'deit-small', 'swin-tiny',
                   'resnet18_8xb16_cifar100', 'cub', 'mobilenet', 'fmnist'):
        assert family in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: Path(p).stem)
def test_config_builds_and_steps(path):
    cfg = Config.fromfile(path)
    init_default_scope('mmpretrain')
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor'):
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model_cfg.backbone.pop('init_cfg', None)  # no checkpoint downloads here
    model = MODELS.build(model_cfg)
    model.init_weights()
    aligned = model_cfg['type'] == 'TextAlignedClassifier'
    if aligned:
        wrapper = cfg.train_dataloader.dataset
        assert wrapper.type == 'DescriptionDataset'
        assert 'type' in wrapper.dataset and 'pipeline' in wrapper.dataset
        assert cfg.custom_imports['imports'] == ['gpt4image_mm']
    side = side_of(path)
    channels = model_cfg.backbone.get('in_channels', 3)
    n = 4
    num_classes = model.head.num_classes
    samples = []
    for i in range(n):
        s = DataSample().set_gt_label(i % num_classes)
        if aligned:
            s.set_field(torch.randn(model.align_neck.out_channels),
                        'text_embedding')
        samples.append(s)
    inputs = torch.rand(n, channels, side, side) * 255
    data = model.data_preprocessor({'inputs': inputs, 'data_samples': samples},
                                   training=True)
    losses = model(**data, mode='loss')
    assert any('loss' in k and 'align' not in k for k in losses)
    if aligned:
        assert losses['loss_align'].requires_grad
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    if aligned:
        assert model.align_neck.layers[0].weight.grad is not None


def test_tools_accept_packaged_mmpretrain_configs():
    from gpt4image_mm.apis import resolve_config
    path = resolve_config('mmpretrain::resnet/resnet50_8xb32_in1k.py')
    assert Config.fromfile(path).model.type == 'ImageClassifier'
    with pytest.raises(FileNotFoundError, match='no such config'):
        resolve_config('mmpretrain::nope/nope.py')
    assert resolve_config('configs/x.py') == 'configs/x.py'
