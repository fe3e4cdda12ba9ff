"""AlignmentNeck takes mmpretrain NonLinearNeck's argument names; the old
names still build the same head (same checkpoint keys) with a warning, and no
config uses them."""
import warnings

import pytest
import torch
from conftest import ROOT
from mmengine.config import Config

from gpt4image_mm.models import AlignmentNeck

# deprecated kind -> the same head in NonLinearNeck-style names
EQUIVALENT = {
    'mlp_bn': dict(norm_cfg=dict(type='BN1d'), with_bias=False),
    'mlp': dict(norm_cfg=None, with_bias=True),
    'linear': dict(num_layers=1),
}


@pytest.mark.parametrize('kind', sorted(EQUIVALENT))
def test_old_kind_warns_and_builds_the_same_head(kind):
    with pytest.warns(FutureWarning, match=f"kind='{kind}'.* deprecated"):
        old = AlignmentNeck(32, 8, kind=kind)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        new = AlignmentNeck(32, 8, **EQUIVALENT[kind])
    assert str(old) == str(new) and old.init_std == new.init_std
    assert {k: v.shape for k, v in old.state_dict().items()} == \
        {k: v.shape for k, v in new.state_dict().items()}
    new.load_state_dict(old.state_dict(), strict=True)  # old checkpoints
    x = torch.randn(4, 32)
    torch.testing.assert_close(old.eval()(x), new.eval()(x))


def test_hidden_channels_is_hid_channels():
    with pytest.warns(FutureWarning, match='hidden_channels.*hid_channels'):
        old = AlignmentNeck(32, 8, hidden_channels=12)
    assert old.layers[0].out_features == 12
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
    with pytest.raises(ValueError, match='kind must be one of'):
        AlignmentNeck(32, 8, kind='deep')


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
            assert not {'kind', 'hidden_channels'} & set(neck), (path, neck)
            args = {k: v for k, v in neck.items() if k != 'type'}
            with warnings.catch_warnings():
                warnings.simplefilter('error', FutureWarning)
                AlignmentNeck(**dict(args, in_channels=8))
