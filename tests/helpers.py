"""Helpers shared by several test files: the one place tests import from
(a test file never imports another test file)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import torch
from conftest import ROOT, make_image_folder, random_store


def load_tool(name: str = 'embed') -> ModuleType:
    """``tools/<name>.py`` as a module, to call its ``main(argv)``."""
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', os.path.join(ROOT, 'tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BASE_CFG = '''
_base_ = ['mmpretrain::_base_/default_runtime.py']
data_preprocessor = dict(num_classes=3, mean=[128.] * 3, std=[64.] * 3)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8,
                  base_channels=8),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=64,
              loss=dict(type='CrossEntropyLoss')))
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=6, num_workers=0,
    dataset=dict(type='CustomDataset', data_root='{root}', pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=6, num_workers=0,
    dataset=dict(type='CustomDataset', data_root='{root}', pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))
randomness = dict(seed=0)
'''

ALIGN_CFG = '''
_base_ = ['base.py', '{configs}/_base_/gpt4image.py']
model = dict(
    _base_.gpt4image_cnn,
    align_neck=dict(type='AlignmentNeck', out_channels=8),
    align_loss=dict(type='ContrastiveAlignLoss', temperature=0.2,
                    loss_weight=0.3, learnable_temperature=True))
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset, store='{store}'))
'''


def write_tiny_project(tmp: Path, dim: int = 8) -> Path:
    """Image folder, random store, base.py and align.py in ``tmp``; returns
    align.py (shared by the train, reliability and torchrun tests)."""
    root = tmp / 'imgs'
    keys = make_image_folder(root, per_class=4)
    random_store(tmp / 'store', keys, dim=dim)
    (tmp / 'base.py').write_text(BASE_CFG.format(root=root))
    (tmp / 'align.py').write_text(ALIGN_CFG.format(
        configs=ROOT / 'configs', store=tmp / 'store'))
    return tmp / 'align.py'


def make_tiny_clip(path, full=True, projection_dim=24, seed=0):
    """Save a tiny CLIP (full model or text tower with projection) plus a
    character-level CLIP BPE tokenizer; returns the in-memory model."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    chars = list(bytes_to_unicode().values())
    vocab = {'<|startoftext|>': 0, '<|endoftext|>': 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + '</w>', len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                pad_token_id=1)
    torch.manual_seed(seed)
    if full:
        cfg = CLIPConfig(text_config=text, vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=4, image_size=32, patch_size=16),
            projection_dim=projection_dim)
        model = CLIPModel(cfg).eval()
    else:
        model = CLIPTextModelWithProjection(CLIPTextConfig(
            projection_dim=projection_dim, **text)).eval()
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return model, tok


# GPT4Image over BASE_CFG (saved as base.py) with class-level descriptions:
# per_class and a multi-positive loss (the experiment tests).
CLASS_LEVEL_ALIGN_CFG = '''
_base_ = ['base.py', '{configs}/_base_/gpt4image.py']
model = dict(
    _base_.gpt4image_cnn,
    align_neck=dict(type='AlignmentNeck', out_channels=384),
    align_loss=dict(type='ContrastiveAlignLoss', temperature=0.2,
                    loss_weight=0.3, positives='label'))
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset, store='{store}',
    per_class=True))
'''
