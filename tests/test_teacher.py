"""TextEmbeddingTeacher: frozen, normalised, registered, and equal to the
vectors tools/embed.py stores."""
import copy
import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_clip
from mmpretrain.registry import MODELS

from gpt4image_mm.datasets.store import EmbeddingStore
from gpt4image_mm.embedding.embed import embed_descriptions
from gpt4image_mm.models.teacher import TextEmbeddingTeacher
from gpt4image_mm.utils.assets import minilm_dir

TEXTS = ['A tabby cat sleeps on a sunny windowsill.',
         'A dog runs across a grassy field.', 'A cargo ship at dusk.']


@pytest.fixture
def clip_dir(tmp_path):
    make_tiny_clip(tmp_path / 'clip')
    return str(tmp_path / 'clip')


def test_registered_frozen_and_eval(clip_dir):
    teacher = MODELS.build(dict(type='TextEmbeddingTeacher',
                                encoder=clip_dir))
    assert isinstance(teacher, TextEmbeddingTeacher) and teacher.dim == 24
    weights = [p for m in teacher.encoder.modules() for p in m.parameters()]
    assert weights and not any(p.requires_grad for p in weights)
    # the frozen weights stay out of the optimizer and the checkpoints
    assert list(teacher.parameters()) == [] and teacher.state_dict() == {}
    teacher.train()
    assert not teacher.training
    assert not any(m.training for m in teacher.encoder.modules())
    x = torch.ones(1, requires_grad=True)
    vec = teacher(TEXTS) * x  # a graph around it, as in the loss
    assert vec.shape == (3, 24) and vec.dtype == torch.float32
    torch.testing.assert_close(vec.detach().norm(dim=1), torch.ones(3))
    assert teacher(TEXTS).grad_fn is None


def test_moves_copies_and_loads_old_checkpoints(clip_dir):
    holder = torch.nn.Module()
    holder.fc = torch.nn.Linear(2, 2)
    holder.teacher = TextEmbeddingTeacher(clip_dir)
    holder.to(torch.float64)  # _apply reaches the unregistered encoder
    assert next(holder.teacher.encoder.model.parameters()).dtype == \
        torch.float64
    assert holder.teacher(TEXTS).dtype == torch.float32  # targets stay fp32
    holder.to(torch.float32)
    state = dict(holder.state_dict())
    assert set(state) == {'fc.weight', 'fc.bias'}
    state['teacher.encoder.model.text_projection.weight'] = torch.zeros(1)
    holder.load_state_dict(state, strict=True)  # old keys ignored
    twin = copy.deepcopy(holder)  # e.g. the EMA model
    assert twin.teacher.encoder is holder.teacher.encoder
    assert twin.fc.weight is not holder.fc.weight
    torch.testing.assert_close(twin.teacher(TEXTS), holder.teacher(TEXTS))


def test_online_vectors_equal_the_store(tmp_path):
    model = minilm_dir()
    desc = tmp_path / 'd.jsonl'
    with open(desc, 'w') as f:
        for i, t in enumerate(TEXTS):
            f.write(json.dumps(dict(key=f'k{i}', text=t)) + '\n')
    teacher = TextEmbeddingTeacher(model, chunk_size=2)
    res = embed_descriptions(str(desc), teacher.encoder, str(tmp_path / 's'),
                             batch_size=2, store_dtype='float32',
                             progress=False)
    stored = np.asarray(EmbeddingStore(res.out).embeddings)
    online = teacher(TEXTS).numpy()
    np.testing.assert_allclose(online, stored, atol=2e-6)
    assert teacher.dim == 384 and teacher.truncated == 0


def test_built_on_the_resolved_device_with_its_auto_dtype(clip_dir):
    """The teacher built its encoder on a hard-coded CPU, so ``dtype='auto'``
    was always fp32 and the weights crossed to the GPU only later."""
    from gpt4image_mm.utils.devices import resolve_device, resolve_dtype
    device = resolve_device('auto')
    teacher = TextEmbeddingTeacher(clip_dir, dtype='auto')
    weight = next(teacher.encoder.model.parameters())
    assert weight.device.type == torch.device(device).type
    assert weight.dtype is resolve_dtype('auto', device)
    out = teacher(TEXTS)
    assert out.device.type == torch.device(device).type
    assert out.dtype == torch.float32  # targets stay fp32 whatever the dtype
    cpu = TextEmbeddingTeacher(clip_dir, device='cpu')
    assert next(cpu.encoder.model.parameters()).device.type == 'cpu'
    torch.testing.assert_close(cpu(TEXTS), out.cpu(), atol=2e-2, rtol=0)
