"""A ``ClsDataPreprocessor`` that records how Mixup/CutMix mixed the batch.

mmpretrain's batch augments mix images and one-hot scores but return neither
the permutation nor lambda, so the text targets of a mixed image would be
undefined. We append an identity block to the scores before augmenting: any
augment that mixes scores linearly (Mixup, CutMix, ResizeMix, ...) turns it
into the exact mixing matrix M (row i = how much of sample j image i holds),
which the alignment loss turns into soft contrastive targets.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from mmpretrain.models.utils.data_preprocessor import ClsDataPreprocessor
from mmpretrain.registry import MODELS


class _MixTracker:
    """Wraps a batch augment; keeps the mixing matrix of the last call."""

    def __init__(self, augment: Any):
        self.augment = augment
        self.last_mix: Optional[torch.Tensor] = None

    def __call__(self, inputs: torch.Tensor,
                 scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n, c = scores.shape
        eye = torch.eye(n, dtype=scores.dtype, device=scores.device)
        inputs, mixed = self.augment(inputs, torch.cat([scores, eye], dim=1))
        self.last_mix = mixed[:, c:]
        return inputs, mixed[:, :c]

    def pop(self) -> Optional[torch.Tensor]:
        mix, self.last_mix = self.last_mix, None
        return mix


@MODELS.register_module()
class TextAlignedDataPreprocessor(ClsDataPreprocessor):
    """``ClsDataPreprocessor`` + the ``mix_weights`` field on each sample.

    Mixup/CutMix mix images and labels; the alignment loss needs to know
    *which* samples each image mixes, to mix the text targets the same way.
    Each training sample gets ``mix_weights``, a (B,) row of the batch's
    row-stochastic mixing matrix.

    Args:
        **kwargs: As :class:`mmpretrain.models.ClsDataPreprocessor`.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if self.batch_augments is not None:
            self.batch_augments = _MixTracker(self.batch_augments)

    def forward(self, data: dict, training: bool = False) -> dict:
        out = super().forward(data, training)
        if isinstance(self.batch_augments, _MixTracker):
            mix = self.batch_augments.pop()
            if mix is not None and out.get('data_samples') is not None:
                for sample, row in zip(out['data_samples'], mix):
                    sample.set_field(row, 'mix_weights')
        return out
