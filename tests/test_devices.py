"""gpt4image_mm/utils/devices.py: one answer for device and dtype ``auto``."""
import pytest
import torch

from gpt4image_mm.utils.devices import resolve_device, resolve_dtype


def test_device_auto_follows_cuda_and_names_pass_through():
    want = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert resolve_device('auto') == resolve_device(None) == want
    assert resolve_device('cuda:1') == 'cuda:1'


def test_dtype_auto_is_fp32_on_cpu_and_aliases_resolve():
    assert resolve_dtype('auto', 'cpu') is torch.float32
    assert resolve_dtype('bf16', 'cpu') is torch.bfloat16
    assert resolve_dtype('fp16', 'cuda') is torch.float16
    assert resolve_dtype('float32', 'cuda') is torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_dtype_auto_on_cuda_is_bf16_where_supported():
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert resolve_dtype('auto', 'cuda') is want


def test_unknown_dtype_names_the_choices():
    with pytest.raises(ValueError, match=r"dtype 'half': one of auto, "
                       r'float32, fp32'):
        resolve_dtype('half', 'cpu')


def test_local_caption_backend_takes_the_same_aliases():
    """The transformers caption backend had its own table without the
    ``bf16``/``fp16`` aliases that embed.py accepts."""
    from gpt4image_mm.captioning.local_hf import _LocalBase  # the shared init
    be = _LocalBase('some/model', device='cpu', dtype='bf16')
    assert be.torch_dtype is torch.bfloat16
    assert _LocalBase('m', device='cpu').torch_dtype is torch.float32


@pytest.mark.parametrize('device', ['cpu'] + (['cuda'] if
                                              torch.cuda.is_available()
                                              else []))
def test_text_encoders_follow_the_same_auto_rule(device):
    """embedding/encoders.py had its own table, where ``auto`` on a GPU was
    fp16 while the caption backend chose bf16."""
    from gpt4image_mm.embedding.encoders import build_text_encoder
    from gpt4image_mm.utils.assets import minilm_dir
    enc = build_text_encoder(minilm_dir(), device=device, dtype='auto')
    weight = next(enc.model.parameters())
    assert weight.dtype is resolve_dtype('auto', device)
    assert weight.device.type == device
    with pytest.raises(ValueError, match=r"dtype 'half': one of auto"):
        build_text_encoder(minilm_dir(), device='cpu', dtype='half')


def test_text_encoder_device_auto_is_resolved_once():
    """``device='auto'`` reached ``model.to('auto')`` (an error)."""
    from gpt4image_mm.embedding.encoders import build_text_encoder
    from gpt4image_mm.utils.assets import minilm_dir
    enc = build_text_encoder(minilm_dir(), device='auto')
    assert enc.device.type == torch.device(resolve_device('auto')).type
