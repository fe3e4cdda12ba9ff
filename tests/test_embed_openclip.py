"""open_clip text towers (optional extra): a tiny random open_clip model,
saved to a file and loaded back through ``open_clip:<arch>/<file>``."""
import json

import pytest
import torch

from gpt4image_mm.embedding.encoders import build_text_encoder

open_clip = pytest.importorskip('open_clip')

TINY = {'embed_dim': 16,
        'vision_cfg': {'image_size': 32, 'layers': 1, 'width': 32, 'head_width': 16,
                       'patch_size': 16},
        'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 32,
                     'heads': 2, 'layers': 1}}


def test_open_clip_text_tower(tmp_path):
    cfg = tmp_path / 'g4i-tiny-clip.json'
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(str(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model('g4i-tiny-clip').eval()
    weights = tmp_path / 'tiny.pt'
    torch.save(model.state_dict(), weights)
    enc = build_text_encoder(f'open_clip:g4i-tiny-clip/{weights}')
    assert enc.dim == 16 and enc.max_length == 77
    texts = ['a photo of a cat', 'word ' * 100]
    tok = open_clip.get_tokenizer('g4i-tiny-clip')
    with torch.no_grad():
        ref = torch.nn.functional.normalize(
            model.encode_text(tok(texts)), dim=-1)
    torch.testing.assert_close(enc.encode(texts), ref, atol=1e-5, rtol=1e-5)
    assert enc.truncated == 1
    assert enc.revision.startswith('sha256:')
