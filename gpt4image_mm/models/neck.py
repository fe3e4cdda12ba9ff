"""The alignment neck: projects the classifier's feature into the text space.

Used only for the training loss and dropped at inference (zero deployment
cost); see ``tools/strip_align.py``.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS

# the official CNN head's BatchNorm1d (never mutated: build_norm_layer copies)
_BN1D = dict(type='BN1d')
# The deprecated ``kind`` names of the official heads, as NonLinearNeck-style
# arguments (num_layers, norm_cfg, with_bias).
_KINDS = {
    'mlp_bn': dict(num_layers=2, norm_cfg=dict(type='BN1d'), with_bias=False),
    'mlp': dict(num_layers=2, norm_cfg=None, with_bias=True),
    'linear': dict(num_layers=1),
}


@MODELS.register_module()
class AlignmentNeck(BaseModule):
    """Projection head from a C-d pooled feature to the D-d text space.

    Arguments are named as mmpretrain's ``NonLinearNeck``'s. Structure:
    ``fc -> [norm] -> ReLU`` repeated ``num_layers - 1`` times, then a last
    ``fc`` to D (with a bias, as the official heads). The defaults are the
    official CNN head, Linear(no bias) -> BN -> ReLU -> Linear; the official
    ViT head is ``with_bias=True, norm_cfg=None``; ``num_layers=1`` is one
    Linear.

    Args:
        in_channels: C, the width of the aligned feature (2048 for
            ResNet-50, 384 for DeiT-S).
        out_channels: D, the text-embedding width (1024 for CLIP RN50, 384
            for all-MiniLM-L6-v2).
        hid_channels: width of the hidden layers; default 2 * D (official).
        num_layers: number of fc layers (>= 1).
        with_bias: bias in the hidden fc layers (not the last).
        with_last_bias: bias in the last fc layer.
        norm_cfg: norm layer after each hidden fc (mmcv ``build_norm_layer``
            config, e.g. ``dict(type='BN1d')``, ``dict(type='SyncBN')``);
            ``None`` for none.
        init_std: std of the truncated-normal init of the first and last
            Linear weights (biases keep PyTorch's default, as officially).
            ``'official'`` (default): 0.02 for a multi-layer head without a
            norm (official ViT head, deit/models.py:37-38), else D^-0.5
            (official CNN head, resnet/utils.py:120-125, written there as
            1024**-0.5 for its 1024-d CLIP RN50 targets); a number sets the
            std; ``None`` keeps PyTorch's default Linear init. An
            ``init_cfg`` replaces all of this.
        kind, hidden_channels: deprecated (one release) older names:
            ``kind='mlp_bn'|'mlp'|'linear'`` sets ``num_layers``,
            ``norm_cfg`` and ``with_bias`` as in ``_KINDS``;
            ``hidden_channels`` is ``hid_channels``.
    """

    KINDS = tuple(_KINDS)

    def __init__(self, in_channels: int, out_channels: int,
                 hid_channels: Optional[int] = None, num_layers: int = 2,
                 with_bias: bool = False, with_last_bias: bool = True,
                 norm_cfg: Optional[dict] = _BN1D,
                 init_std: Union[str, float, None] = 'official',
                 init_cfg: Optional[dict] = None,
                 kind: Optional[str] = None,
                 hidden_channels: Optional[int] = None):
        super().__init__(init_cfg=init_cfg)
        args = _renamed_arguments(dict(
            hid_channels=hid_channels, num_layers=num_layers,
            with_bias=with_bias, norm_cfg=norm_cfg), kind, hidden_channels)
        if args['num_layers'] < 1:
            raise ValueError('AlignmentNeck num_layers must be >= 1, got '
                             f"{args['num_layers']}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.init_std = self._resolve_init_std(
            init_std, args['num_layers'] > 1 and args['norm_cfg'] is None,
            out_channels)
        self.layers = _projection(in_channels, out_channels,
                                  args['hid_channels'] or 2 * out_channels,
                                  args['num_layers'], args['with_bias'],
                                  with_last_bias, args['norm_cfg'])

    @staticmethod
    def _resolve_init_std(init_std: Union[str, float, None], vit_head: bool,
                          out_channels: int) -> Optional[float]:
        if init_std == 'official':
            return 0.02 if vit_head else out_channels ** -0.5
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


def _renamed_arguments(args: dict, kind: Optional[str],
                       hidden_channels: Optional[int]) -> dict:
    """Map the deprecated ``kind``/``hidden_channels`` onto the
    NonLinearNeck-style names, with a warning (kept for one release)."""
    if hidden_channels is not None:
        warnings.warn('AlignmentNeck(hidden_channels=...) is deprecated; use '
                      'hid_channels (the name mmpretrain\'s NonLinearNeck '
                      'uses)', FutureWarning, stacklevel=3)
        args['hid_channels'] = args['hid_channels'] or hidden_channels
    if kind is not None:
        if kind not in _KINDS:
            raise ValueError(f'AlignmentNeck kind must be one of '
                             f'{tuple(_KINDS)}, got {kind!r}')
        use = ', '.join(f'{k}={v!r}' for k, v in _KINDS[kind].items())
        warnings.warn(f'AlignmentNeck(kind={kind!r}) is deprecated; use '
                      f'{use} (docs/configs.md)', FutureWarning, stacklevel=3)
        args.update(_KINDS[kind])
    return args


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
