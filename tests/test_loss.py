"""ContrastiveAlignLoss against explicit hand computations (float64)."""
import math

import pytest
import torch

from gpt4image_mm.models.loss import (
    ContrastiveAlignLoss,
    image_to_text,
    retrieval_accuracy,
    text_to_image,
)
from gpt4image_mm.registry import ALIGN_LOSS_MODES


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _logits(img, txt, tau):
    """logits[i][j] = cos(img_i, txt_j) / tau, written out with loops."""
    a = [_unit(r) for r in img.tolist()]
    b = [_unit(r) for r in txt.tolist()]
    return [[sum(x * y for x, y in zip(ai, bj)) / tau for bj in b] for ai in a]


def _soft_ce(row, target):
    """-sum_k target_k * log softmax(row)_k with an explicit log-sum-exp."""
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return -sum(t * (x - lse) for t, x in zip(target, row) if t)


def _hand_infonce(img, txt, tau, targets, symmetric):
    """Mean of image->text soft CE; (+ text->image with targets^T) / 2."""
    lg = _logits(img, txt, tau)
    n = len(lg)
    i2t = sum(_soft_ce(lg[i], targets[i]) for i in range(n)) / n
    if not symmetric:
        return i2t
    t2i = 0.0
    for j in range(n):
        col = [lg[i][j] for i in range(n)]
        tcol = [targets[i][j] for i in range(n)]
        t2i += _soft_ce(col, [t / sum(tcol) for t in tcol])
    return (i2t + t2i / n) / 2


def _eye(n):
    return [[float(i == j) for j in range(n)] for i in range(n)]


def _data(n=4, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randn(n, d, generator=g, dtype=torch.float64))


@pytest.mark.parametrize('mode', ['clip', 'ctr'])
def test_infonce_matches_hand(mode):
    img, txt = _data()
    loss = ContrastiveAlignLoss(temperature=0.2, mode=mode)(img, txt)
    hand = _hand_infonce(img, txt, 0.2, _eye(4), symmetric=mode == 'clip')
    assert loss.item() == pytest.approx(hand, rel=1e-10)


def test_cosine_matches_hand():
    img, txt = _data()
    loss = ContrastiveAlignLoss(mode='cosine')(img, txt)
    cos = [sum(x * y for x, y in zip(_unit(a), _unit(b)))
           for a, b in zip(img.tolist(), txt.tolist())]
    assert loss.item() == pytest.approx(
        sum(2 - 2 * c for c in cos) / 4, rel=1e-10)


def test_loss_weight_and_registry():
    from mmpretrain.registry import MODELS
    img, txt = _data()
    built = MODELS.build(dict(type='ContrastiveAlignLoss', loss_weight=0.3))
    base = ContrastiveAlignLoss()(img, txt)
    assert built(img, txt).item() == pytest.approx(0.3 * base.item())


def test_clip_is_symmetric_in_its_arguments():
    img, txt = _data(6, 5)
    loss = ContrastiveAlignLoss(temperature=0.1)
    assert loss(img, txt).item() == pytest.approx(loss(txt, img).item(),
                                                  rel=1e-12)


def test_learnable_temperature_clamped_and_trained():
    img, txt = _data()
    img.requires_grad_()
    loss = ContrastiveAlignLoss(temperature=1e-4, learnable_temperature=True)
    assert loss.logit_scale() == pytest.approx(100.0, rel=1e-6)
    loss(img, txt).backward()
    grad = loss.log_logit_scale.grad
    assert grad is not None and grad.abs().item() > 0
    # Pushed above the bound, the value stays clamped ...
    with torch.no_grad():
        loss.log_logit_scale.fill_(math.log(500.0))
    assert loss.logit_scale() == pytest.approx(100.0, rel=1e-6)
    # ... and an unclamped initial value is 1/tau.
    free = ContrastiveAlignLoss(temperature=0.07, learnable_temperature=True)
    assert free.logit_scale() == pytest.approx(1 / 0.07, rel=1e-6)
    assert ContrastiveAlignLoss(temperature=0.05).logit_scale() == 20.0


def test_gradient_reaches_image_not_text():
    img, txt = _data()
    img.requires_grad_()
    txt.requires_grad_()
    for mode in ('clip', 'ctr', 'cosine'):  # the built-in modes
        img.grad = None
        ContrastiveAlignLoss(mode=mode)(img, txt).backward()
        assert img.grad is not None and img.grad.abs().sum() > 0
        assert txt.grad is None


def _class_targets(labels):
    return [[float(a == b) / labels.count(a) for b in labels] for a in labels]


