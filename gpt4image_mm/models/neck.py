"""The alignment neck: projects the classifier's feature into the text space.

Used only for the training loss and dropped at inference (zero deployment
cost); see ``tools/strip_align.py``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS


@MODELS.register_module()
class AlignmentNeck(BaseModule):
    """Projection head from a C-d pooled feature to the D-d text space.

    Args:
        in_channels: C, the width of the aligned feature (2048 for
            ResNet-50, 384 for DeiT-S).
        out_channels: D, the text-embedding width (1024 for CLIP RN50, 384
            for all-MiniLM-L6-v2).
        hidden_channels: width of the hidden layer; the official code uses
            2 * D.
        kind: ``'mlp_bn'`` (official CNN head: Linear(no bias) -> BN -> ReLU
            -> Linear), ``'mlp'`` (official ViT head: Linear -> ReLU ->
            Linear) or ``'linear'`` (one Linear).
    """

    KINDS = ('mlp_bn', 'mlp', 'linear')

    def __init__(self, in_channels: int, out_channels: int,
                 hidden_channels: Optional[int] = None, kind: str = 'mlp_bn',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if kind not in self.KINDS:
            raise ValueError(f'AlignmentNeck kind must be one of {self.KINDS}, '
                             f'got {kind!r}')
        self.in_channels, self.out_channels = in_channels, out_channels
        hidden = hidden_channels or 2 * out_channels
        if kind == 'linear':
            self.layers = nn.Linear(in_channels, out_channels)
        elif kind == 'mlp':
            self.layers = nn.Sequential(
                nn.Linear(in_channels, hidden), nn.ReLU(inplace=True),
                nn.Linear(hidden, out_channels))
        else:
            self.layers = nn.Sequential(
                nn.Linear(in_channels, hidden, bias=False),
                nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                nn.Linear(hidden, out_channels))

    def forward(
        self, x: Union[torch.Tensor, Sequence[torch.Tensor]]
    ) -> torch.Tensor:
        if isinstance(x, (tuple, list)):
            x = x[-1]
        if x.dim() == 4:  # a feature map: pool it as a classifier neck would
            x = x.mean(dim=(2, 3))
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'AlignmentNeck expects (B, {self.in_channels}) features but '
                f'got shape {tuple(x.shape)}; set align_neck.in_channels to '
                'the width of the aligned feature (the head\'s in_channels)')
        return self.layers(x)
