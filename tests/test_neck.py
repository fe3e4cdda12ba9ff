"""AlignmentNeck takes mmpretrain NonLinearNeck's argument names and builds
the official heads (resnet/utils.py, deit/models.py of the official code)."""
import warnings

import pytest
import torch
from conftest import ROOT
from mmengine.config import Config

from gpt4image_mm.models import AlignmentNeck


def _linears(neck):
    return [m for m in neck.modules() if isinstance(m, torch.nn.Linear)]


def test_official_heads():
    # proj_type='linear': one Linear, no bias (resnet/utils.py:111,
    # deit/models.py:32)
    linear = AlignmentNeck(32, 8, num_layers=1)
    assert isinstance(linear.layers, torch.nn.Linear)
    assert linear.layers.bias is None
    assert set(linear.state_dict()) == {'layers.weight'}
    # proj_type='mlp' with BN: Linear(no bias)-BN-ReLU-Linear(bias)
    # (resnet/utils.py:91-100)
    cnn = _linears(AlignmentNeck(32, 8))
    assert cnn[0].bias is None and cnn[-1].bias is not None
    # proj_type='mlp' without BN: both Linears with a bias
    # (deit/utils.py:318-327)
    vit = _linears(AlignmentNeck(32, 8, with_bias=True, norm_cfg=None))
    assert vit[0].bias is not None and vit[-1].bias is not None
    # a bias on the single Linear still on request
    assert AlignmentNeck(32, 8, num_layers=1,
                         with_last_bias=True).layers.bias is not None


def test_hid_channels_defaults_to_twice_d():
    assert AlignmentNeck(32, 8, hid_channels=12).layers[0].out_features == 12
    assert AlignmentNeck(32, 8).layers[0].out_features == 16  # 2 x D


def test_nonlinear_neck_style_options():
    neck = AlignmentNeck(32, 8, hid_channels=16, num_layers=3,
                         norm_cfg=dict(type='LN'), with_last_bias=False)
    linears = [m for m in neck.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == \
        [(32, 16), (16, 16), (16, 8)]
    assert linears[-1].bias is None and linears[0].bias is None
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in neck.modules()) == 2
    assert neck(torch.randn(3, 32)).shape == (3, 8)
    # official inits: 0.02 for the norm-free (ViT) head, D^-0.5 otherwise
    assert AlignmentNeck(32, 8, norm_cfg=None, with_bias=True).init_std == 0.02
    assert AlignmentNeck(32, 16).init_std == 0.25
    with pytest.raises(ValueError, match='num_layers must be >= 1'):
        AlignmentNeck(32, 8, num_layers=0)
    with pytest.raises(TypeError, match='kind'):  # no deprecated aliases
        AlignmentNeck(32, 8, kind='mlp')


def _config_necks(path):
    """The align_neck dicts a config file defines (model, or the _base_'s
    gpt4image_cnn / gpt4image_vit)."""
    cfg = Config.fromfile(str(path))
    parts = (cfg.get('model'), cfg.get('gpt4image_cnn'),
             cfg.get('gpt4image_vit'))
    return [p['align_neck'] for p in parts if p and 'align_neck' in p]


def test_configs_use_the_new_names():
    files = [p for p in sorted((ROOT / 'configs').rglob('*.py'))
             if 'align_neck' in p.read_text()]
    assert len(files) >= 3  # the _base_, Swin-T, the Fashion-MNIST demo
    for path in files:
        necks = _config_necks(path)
        assert necks, path
        for neck in necks:
            args = {k: v for k, v in neck.items() if k != 'type'}
            with warnings.catch_warnings():
                warnings.simplefilter('error')
                AlignmentNeck(**dict(args, in_channels=8))
