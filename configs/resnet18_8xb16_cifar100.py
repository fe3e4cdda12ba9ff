# Plain ResNet-18 on CIFAR-100 (mmpretrain ships only ResNet-50 for it): the
# baseline of gpt4image/gpt4image_resnet18_8xb16_cifar100.py.
_base_ = ['mmpretrain::resnet/resnet50_8xb16_cifar100.py']

model = dict(backbone=dict(depth=18), head=dict(in_channels=512))
