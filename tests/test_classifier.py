"""TextAlignedClassifier, AlignmentNeck and the Mixup/CutMix target mixing."""
import pytest
import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import gpt4image_mm.engine  # noqa: F401  (registers the plugin)
from gpt4image_mm.models import AlignmentNeck

BACKBONE = dict(type='ResNet_CIFAR', depth=18, stem_channels=8,
                base_channels=8)
HEAD = dict(type='LinearClsHead', num_classes=4, in_channels=64)


def build(**kw):
    cfg = dict(type='TextAlignedClassifier', backbone=BACKBONE,
               neck=dict(type='GlobalAveragePooling'), head=HEAD,
               align_neck=dict(type='AlignmentNeck', out_channels=6),
               align_loss=dict(type='ContrastiveAlignLoss', temperature=0.2,
                               loss_weight=0.3))
    cfg.update(kw)
    return MODELS.build(cfg)


def batch(n=6, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.rand(n, 3, 16, 16, generator=g) * 255
    samples = []
    for i in range(n):
        s = DataSample().set_gt_label(i % 4)
        s.set_field(torch.randn(dim, generator=g), 'text_embedding')
        samples.append(s)
    return {'inputs': inputs, 'data_samples': samples}


def test_loss_mode_adds_align_loss_and_backprops():
    model = build()
    assert model.align_neck.in_channels == 64  # read off the head
    data = model.data_preprocessor(batch(), training=True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss', 'loss_align', 'align_acc'}
    total = losses['loss'] + losses['loss_align']
    total.backward()
    assert model.align_neck.layers[0].weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert 0 <= losses['align_acc'].item() <= 100


def test_predict_and_tensor_ignore_the_neck():
    model = build().eval()
    plain = MODELS.build(dict(type='ImageClassifier', backbone=BACKBONE,
                              neck=dict(type='GlobalAveragePooling'),
                              head=HEAD)).eval()
    missing = plain.load_state_dict(model.state_dict(), strict=False)
    assert all(k.startswith('align_') for k in missing.unexpected_keys)
    assert not missing.missing_keys
    data = model.data_preprocessor(batch())
    calls = []
    model.align_neck.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        ours = model(data['inputs'], mode='tensor')
        theirs = plain(data['inputs'], mode='tensor')
        preds = model(**data, mode='predict')
    torch.testing.assert_close(ours, theirs)
    assert len(preds) == 6 and calls == []
    assert isinstance(model, ImageClassifier)


def test_missing_text_and_wrong_width_errors():
    model = build()
    data = model.data_preprocessor(batch(dim=5), training=True)
    with pytest.raises(ValueError, match='5-d but align_neck.out_channels'):
        model(**data, mode='loss')
    data = batch()
    for s in data['data_samples']:
        del s.text_embedding
    data = model.data_preprocessor(data, training=True)
    with pytest.raises(KeyError, match='DescriptionDataset'):
        model(**data, mode='loss')
    neck = AlignmentNeck(in_channels=32, out_channels=4)
    with pytest.raises(ValueError, match=r'expects \(B, 32\).*\(3, 64\)'):
        neck(torch.randn(3, 64))


@pytest.mark.parametrize('augment', [dict(type='Mixup', alpha=0.8),
                                     dict(type='CutMix', alpha=1.0)])
def test_batch_augments_give_the_exact_mixing_matrix(augment):
    torch.manual_seed(0)
    model = build(train_cfg=dict(augments=[augment]),
                  data_preprocessor=dict(num_classes=4))
    data = batch(n=6)
    raw = data['inputs'].clone()
    out = model.data_preprocessor(data, training=True)
    mix = torch.stack([s.mix_weights for s in out['data_samples']])
    torch.testing.assert_close(mix.sum(1), torch.ones(6))
    # the mixing matrix reproduces the mixed labels from the one-hot ones
    onehot = torch.nn.functional.one_hot(torch.arange(6) % 4, 4).float()
    scores = torch.stack([s.gt_score for s in out['data_samples']])
    torch.testing.assert_close(mix @ onehot, scores)
    if augment['type'] == 'Mixup':  # and the mixed images from the raw ones
        expect = torch.einsum('ij,jchw->ichw', mix, raw)
        torch.testing.assert_close(out['inputs'], expect, atol=1e-4,
                                   rtol=1e-4)
    losses = model(**out, mode='loss')
    losses['loss_align'].backward()


def test_mixed_targets_reach_the_loss():
    """The loss sees soft targets: equal to calling it with the matrix."""
    torch.manual_seed(0)
    model = build(train_cfg=dict(augments=[dict(type='Mixup', alpha=1.0)]),
                  data_preprocessor=dict(num_classes=4))
    out = model.data_preprocessor(batch(), training=True)
    mix = torch.stack([s.mix_weights for s in out['data_samples']])
    assert not torch.equal(mix, torch.eye(6))
    feats = model.extract_feat(out['inputs'])
    image = model.align_neck(feats[-1])
    text = torch.stack([s.text_embedding for s in out['data_samples']])
    labels = torch.tensor([s.gt_label.item() for s in out['data_samples']])
    expect = model.align_loss(image, text, labels=labels, mix=mix)
    got = model.align_losses(feats, out['data_samples'])['loss_align']
    torch.testing.assert_close(got, expect)
    unmixed = model.align_loss(image, text, labels=labels)
    assert not torch.allclose(got, unmixed)


def _multi_label_batch():
    data = batch(n=4)
    for s, labels in zip(data['data_samples'], ([0, 2], [1], [3], [0, 1])):
        s.set_gt_label(labels)
    return data


def test_multi_label_targets_are_refused_for_class_positives():
    """Only the first of several labels was kept, without a word."""
    head = dict(type='MultiLabelLinearClsHead', num_classes=4,
                in_channels=64)
    model = build(head=head, align_loss=dict(
        type='ContrastiveAlignLoss', temperature=0.2, positives='label'))
    data = model.data_preprocessor(_multi_label_batch(), training=True)
    with pytest.raises(ValueError, match="sample 0 of the batch has 2 "
                       "gt_label entries .*positives='instance'"):
        model(**data, mode='loss')
    # instance positives need no class: multi-label training goes on
    model = build(head=head)
    data = model.data_preprocessor(_multi_label_batch(), training=True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss_align'])
