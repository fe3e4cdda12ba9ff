"""End to end with the real MiniLM: descriptions -> tools/embed.py ->
DescriptionDataset -> a training step; and the online teacher gives the same
loss as the precomputed store."""
import json

import torch
from conftest import make_image_folder
from helpers import load_tool
from mmengine.dataset import default_collate
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS

import gpt4image_mm.engine  # noqa: F401  (registers the plugin)
from gpt4image_mm.datasets import DescriptionDataset
from gpt4image_mm.models.teacher import TextEmbeddingTeacher  # noqa: F401
from gpt4image_mm.utils.assets import minilm_dir

BACKBONE = dict(type='ResNet_CIFAR', depth=18, stem_channels=8,
                base_channels=8)
COLOURS = {'cat': 'red', 'dog': 'green', 'ship': 'blue'}


def folder_cfg(root):
    return dict(type='mmpretrain.CustomDataset', data_root=str(root),
                pipeline=[dict(type='LoadImageFromFile'),
                          dict(type='PackInputs')])


def model_cfg(teacher=None):
    cfg = dict(type='TextAlignedClassifier', backbone=BACKBONE,
               neck=dict(type='GlobalAveragePooling'),
               head=dict(type='LinearClsHead', num_classes=3,
                         in_channels=64),
               align_neck=dict(type='AlignmentNeck', in_channels=64,
                               out_channels=384),
               align_loss=dict(type='ContrastiveAlignLoss', temperature=0.2,
                               loss_weight=0.3))
    if teacher:
        cfg['teacher'] = dict(type='TextEmbeddingTeacher', encoder=teacher)
    return cfg


def setup_data(tmp_path):
    root = tmp_path / 'imgs'
    keys = make_image_folder(root, per_class=2)
    desc = tmp_path / 'desc.jsonl'
    with open(desc, 'w') as f:
        for i, key in enumerate(keys):
            cls = key.split('/')[0]
            f.write(json.dumps(dict(
                key=key, text=f'A photo of a {COLOURS[cls]} {cls}, '
                f'number {i}, in a noisy square.')) + '\n')
    return root, keys, str(desc)


def batch_of(ds):
    return default_collate([ds[i] for i in range(len(ds))])


def test_descriptions_to_training_step(tmp_path):
    root, keys, desc = setup_data(tmp_path)
    store = str(tmp_path / 'store')
    assert load_tool().main([desc, '--encoder', minilm_dir(), '--out', store,
                             '--no-progress']) == 0
    ds = DescriptionDataset(folder_cfg(root), store=store)
    data = batch_of(ds)
    assert data['data_samples'][0].text_embedding.shape == (384,)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg())
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.align_neck.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    log = model.train_step(data, optim)
    assert torch.isfinite(log['loss_align']) and log['loss_align'] > 0
    after = model.align_neck.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before
               if after[k].is_floating_point())


def test_online_teacher_gives_the_store_loss(tmp_path):
    root, keys, desc = setup_data(tmp_path)
    model_dir = minilm_dir()
    store = str(tmp_path / 'store')
    load_tool().main([desc, '--encoder', model_dir, '--out', store,
                      '--store-dtype', 'float32', '--no-progress'])
    offline = DescriptionDataset(folder_cfg(root), store=store)
    online = DescriptionDataset(folder_cfg(root), descriptions=desc)
    torch.manual_seed(0)
    m_store = MODELS.build(model_cfg())
    m_online = MODELS.build(model_cfg(teacher=model_dir))
    m_online.load_state_dict(m_store.state_dict(), strict=True)
    losses = []
    for model, ds in ((m_store, offline), (m_online, online)):
        data = model.data_preprocessor(batch_of(ds), training=True)
        losses.append(model(**data, mode='loss'))
    assert 'text' in batch_of(online)['data_samples'][0]
    torch.testing.assert_close(losses[1]['loss_align'],
                               losses[0]['loss_align'], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses[1]['loss'], losses[0]['loss'])
