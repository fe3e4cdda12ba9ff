# DeiT-Small on ImageNet-1k with GPT4Image: the DeiT recipe (AdamW, 300
# epochs, RandAugment, Mixup 0.8 / CutMix 1.0, label smoothing) plus the
# alignment loss. Mixup/CutMix mix the text targets too (soft contrastive
# targets, see docs/configs.md), unlike the official code.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py', '_base_/gpt4image.py']

model = _base_.gpt4image_vit
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='data/imagenet/gpt4image_store'))
