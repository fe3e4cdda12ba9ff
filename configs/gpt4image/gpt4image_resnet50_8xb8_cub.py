# ResNet-50 on CUB-200-2011 (fine-grained birds) with GPT4Image: mmpretrain's
# fine-grained recipe (ImageNet-21k-pretrained ResNet-50 fine-tuned at 448 px,
# SGD 0.01 nesterov, 5 warm-up + 95 cosine epochs) plus the alignment loss.
# Captions: tools/caption.py --config THIS_CONFIG
#   --prompt configs/prompts/cub.txt (class-conditioned), then tools/embed.py.
_base_ = ['mmpretrain::resnet/resnet50_8xb8_cub.py', '../_base_/gpt4image.py']

model = _base_.gpt4image_cnn
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='data/CUB_200_2011/gpt4image_store'))
default_hooks = dict(checkpoint=dict(
    type='CheckpointHook', interval=1, max_keep_ckpts=2,
    save_best='accuracy/top1', rule='greater'))
caption_prompt = 'configs/prompts/cub.txt'
