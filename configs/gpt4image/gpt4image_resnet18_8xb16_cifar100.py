# ResNet-18 on CIFAR-100 with GPT4Image (CIFAR stem; baseline:
# ../resnet18_8xb16_cifar100.py). Arrays are keyed <split>/<index>. Captions:
# tools/caption.py --config THIS_CONFIG --prompt configs/prompts/cifar.txt.
_base_ = ['../resnet18_8xb16_cifar100.py', '../_base_/gpt4image.py']

model = _base_.gpt4image_cnn
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='data/cifar100/gpt4image_store'))
default_hooks = dict(checkpoint=dict(
    type='CheckpointHook', interval=1, max_keep_ckpts=2,
    save_best='accuracy/top1', rule='greater'))
caption_prompt = 'configs/prompts/cifar.txt'
