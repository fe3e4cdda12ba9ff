"""``ImageClassifier`` + GPT4Image's cross-modal alignment loss."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from gpt4image_mm.models.loss import retrieval_accuracy
from gpt4image_mm.utils.errors import InputError

_ALIGN_FEATURES = ('pre_logits', 'neck')


@MODELS.register_module()
class TextAlignedClassifier(ImageClassifier):
    """An image classifier that also aligns its feature with text embeddings.

    In ``mode='loss'`` the feature the classification head's fc sees
    (``align_feature='pre_logits'``: post-GAP for CNNs, the CLS token for
    ViTs) goes through ``align_neck`` and ``align_loss`` pulls it towards the
    sample's description embedding. ``predict``/``tensor`` modes are exactly
    ``ImageClassifier``'s: the neck never runs at inference.

    Args:
        backbone (dict): As :class:`mmpretrain.models.ImageClassifier`.
        align_neck (dict): Config of the projection head
            (``AlignmentNeck``); ``in_channels`` defaults to the width the
            head's fc sees.
        align_loss (dict): Config of the loss (``ContrastiveAlignLoss``).
        neck (dict, optional): As ``ImageClassifier``. Defaults to None.
        head (dict, optional): As ``ImageClassifier``. Defaults to None.
        teacher (dict, optional): ``TextEmbeddingTeacher`` config for online
            mode: samples carry raw ``text`` and are encoded on the fly.
            Defaults to None.
        align_feature (str): ``'pre_logits'`` (what the head's fc sees) or
            ``'neck'`` (the neck's output). Defaults to ``'pre_logits'``.
        mix_text_targets (bool): Under Mixup/CutMix, aim each mixed image at
            the same mix of its sources' texts. False keeps text i as image
            i's only target, as the official code does (its
            deit/engine.py:44-55 mixes images and labels, never text).
            Defaults to True.
        pretrained (str, optional): As ``ImageClassifier``. Defaults to None.
        train_cfg (dict, optional): As ``ImageClassifier``. Defaults to None.
        data_preprocessor (dict, optional): As ``ImageClassifier``;
            ``ClsDataPreprocessor`` becomes ``TextAlignedDataPreprocessor``.
            Defaults to None.
        init_cfg (dict, optional): As ``ImageClassifier``. Defaults to None.
    """

    def __init__(self, backbone: dict, align_neck: dict, align_loss: dict,
                 neck: Optional[dict] = None, head: Optional[dict] = None,
                 teacher: Optional[dict] = None,
                 align_feature: str = 'pre_logits',
                 mix_text_targets: bool = True,
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if align_feature not in _ALIGN_FEATURES:
            raise InputError(f'align_feature must be one of {_ALIGN_FEATURES},'
                             f' got {align_feature!r}')
        data_preprocessor = dict(data_preprocessor or {})
        # Our preprocessor records Mixup/CutMix mixing for the text targets.
        if data_preprocessor.get('type', 'ClsDataPreprocessor') in (
                'ClsDataPreprocessor', 'mmpretrain.ClsDataPreprocessor'):
            data_preprocessor['type'] = 'TextAlignedDataPreprocessor'
        super().__init__(backbone, neck=neck, head=head, pretrained=pretrained,
                         train_cfg=train_cfg,
                         data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        self.align_feature = align_feature
        self.mix_text_targets = mix_text_targets
        align_neck = dict(align_neck)
        if align_neck.get('in_channels') is None:
            align_neck['in_channels'] = self._aligned_channels()
        self.align_neck = MODELS.build(align_neck)
        self.align_loss = MODELS.build(align_loss)
        self.teacher = MODELS.build(teacher) if teacher else None

    def _aligned_channels(self) -> int:
        """Width of the aligned feature, read off the head, so configs need
        not repeat it (``align_neck.in_channels`` overrides)."""
        head = self.head
        width = getattr(head, 'hidden_dim', None) or getattr(
            head, 'in_channels', None)
        if self.align_feature == 'neck' or not width:
            raise InputError('cannot infer align_neck.in_channels from the '
                             f'head {type(head).__name__}; set it in config')
        return int(width)

    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> Dict[str, torch.Tensor]:
        feats = self.extract_feat(inputs)
        losses = self.head.loss(feats, data_samples)
        losses.update(self.align_losses(feats, data_samples))
        return losses

    def aligned_feature(self, feats: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The vector that is aligned with the text (see ``align_feature``)."""
        if self.align_feature == 'neck':
            return feats[-1]
        pre = self.head.pre_logits(feats)
        # DeiT's distillation head returns (cls token, dist token)
        return pre[0] if isinstance(pre, (tuple, list)) else pre

    def align_losses(self, feats: Tuple[torch.Tensor, ...],
                     data_samples: List[DataSample]) -> Dict[str, torch.Tensor]:
        """``loss_align`` plus in-batch image->text retrieval accuracy."""
        image = self.align_neck(self.aligned_feature(feats))
        text = self.text_targets(data_samples).to(image)
        if text.shape[-1] != image.shape[-1]:
            raise InputError(
                f'text embeddings are {text.shape[-1]}-d but align_neck.'
                f'out_channels is {image.shape[-1]}; they must match the '
                'encoder that made the store')
        kwargs = {}
        first = data_samples[0]
        labels = self.class_labels(data_samples)
        if labels is not None:
            kwargs['labels'] = labels.to(image.device)
        if self.mix_text_targets and 'mix_weights' in first:
            kwargs['mix'] = torch.stack(
                [s.mix_weights for s in data_samples]).to(image)
        if 'align_weight' in first:
            kwargs['weights'] = torch.stack(
                [s.align_weight for s in data_samples]).to(image).view(-1)
        loss = self.align_loss(image, text, **kwargs)
        logs = {'loss_align': loss,
                'align_acc': retrieval_accuracy(
                    image.detach(), text, kwargs.get('labels'),
                    getattr(self.align_loss, 'positives', 'instance'))}
        if getattr(self.align_loss, 'learnable_temperature', False):
            logs['align_logit_scale'] = image.new_tensor(
                self.align_loss.logit_scale())
        return logs

    def class_labels(
            self, data_samples: List[DataSample]) -> Optional[torch.Tensor]:
        """(B,) class indices, one per sample, or None when the samples have
        none (or several) and the loss does not need them.

        Raises:
            ValueError: a sample has other than one ``gt_label`` and the loss
                takes class positives (``positives='label'``): with several
                classes per image "the same class" is not defined.
        """
        if 'gt_label' not in data_samples[0]:
            return None
        counts = [s.gt_label.numel() for s in data_samples]
        if all(n == 1 for n in counts):
            return torch.cat([s.gt_label.view(1) for s in data_samples])
        if getattr(self.align_loss, 'positives', 'instance') == 'label':
            i = next(i for i, n in enumerate(counts) if n != 1)
            raise InputError(
                f"positives='label' needs one class per sample, but sample "
                f'{i} of the batch has {counts[i]} gt_label entries (a '
                "multi-label dataset): use positives='instance' or 'text'")
        return None

    def text_targets(self, data_samples: List[DataSample]) -> torch.Tensor:
        """Stack the samples' text embeddings (or encode their raw text)."""
        first = data_samples[0]
        if 'text_embedding' in first:
            return torch.stack([s.text_embedding for s in data_samples])
        if 'text' in first and self.teacher is not None:
            return self.teacher([s.text for s in data_samples])
        raise KeyError(
            'the training samples carry no `text_embedding` (or `text` with a '
            'teacher): wrap the train dataset in DescriptionDataset, e.g. '
            "dataset=dict(type='DescriptionDataset', dataset=..., "
            "store='path/to/store')")
