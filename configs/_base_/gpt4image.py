# GPT4Image pieces shared by every config: inherit this file next to an
# mmpretrain config and set `model = _base_.gpt4image_cnn` (or _vit):
#   _base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py',
#             'gpt4image_mm::_base_/gpt4image.py']
# Importing gpt4image_mm.engine registers the plugin's components in
# mmpretrain's registries (and enforces safe checkpoint loading), so the
# configs run in MMEngine's own Runner too. A config that imports its own
# modules lists it with them: imports=['gpt4image_mm.engine', 'my_module'].
custom_imports = dict(imports=['gpt4image_mm.engine'],
                      allow_failed_imports=False)

# The paper's loss (arXiv 2306.00693): total = CE + 0.3 * L_align, symmetric
# InfoNCE over the global batch; tau 0.2 for CNNs, 0.05 for ViTs. Our loss
# has exact DDP gradients, so 0.3 here is the paper's lambda, not the official
# runs' effective weight 0.3/W on W GPUs (docs/reproduce.md; the
# gpt4image-official_* configs set that).
# out_channels is the text encoder's width: 1024 = CLIP RN50 text tower, the
# official default. align_neck.in_channels is read off the head. Neck
# arguments are named as mmpretrain's NonLinearNeck's: the CNN head is
# Linear(no bias) -> BN -> ReLU -> Linear, the ViT head has biases, no norm.
gpt4image_cnn = dict(
    type='TextAlignedClassifier',
    align_neck=dict(type='AlignmentNeck', out_channels=1024,
                    norm_cfg=dict(type='BN1d')),
    align_loss=dict(
        type='ContrastiveAlignLoss', temperature=0.2, loss_weight=0.3,
        mode='clip'))
gpt4image_vit = dict(
    type='TextAlignedClassifier',
    align_neck=dict(type='AlignmentNeck', out_channels=1024,
                    with_bias=True, norm_cfg=None),
    align_loss=dict(
        type='ContrastiveAlignLoss', temperature=0.05, loss_weight=0.3,
        mode='clip'))
