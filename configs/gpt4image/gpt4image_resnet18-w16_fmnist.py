# The demo's GPT4Image arm: the baseline + alignment to class-level
# descriptions (SmolLM2 writes K per class; all-MiniLM-L6-v2 embeds, 384-d).
# Same data, epochs, schedule and seed as the baseline; the head is dropped
# at inference. Tuning runs: docs/demo.md.
_base_ = ['../fashion_mnist/resnet18-w16_fmnist.py', '../_base_/gpt4image.py']

model = dict(
    _base_.gpt4image_cnn,
    # PyTorch's default head init, as measured in docs/demo.md (the official
    # trunc-normal D^-0.5 init is the default elsewhere).
    align_neck=dict(type='AlignmentNeck', out_channels=384,
                    norm_cfg=dict(type='BN1d'), init_std=None),
    # Class-level descriptions: same-class samples are positives, not
    # negatives (multi-positive InfoNCE).
    align_loss=dict(
        type='ContrastiveAlignLoss', temperature=0.2, loss_weight=0.3,
        positives='label'))
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset,
    store='work_dirs/demo/store', per_class=True))
