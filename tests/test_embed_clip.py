"""CLIP text towers: a tiny randomly initialised CLIP, saved and loaded back
through the same code path as a user's checkpoint."""
import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_clip

from gpt4image_mm.datasets.store import EmbeddingStore
from gpt4image_mm.embedding.embed import embed_descriptions
from gpt4image_mm.embedding.encoders import (
    CLIPEncoder,
    EncoderError,
    build_text_encoder,
)


def _reference(model, tok, texts):
    batch = tok(texts, padding=True, truncation=True, max_length=77,
                return_tensors='pt')
    with torch.no_grad():
        if hasattr(model, 'get_text_features'):
            out = model.get_text_features(**batch)
            out = out if torch.is_tensor(out) else out.pooler_output
        else:
            out = model(**batch).text_embeds
    return torch.nn.functional.normalize(out, dim=-1)


TEXTS = ['a cat on a mat', 'dog', 'A red car parked near a tall tree.',
         'x' * 200]


@pytest.mark.parametrize('full', [True, False])
def test_clip_projected_pooled_output(tmp_path, full):
    model, tok = make_tiny_clip(tmp_path / 'clip', full=full)
    enc = build_text_encoder(str(tmp_path / 'clip'))
    assert isinstance(enc, CLIPEncoder) and enc.projected
    # a full CLIP's projection size lives in the top config: 24, not 512
    assert enc.dim == 24 and enc.max_length == 77
    vec = enc.encode(TEXTS)
    ref = _reference(model, tok, TEXTS)
    torch.testing.assert_close(vec, ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(vec.norm(dim=1), torch.ones(4))
    assert enc.truncated == 1  # only the 200-character text exceeds 77


def test_clip_rejects_pooling_override(tmp_path):
    make_tiny_clip(tmp_path / 'clip')
    with pytest.raises(EncoderError, match='pooling'):
        build_text_encoder(str(tmp_path / 'clip'), pooling='mean')


def test_clip_store_through_pipeline(tmp_path):
    model, tok = make_tiny_clip(tmp_path / 'clip')
    desc = tmp_path / 'd.jsonl'
    with open(desc, 'w') as f:
        for i, t in enumerate(TEXTS):
            f.write(json.dumps(dict(key=f'k{i}', text=t)) + '\n')
    res = embed_descriptions(str(desc), str(tmp_path / 'clip'),
                             str(tmp_path / 'store'), batch_size=3,
                             progress=False)
    assert res.truncated == 1 and res.dim == 24
    store = EmbeddingStore(str(tmp_path / 'store'))
    assert store.keys() == ['k0', 'k1', 'k2', 'k3']
    assert store.manifest['encoder_settings']['kind'] == 'clip'
    ref = _reference(model, tok, TEXTS).numpy()
    cos = (np.asarray(store.embeddings, np.float32) * ref).sum(1)
    assert cos.min() > 0.999
