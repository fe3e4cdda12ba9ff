# ResNet-50 on CUB-200-2011 (fine-grained birds) with GPT4Image.
_base_ = ['mmpretrain::resnet/resnet50_8xb8_cub.py', '_base_/gpt4image.py']

model = _base_.gpt4image_cnn
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='data/CUB_200_2011/gpt4image_store'))
