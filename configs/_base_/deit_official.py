# The official GPT4Image DeiT recipe (huawei-noah/Efficient-Computing
# GPT4Image/deit/main.py defaults; values and differences: docs/reproduce.md),
# shared by the gpt4image-official_deit-* configs, which set the arch and GPU count.
# Inherit after mmpretrain's DeiT config and _base_/gpt4image.py.

# timm create_transform (deit/datasets.py:86-95): RandomResizedCrop bicubic
# (main.py:101), flip, RandAugment rand-m9-mstd0.5-inc1 (main.py:97), random
# erasing 0.25 per-pixel (main.py:115-117); no colour jitter with RandAugment.
_mean = [123.675, 116.28, 103.53]  # timm IMAGENET_DEFAULT_MEAN x 255
_std = [58.395, 57.12, 57.375]  # timm IMAGENET_DEFAULT_STD x 255
_bgr_mean, _bgr_std = _mean[::-1], _std[::-1]
deit_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2,
         total_level=10, magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in _bgr_mean],
                      interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand',
         min_area_ratio=0.02, max_area_ratio=1 / 3, fill_color=_bgr_mean,
         fill_std=_bgr_std),
    dict(type='PackInputs'),
]
# Eval crop ratio 1.0: Resize(224, bicubic) + CenterCrop(224)
# (deit/datasets.py:105-109), not DeiT's 256/224.
deit_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
# AdamW (main.py:55), wd 0.05 (main.py:65), eps 1e-8 (main.py:57); timm
# exempts 1-d parameters, pos_embed and cls_token from weight decay. No
# gradient clipping (main.py:61); AMP always on (engine.py:50, main.py:292).
deit_optim_wrapper = dict(
    type='AmpOptimWrapper', loss_scale='dynamic',
    optimizer=dict(type='AdamW', weight_decay=0.05, eps=1e-8,
                   betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0),
                     '.pos_embed': dict(decay_mult=0.0)}),
    clip_grad=None)
deit_epochs = 300  # main.py:34
deit_warmup_epochs = 5  # main.py:85
deit_warmup_lr = 1e-6  # main.py:78
deit_min_lr = 1e-5  # main.py:80
# EMA 0.99996 (main.py:48-51): mmengine's momentum is 1 - decay.
deit_custom_hooks = [dict(type='EMAHook', momentum=4e-5,
                          priority='ABOVE_NORMAL')]
# Repeated augmentation x3 (main.py:104-106, samplers.py:16).
deit_sampler = dict(type='RepeatAugSampler', num_repeats=3, shuffle=True)
