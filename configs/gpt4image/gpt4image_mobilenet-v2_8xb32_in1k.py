# MobileNetV2 on ImageNet-1k with GPT4Image (mobile: the neck is dropped at
# export, so the deployed model is the plain MobileNetV2).
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
          '../_base_/gpt4image.py']

model = _base_.gpt4image_cnn
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='data/imagenet/gpt4image_store'))
caption_prompt = 'configs/prompts/imagenet.txt'
