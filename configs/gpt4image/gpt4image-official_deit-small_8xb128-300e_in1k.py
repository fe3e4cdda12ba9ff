# The official GPT4Image DeiT recipe for DeiT-S: the DeiT-B command of
# GPT4Image/README.md:56 (8 GPUs x 128, deit/main.py defaults) with
# --model deit_small_patch16_224 (deit/models.py:67). Everything but the
# architecture is the DeiT-B reproduction's (the official scripts take the
# model as a flag): 300 epochs, AdamW 1e-3, drop path 0.1, EMA 0.99996,
# tau 0.05, unmixed text targets, effective alignment weight 0.3 / 8; values
# and differences: docs/reproduce.md.
# Train: bash tools/dist_train.sh THIS_CONFIG 8
_base_ = ['gpt4image-official_deit-base_8xb128-300e_in1k.py']

model = dict(backbone=dict(arch='deit-small'), head=dict(in_channels=384))
