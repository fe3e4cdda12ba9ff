# DeiT-Small on ImageNet-1k with GPT4Image: mmpretrain's DeiT-S recipe
# (AdamW lr 1e-3 at 4 x 256, 20 warm-up epochs per iteration from 1e-6 then
# cosine to 1e-5 over 300 epochs, RandAugment, Mixup 0.8 / CutMix 1.0, label
# smoothing, no drop path, no EMA) plus the alignment loss -- not the
# official recipe (that is gpt4image-official_deit-small_8xb128-300e_in1k.py).
# Mixup/CutMix mix the text targets too (soft contrastive targets, see
# docs/configs.md), unlike the official code.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py', '../_base_/gpt4image.py']

model = _base_.gpt4image_vit
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='data/imagenet/gpt4image_store'))
caption_prompt = 'configs/prompts/imagenet.txt'
