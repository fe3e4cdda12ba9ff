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
        init_std: std of the truncated-normal init of the first and last
            Linear weights (biases keep PyTorch's default, as officially).
            ``'official'`` (default): D^-0.5 for ``'mlp_bn'``/``'linear'``
            (official CNN head, resnet/utils.py:120-125, written there as
            1024**-0.5 for its 1024-d CLIP RN50 targets) and 0.02 for
            ``'mlp'`` (official ViT head, deit/models.py:37-38); a number sets
            the std; ``None`` keeps PyTorch's default Linear init. An
            ``init_cfg`` replaces all of this.
    """

    KINDS = ('mlp_bn', 'mlp', 'linear')

    def __init__(self, in_channels: int, out_channels: int,
                 hidden_channels: Optional[int] = None, kind: str = 'mlp_bn',
                 init_std: Union[str, float, None] = 'official',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if kind not in self.KINDS:
            raise ValueError(f'AlignmentNeck kind must be one of {self.KINDS}, '
                             f'got {kind!r}')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.init_std = self._resolve_init_std(init_std, kind, out_channels)
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

    @staticmethod
    def _resolve_init_std(init_std: Union[str, float, None], kind: str,
                          out_channels: int) -> Optional[float]:
        if init_std == 'official':
            return 0.02 if kind == 'mlp' else out_channels ** -0.5
        if init_std is None or isinstance(init_std, (int, float)):
            return init_std
        raise ValueError("AlignmentNeck init_std must be 'official', a number "
                         f'or None, got {init_std!r}')

    def init_weights(self) -> None:
        """Truncated-normal init of the outer Linear weights (see init_std).

        Runs after a parent's ``init_cfg`` (e.g. DeiT's TruncNormal on every
        Linear), so the head gets its own init whatever the backbone's."""
        super().init_weights()
        if self.init_cfg is not None or self.init_std is None:
            return
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        for layer in {id(x): x for x in (linears[0], linears[-1])}.values():
            # +-2 absolute bounds, as timm's trunc_normal_ used officially
            nn.init.trunc_normal_(layer.weight, std=self.init_std,
                                  a=-2.0, b=2.0)

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
