# ResNet-50 on Stanford Cars (196 models) with GPT4Image:
# mmpretrain's fine-grained recipe
# (resnet50_8xb8_cub.py: ImageNet-21k-pretrained ResNet-50 fine-tuned at 448 px,
# SGD 0.01 nesterov, 5 warm-up + 95 cosine epochs) on mmpretrain's StanfordCars
# dataset class, plus the alignment loss. Captions: tools/caption.py
#   --config THIS_CONFIG --prompt configs/prompts/stanford_cars.txt (class-conditioned).
_base_ = ['mmpretrain::resnet/resnet50_8xb8_cub.py', '../_base_/gpt4image.py']

data_root = 'data/Stanford_Cars'
num_classes = 196
model = dict(_base_.gpt4image_cnn, head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=dict(type='StanfordCars', data_root=data_root, split='train',
                 pipeline=_base_.train_pipeline),
    store=data_root + '/gpt4image_store'))
val_dataloader = dict(dataset=dict(
    _delete_=True, type='StanfordCars', data_root=data_root, split='test',
    pipeline=_base_.test_pipeline))
test_dataloader = val_dataloader
default_hooks = dict(checkpoint=dict(
    type='CheckpointHook', interval=1, max_keep_ckpts=2,
    save_best='accuracy/top1', rule='greater'))
caption_prompt = 'configs/prompts/stanford_cars.txt'
