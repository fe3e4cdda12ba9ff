# The official GPT4Image ResNet-50 ImageNet run, line by line
# (huawei-noah/Efficient-Computing GPT4Image/README.md:47, resnet/main.py;
# every value and each remaining difference: docs/reproduce.md).
#   4 GPUs x 256 = global batch 1024; SGD m0.9, lr 0.4 = 0.1 x 1024/256, wd
#   1e-4 on all parameters; 120 epochs, cosine to 1e-5 stepped per epoch, no
#   warm-up; RandomResizedCrop + flip; plain cross-entropy; best epoch
#   reported (save_best on val top-1).
#   Alignment: CLIP RN50 text targets (1024-d), clip loss, tau 0.2, and the
#   official EFFECTIVE weight 0.3 / 4 = 0.075: the official loss is averaged
#   by DDP over its 4 GPUs, ours has exact gradients (docs/reproduce.md).
# Train: bash tools/dist_train.sh THIS_CONFIG 4
# Store from the official embedding file: tools/embed.py
#   import-gpt4image-embeddings imagenet_clip_text_emb_0_1281166.pth
#   --images data/imagenet/train --out data/imagenet/gpt4image_store
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py', '../_base_/gpt4image.py']

num_gpus = 4  # README.md:47 --nproc_per_node=4
model = dict(
    _base_.gpt4image_cnn,
    # torchvision's resnet50 (resnet/model_lib/resnet.py:153) does not
    # zero-init the last BN of each block; mmpretrain's ResNet does.
    backbone=dict(zero_init_residual=False),
    # torchvision's fc keeps PyTorch's default Linear init.
    head=dict(init_cfg=None),
    align_loss=dict(
        type='ContrastiveAlignLoss', temperature=0.2, loss_weight=0.3 / num_gpus,
        mode='clip'))

# torchvision transforms (PIL, bilinear): RandomResizedCrop(224) + flip;
# val Resize(256) + CenterCrop(224) (resnet/main.py:112-124).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=256,  # per GPU (README.md:47 --batch-size=256)
    drop_last=True,  # resnet/main.py:132-137
    dataset=dict(
        _delete_=True, type='DescriptionDataset',
        dataset=dict(_base_.train_dataloader.dataset,
                     pipeline=train_pipeline),
        store='data/imagenet/gpt4image_store'))
val_dataloader = dict(
    batch_size=250,  # resnet/main.py:140
    dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1 * num_gpus * 256 / 256, momentum=0.9,
                   weight_decay=1e-4))
param_scheduler = [dict(
    type='CosineAnnealingLR', T_max=120, by_epoch=True, begin=0, end=120,
    eta_min=1e-5)]
train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)
default_hooks = dict(checkpoint=dict(
    type='CheckpointHook', interval=1, max_keep_ckpts=2,
    save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=1)  # resnet/main.py:77
caption_prompt = 'configs/prompts/imagenet.txt'
