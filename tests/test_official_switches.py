"""The official-behaviour switches: the heads' initialisation (default) and
unmixed text targets under Mixup/CutMix (opt-in)."""
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import gpt4image_mm.engine  # noqa: F401  (registers the plugin)
from gpt4image_mm.models.neck import AlignmentNeck


def outer_linears(neck):
    linears = [m for m in neck.modules() if isinstance(m, torch.nn.Linear)]
    return linears[0], linears[-1]


CNN_HEAD = dict()  # the defaults: Linear(no bias) -> BN1d -> ReLU -> Linear
VIT_HEAD = dict(with_bias=True, norm_cfg=None)  # Linear -> ReLU -> Linear


@pytest.mark.parametrize('head,dim,std', [(CNN_HEAD, 1024, 1024 ** -0.5),
                                          (VIT_HEAD, 1024, 0.02),
                                          (CNN_HEAD, 384, 384 ** -0.5)])
def test_official_init_is_the_default(head, dim, std):
    """resnet/utils.py:120-125 (CNN, D^-0.5) and deit/models.py:37-38 (ViT,
    0.02): truncated normal on the first and last Linear weights."""
    torch.manual_seed(0)
    neck = AlignmentNeck(2048, dim, **head)
    neck.init_weights()
    for layer in outer_linears(neck):
        w = layer.weight.detach()
        assert w.std().item() == pytest.approx(std, rel=0.03)
        assert w.abs().max().item() <= 2.0  # timm's absolute +-2 bounds


def test_init_switch_keeps_pytorch_default_or_takes_a_number():
    torch.manual_seed(0)
    neck = AlignmentNeck(2048, 1024, **CNN_HEAD, init_std=None)
    neck.init_weights()
    first, _ = outer_linears(neck)
    # PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert first.weight.abs().max().item() <= 2048 ** -0.5 + 1e-6
    assert first.weight.std().item() == pytest.approx(
        2048 ** -0.5 / 3 ** 0.5, rel=0.03)
    neck = AlignmentNeck(64, 32, **VIT_HEAD, init_std=0.1)
    neck.init_weights()
    assert outer_linears(neck)[1].weight.std().item() == pytest.approx(
        0.1, rel=0.1)
    with pytest.raises(ValueError, match='init_std'):
        AlignmentNeck(8, 8, init_std='xavier')


def test_head_init_survives_the_vit_model_init_cfg():
    """DeiT configs init every Linear with std 0.02 at the model level; the
    CNN-style head must still get its own D^-0.5 afterwards."""
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='TextAlignedClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18, base_channels=8,
                      stem_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=64),
        align_neck=dict(type='AlignmentNeck', out_channels=256),
        align_loss=dict(type='ContrastiveAlignLoss', temperature=0.2),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.02)]))
    model.init_weights()
    first, last = outer_linears(model.align_neck)
    for layer in (first, last):  # not the model-level 0.02
        assert layer.weight.std().item() == pytest.approx(256 ** -0.5,
                                                          rel=0.05)


def build_mixing_model(mix_text_targets):
    init_default_scope('mmpretrain')
    return MODELS.build(dict(
        type='TextAlignedClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18, base_channels=8,
                      stem_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=64),
        align_neck=dict(type='AlignmentNeck', out_channels=16,
                        with_bias=True, norm_cfg=None),
        align_loss=dict(type='ContrastiveAlignLoss', temperature=0.05),
        mix_text_targets=mix_text_targets,
        train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8)]),
        data_preprocessor=dict(num_classes=4)))


def align_loss_on_mixed_batch(mix_text_targets):
    torch.manual_seed(0)
    model = build_mixing_model(mix_text_targets)
    text = torch.nn.functional.normalize(torch.randn(6, 16), dim=1)
    samples = []
    for i in range(6):
        sample = DataSample().set_gt_label(i % 4)
        sample.set_field(text[i], 'text_embedding')
        samples.append(sample)
    torch.manual_seed(1)  # same Mixup draw (lambda from numpy, permutation
    np.random.seed(1)  # from torch) for both models
    data = model.data_preprocessor(
        {'inputs': torch.rand(6, 3, 32, 32) * 255, 'data_samples': samples},
        training=True)
    assert 'mix_weights' in data['data_samples'][0]  # the batch was mixed
    feats = model.extract_feat(data['inputs'])
    image = model.align_neck(model.aligned_feature(feats))
    loss = model.align_losses(feats, data['data_samples'])['loss_align']
    return model, image, text, data, loss


def test_unmixed_text_targets_are_the_official_identity_targets():
    """deit/engine.py:44-55: Mixup/CutMix mix images and labels; image i
    still aims at text i. With the switch off our loss is exactly the loss
    without mixing weights; the default uses the mixed (soft) targets."""
    model, image, text, data, off = align_loss_on_mixed_batch(False)
    plain = model.align_loss(image, text)
    assert off.item() == pytest.approx(plain.item(), rel=1e-6)
    *_, on = align_loss_on_mixed_batch(True)
    assert on.item() != pytest.approx(off.item(), rel=1e-3)
