# ResNet-50 on ImageNet-1k with GPT4Image, the official recipe.
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py', '_base_/gpt4image.py']

model = _base_.gpt4image_cnn
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='data/imagenet/gpt4image_store'))  # tools/embed.py --out

# Official recipe: 120 epochs, SGD m0.9 wd1e-4 (inherited), lr 0.1 x bs/256
# (inherited, with auto_scale_lr base 256), cosine to 1e-5.
train_cfg = dict(max_epochs=120)
param_scheduler = dict(
    type='CosineAnnealingLR', T_max=120, by_epoch=True, eta_min=1e-5)
