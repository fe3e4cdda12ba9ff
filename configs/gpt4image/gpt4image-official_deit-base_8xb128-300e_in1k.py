# The official GPT4Image DeiT-B ImageNet run (GPT4Image/README.md:56: 8 GPUs
# x 128, deit/main.py defaults; values and differences: docs/reproduce.md):
# 300 epochs, AdamW lr 5e-4 x 1024/512 = 1e-3, wd 0.05, 5 warm-up epochs
# from 1e-6 (per epoch), cosine to 1e-5, drop path 0.1, EMA 0.99996,
# RandAugment, random erasing 0.25, Mixup 0.8 / CutMix 1.0, label smoothing
# 0.1, repeated augmentation x3, AMP, eval crop 1.0; align the CLS token with
# CLIP RN50 text (1024-d), tau 0.05, text targets NOT mixed under
# Mixup/CutMix (official behaviour), and the official EFFECTIVE alignment
# weight 0.3 / 8 = 0.0375 (DDP averages the official loss over 8 GPUs).
# Train: bash tools/dist_train.sh THIS_CONFIG 8
_base_ = ['mmpretrain::deit/deit-base_16xb64_in1k.py', '../_base_/gpt4image.py',
          '../_base_/deit_official.py']

num_gpus = 8  # README.md:56 --nproc_per_node=8
batch_per_gpu = 128  # README.md:56 --batch-size=128
lr = 5e-4 * num_gpus * batch_per_gpu / 512  # main.py:70, 285-287

model = dict(
    _base_.gpt4image_vit,
    backbone=dict(drop_path_rate=0.1),  # main.py:45
    mix_text_targets=False,
    align_loss=dict(
        type='ContrastiveAlignLoss', temperature=0.05,  # main.py:186
        loss_weight=0.3 / num_gpus, mode='clip'))  # main.py:185
train_dataloader = dict(
    batch_size=batch_per_gpu,
    drop_last=True,  # main.py:236
    sampler=_base_.deit_sampler,
    dataset=dict(
        _delete_=True, type='DescriptionDataset',
        dataset=dict(_base_.train_dataloader.dataset,
                     pipeline=_base_.deit_train_pipeline),
        store='data/imagenet/gpt4image_store'))
val_dataloader = dict(
    batch_size=250,  # main.py:240
    dataset=dict(pipeline=_base_.deit_test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(_base_.deit_optim_wrapper, _delete_=True,
                     optimizer=dict(_base_.deit_optim_wrapper.optimizer, lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=_base_.deit_warmup_lr / lr,
         by_epoch=True, begin=0, end=_base_.deit_warmup_epochs),
    dict(type='CosineAnnealingLR', eta_min=_base_.deit_min_lr, by_epoch=True,
         begin=_base_.deit_warmup_epochs, end=_base_.deit_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=_base_.deit_epochs, val_interval=1)
auto_scale_lr = dict(base_batch_size=num_gpus * batch_per_gpu)
custom_hooks = _base_.deit_custom_hooks
default_hooks = dict(checkpoint=dict(
    type='CheckpointHook', interval=1, max_keep_ckpts=2,
    save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=0, diff_rank_seed=True)  # main.py:163, 202: seed + rank
caption_prompt = 'configs/prompts/imagenet.txt'
