# ResNet-18 on ImageNet-1k with GPT4Image, the official ResNet recipe
# (gpt4image-official_resnet50_4xb256-cos120e_in1k.py; the official script
# takes the arch as a flag, resnet/main.py:37 -a resnet18): 4 x 256, SGD
# lr 0.4, wd 1e-4 on all parameters, 120 epochs cosine to 1e-5 per epoch,
# effective alignment weight 0.3 / 4. Captions: tools/caption.py
#   --config THIS_CONFIG --prompt configs/prompts/imagenet.txt.
_base_ = ['gpt4image-official_resnet50_4xb256-cos120e_in1k.py']

model = dict(backbone=dict(depth=18), head=dict(in_channels=512))