@pytest.mark.parametrize('mode', ['clip', 'ctr'])
def test_label_positives_match_hand(mode):
    img, txt = _data(5, 4)
    labels = [0, 1, 0, 2, 0]
    loss = ContrastiveAlignLoss(mode=mode, positives='label')(
        img, txt, labels=torch.tensor(labels))
    hand = _hand_infonce(img, txt, 0.2, _class_targets(labels),
                         symmetric=mode == 'clip')
    assert loss.item() == pytest.approx(hand, rel=1e-10)


def test_text_positives_equal_label_positives_for_class_texts():
    img, class_txt = _data(5, 4)
    labels = torch.tensor([3, 1, 3, 0, 1])
    txt = class_txt[labels]
    by_label = ContrastiveAlignLoss(positives='label')(img, txt, labels=labels)
    by_text = ContrastiveAlignLoss(positives='text')(img, txt)
    assert by_text.item() == pytest.approx(by_label.item(), rel=1e-10)


@pytest.mark.parametrize('positives', ['instance', 'label'])
@pytest.mark.parametrize('mode', ['clip', 'ctr', 'cosine'])
def test_identity_mix_is_no_mix(mode, positives):
    img, txt = _data(5, 4)
    labels = torch.tensor([0, 1, 0, 2, 1])
    loss = ContrastiveAlignLoss(mode=mode, positives=positives)
    plain = loss(img, txt, labels=labels)
    mixed = loss(img, txt, labels=labels, mix=torch.eye(5, dtype=img.dtype))
    assert mixed.item() == pytest.approx(plain.item(), rel=1e-12)


@pytest.mark.parametrize('mode', ['clip', 'ctr'])
def test_two_sample_mixup_matches_hand(mode):
    img, txt = _data(2, 3)
    lam = 0.7
    mix = torch.tensor([[lam, 1 - lam], [1 - lam, lam]], dtype=img.dtype)
    loss = ContrastiveAlignLoss(temperature=0.5, mode=mode)(img, txt, mix=mix)
    lg = _logits(img, txt, 0.5)
    lse_row = [math.log(math.exp(r[0]) + math.exp(r[1])) for r in lg]
    i2t = [-(lam * (lg[0][0] - lse_row[0]) + (1 - lam) *
             (lg[0][1] - lse_row[0])),
           -((1 - lam) * (lg[1][0] - lse_row[1]) + lam *
             (lg[1][1] - lse_row[1]))]
    hand = sum(i2t) / 2
    if mode == 'clip':  # text j: images weighted by column j of mix
        lse_col = [math.log(math.exp(lg[0][j]) + math.exp(lg[1][j]))
                   for j in range(2)]
        t2i = [-(lam * (lg[0][0] - lse_col[0]) + (1 - lam) *
                 (lg[1][0] - lse_col[0])),
               -((1 - lam) * (lg[0][1] - lse_col[1]) + lam *
                 (lg[1][1] - lse_col[1]))]
        hand = (hand + sum(t2i) / 2) / 2
    assert loss.item() == pytest.approx(hand, rel=1e-10)


def test_mixup_cosine_targets_the_mixed_text():
    img, txt = _data(2, 3)
    lam = 0.3
    mix = torch.tensor([[lam, 1 - lam], [1 - lam, lam]], dtype=img.dtype)
    loss = ContrastiveAlignLoss(mode='cosine')(img, txt, mix=mix)
    t = [_unit(r) for r in txt.tolist()]
    hand = 0.0
    for i in range(2):
        target = _unit([mix[i, 0].item() * a + mix[i, 1].item() * b
                        for a, b in zip(t[0], t[1])])
        hand += 2 - 2 * sum(x * y for x, y in zip(_unit(img[i].tolist()),
                                                 target))
    assert loss.item() == pytest.approx(hand / 2, rel=1e-10)


def test_mix_with_label_positives_matches_hand():
    img, txt = _data(3, 4)
    labels = [0, 1, 0]
    mix = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.6, 0.4], [0.4, 0.0, 0.6]],
                       dtype=img.dtype)
    loss = ContrastiveAlignLoss(mode='clip', positives='label')(
        img, txt, labels=torch.tensor(labels), mix=mix)
    pos = _class_targets(labels)
    targets = [[sum(mix[i, j].item() * pos[j][k] for j in range(3))
                for k in range(3)] for i in range(3)]
    hand = _hand_infonce(img, txt, 0.2, targets, symmetric=True)
    assert loss.item() == pytest.approx(hand, rel=1e-10)


