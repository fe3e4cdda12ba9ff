# DeiT-T on ImageNet-1k with GPT4Image, the official DeiT recipe
# (gpt4image-official_deit-base_8xb128-300e_in1k.py, README.md:56 with
# --model deit_tiny_patch16_224, deit/models.py:52): 8 x 128, AdamW 1e-3,
# 300 epochs, drop path 0.1, EMA, tau 0.05, unmixed text targets, effective
# alignment weight 0.3 / 8. Captions: tools/caption.py --config THIS_CONFIG
#   --prompt configs/prompts/imagenet.txt.
_base_ = ['gpt4image-official_deit-base_8xb128-300e_in1k.py']

model = dict(backbone=dict(arch='deit-tiny'), head=dict(in_channels=192))
