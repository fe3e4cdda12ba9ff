# ResNet-18 on CIFAR-100 with GPT4Image.
_base_ = ['resnet18_8xb16_cifar100.py', '_base_/gpt4image.py']

model = _base_.gpt4image_cnn
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='data/cifar100/gpt4image_store'))