@pytest.mark.parametrize('positives', ['instance', 'label', 'text'])
@pytest.mark.parametrize('mode', ['clip', 'ctr', 'cosine'])
def test_zero_weight_samples_are_dropped(mode, positives):
    img, class_txt = _data(6, 4)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    txt = class_txt[labels] if positives == 'text' else class_txt.clone()
    keep = torch.tensor([True, False, True, True, False, True])
    txt[~keep] = 0  # no description: garbage that must not matter
    loss = ContrastiveAlignLoss(mode=mode, positives=positives)
    weighted = loss(img, txt, labels=labels, weights=keep.double())
    dropped = loss(img[keep], txt[keep], labels=labels[keep])
    assert torch.isfinite(weighted)
    assert weighted.item() == pytest.approx(dropped.item(), rel=1e-12)


def test_fractional_weights_are_a_weighted_mean():
    img, txt = _data(3, 3)
    w = [0.5, 1.0, 0.25]
    loss = ContrastiveAlignLoss(mode='ctr')(
        img, txt, weights=torch.tensor(w, dtype=img.dtype))
    lg = _logits(img, txt, 0.2)
    rows = [_soft_ce(lg[i], _eye(3)[i]) for i in range(3)]
    hand = sum(a * b for a, b in zip(w, rows)) / sum(w)
    assert loss.item() == pytest.approx(hand, rel=1e-10)


@pytest.mark.parametrize('mode', ['clip', 'ctr', 'cosine'])
def test_all_zero_weights_give_zero_and_keep_the_graph(mode):
    img, txt = _data()
    img.requires_grad_()
    loss = ContrastiveAlignLoss(mode=mode, learnable_temperature=True)(
        img, txt, weights=torch.zeros(4))
    assert loss.item() == 0.0
    loss.backward()
    assert img.grad is not None and torch.all(img.grad == 0)


def test_low_precision_inputs_are_computed_in_float32():
    img, txt = _data(8, 16)
    ref = ContrastiveAlignLoss(temperature=0.05)(img, txt)
    half = ContrastiveAlignLoss(temperature=0.05)(img.bfloat16(),
                                                  txt.bfloat16())
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(ref.item(), rel=2e-2)


def test_retrieval_accuracy():
    txt = torch.eye(4)
    img = txt[[0, 1, 3, 3]] + 0.01
    acc = retrieval_accuracy(img.requires_grad_(), txt)
    assert acc.item() == pytest.approx(0.75)
    assert not acc.requires_grad


def test_retrieval_accuracy_follows_the_positives():
    # two texts per class (class-level descriptions): image 0 is nearest to
    # text 1, another description of its own class -- a hit for 'label',
    # a miss for 'instance'; image 3 is nearest to a text of another class
    txt = torch.eye(4)
    labels = torch.tensor([0, 0, 1, 1])
    img = txt[[1, 0, 2, 0]] + 0.01
    assert retrieval_accuracy(img, txt).item() == pytest.approx(0.25)
    assert retrieval_accuracy(img, txt, labels, 'label').item() == \
        pytest.approx(0.75)
    same = txt[[0, 0, 2, 3]]  # texts 0 and 1 identical
    img = txt[[0, 0, 2, 0]] + 0.01  # image 1 finds text 0 == its own text
    assert retrieval_accuracy(img, same).item() == pytest.approx(0.5)
    assert retrieval_accuracy(img, same, None, 'text').item() == \
        pytest.approx(0.75)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ContrastiveAlignLoss(mode='byol')
    with pytest.raises(ValueError):
        ContrastiveAlignLoss(positives='class')
    img, txt = _data()
    with pytest.raises(ValueError, match='labels'):
        ContrastiveAlignLoss(positives='label')(img, txt)
    with pytest.raises(ValueError, match='mix'):
        ContrastiveAlignLoss()(img, txt, mix=torch.eye(3))


def test_modes_are_a_table_of_the_loss_helpers():
    """'clip' is the mean of the two directions built from the helpers,
    'ctr' the first."""
    img, txt = _data(n=5, d=4)
    labels = torch.tensor([0, 1, 0, 2, 1])
    loss = ContrastiveAlignLoss(positives='label')
    batch = loss.local_batch(img, txt, labels, None, None)
    targets, row_w = loss.targets(batch)
    logits = loss.logits(batch)
    i2t = image_to_text(loss, logits, targets, batch, row_w)
    t2i = text_to_image(loss, logits, targets, batch, row_w)
    assert loss(img, txt, labels).item() == pytest.approx(
        ((i2t + t2i) / 2).item(), rel=1e-12)
    ctr = ContrastiveAlignLoss(mode='ctr', positives='label')
    assert ctr(img, txt, labels).item() == pytest.approx(i2t.item(),
                                                         rel=1e-12)
    assert {'clip', 'ctr', 'cosine'} <= set(ALIGN_LOSS_MODES.module_dict)
