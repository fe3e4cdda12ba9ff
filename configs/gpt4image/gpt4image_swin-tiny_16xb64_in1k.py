# Swin-T on ImageNet-1k with GPT4Image. Swin pools its tokens (GAP neck) and
# uses a linear head, so it takes the CNN-style head; tau as for ViTs (0.05,
# the official transformer setting).
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
          '../_base_/gpt4image.py']

model = dict(
    _base_.gpt4image_vit,
    align_neck=dict(type='AlignmentNeck', out_channels=1024,
                    norm_cfg=dict(type='BN1d')))
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='data/imagenet/gpt4image_store'))
caption_prompt = 'configs/prompts/imagenet.txt'
