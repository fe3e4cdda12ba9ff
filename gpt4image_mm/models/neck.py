"""The alignment neck: projects the classifier's feature into the text space.

Used only for the training loss and dropped at inference (zero deployment
cost); see ``tools/strip_align.py``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS

from gpt4image_mm.utils.errors import InputError

# the official CNN head's BatchNorm1d (never mutated: build_norm_layer copies)
_BN1D = dict(type='BN1d')


@MODELS.register_module()
class AlignmentNeck(BaseModule):
    """Projection head from a C-d pooled feature to the D-d text space.

    Arguments are named as mmpretrain's ``NonLinearNeck``'s. Structure:
    ``fc -> [norm] -> ReLU`` repeated ``num_layers - 1`` times, then a last
    ``fc`` to D. The defaults are the official CNN head, Linear(no bias) ->
    BN -> ReLU -> Linear (resnet/utils.py:91-100); the official ViT head is
    ``with_bias=True, norm_cfg=None`` (deit/utils.py:318-327);
    ``num_layers=1`` is the official ``proj_type='linear'`` head, one Linear
    without a bias (resnet/utils.py:111, deit/models.py:32).

    Args:
        in_channels (int): C, the width of the aligned feature (2048 for
            ResNet-50, 384 for DeiT-S).
        out_channels (int): D, the text-embedding width (1024 for CLIP RN50,
            384 for all-MiniLM-L6-v2).
        hid_channels (int, optional): Width of the hidden layers.
            Defaults to None: 2 * D, as officially.
        num_layers (int): Number of fc layers (>= 1). Defaults to 2.
        with_bias (bool): Bias in the hidden fc layers. Defaults to False.
        with_last_bias (bool, optional): Bias in the last fc layer.
            Defaults to None: as officially, a bias after hidden layers and
            none in a single Linear.
        norm_cfg (dict, optional): Norm layer after each hidden fc (mmcv
            ``build_norm_layer`` config, e.g. ``dict(type='SyncBN')``);
            None for none. Defaults to ``dict(type='BN1d')``.
        init_std (str | float, optional): Std of the truncated-normal init
            of the first and last Linear weights (biases keep PyTorch's
            default, as officially). ``'official'``: 0.02 for a multi-layer
            head without a norm (official ViT head, deit/models.py:37-38),
            else D^-0.5 (official CNN heads, resnet/utils.py:120-125, written
            there as 1024**-0.5 for its 1024-d CLIP RN50 targets; the
            official ViT *linear* head uses 0.02, deit/models.py:33: set
            ``init_std=0.02`` for it). A number sets the std; None keeps
            PyTorch's default Linear init. Defaults to ``'official'``.
        init_cfg (dict, optional): MMEngine init config; replaces all of the
            above init. Defaults to None.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 hid_channels: Optional[int] = None, num_layers: int = 2,
                 with_bias: bool = False,
                 with_last_bias: Optional[bool] = None,
                 norm_cfg: Optional[dict] = _BN1D,
                 init_std: Union[str, float, None] = 'official',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if num_layers < 1:
            raise InputError('AlignmentNeck num_layers must be >= 1, got '
                             f'{num_layers}')
        if with_last_bias is None:
            with_last_bias = num_layers > 1
        self.in_channels, self.out_channels = in_channels, out_channels
        self.init_std = self._resolve_init_std(
            init_std, num_layers > 1 and norm_cfg is None, out_channels)
        self.layers = _projection(in_channels, out_channels,
                                  hid_channels or 2 * out_channels,
                                  num_layers, with_bias, with_last_bias,
                                  norm_cfg)

    @staticmethod
    def _resolve_init_std(init_std: Union[str, float, None], vit_head: bool,
                          out_channels: int) -> Optional[float]:
        if init_std == 'official':
            return 0.02 if vit_head else out_channels ** -0.5
        if init_std is None or isinstance(init_std, (int, float)):
            return init_std
        raise InputError("AlignmentNeck init_std must be 'official', a number "
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
        """Project a (B, C) feature (or the last of several; a (B, C, H, W)
        map is averaged first) to (B, D)."""
        if isinstance(x, (tuple, list)):
            x = x[-1]
        if x.dim() == 4:  # a feature map: pool it as a classifier neck would
            x = x.mean(dim=(2, 3))
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise InputError(
                f'AlignmentNeck expects (B, {self.in_channels}) features but '
                f'got shape {tuple(x.shape)}; set align_neck.in_channels to '
                'the width of the aligned feature (the head\'s in_channels)')
        return self.layers(x)


def _projection(in_channels: int, out_channels: int, hid_channels: int,
                num_layers: int, with_bias: bool, with_last_bias: bool,
                norm_cfg: Optional[dict]) -> nn.Module:
    """``(fc -> [norm] -> ReLU) x (num_layers - 1) -> fc``; one layer is a
    bare Linear (module names as in earlier releases: checkpoints load)."""
    if num_layers == 1:
        return nn.Linear(in_channels, out_channels, bias=with_last_bias)
    layers = []
    width = in_channels
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(width, hid_channels, bias=with_bias))
        if norm_cfg is not None:
            layers.append(build_norm_layer(norm_cfg, hid_channels)[1])
        layers.append(nn.ReLU(inplace=True))
        width = hid_channels
    layers.append(nn.Linear(width, out_channels, bias=with_last_bias))
    return nn.Sequential(*layers)
