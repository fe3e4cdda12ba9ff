"""Text encoders are a registry: an encoder registered from THIS file (no
package change) embeds through the real tools/embed.py CLI and serves as a
config's online teacher, and both give the same vectors.

The CLI subprocess imports this module through the dotted spec
``test_encoder_registry.ToyHashEncoder:<salt>`` (tests/ on PYTHONPATH); the
config imports it through ``custom_imports`` and names it ``toy_hash:``."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from gpt4image_mm.embedding.encoders import (
    EncoderError,
    HFEncoder,
    TextEncoder,
    build_text_encoder,
)
from gpt4image_mm.registry import TEXT_ENCODERS

MODULE = os.path.splitext(os.path.basename(__file__))[0]


@TEXT_ENCODERS.register_module('toy_hash', force=True)
class ToyHashEncoder(TextEncoder):
    """Salted bag-of-characters counts, L2-normalised: deterministic, no
    weights, and different texts give different vectors."""

    kind = 'toy_hash'
    options = ('width',)  # its own option, declared

    def __init__(self, salt: str, width: int = 16):
        self.name, self.revision = f'toy_hash:{salt}', 'v1'
        self.salt, self.dim = salt, int(width)

    def run(self, prepared):
        vec = torch.zeros(len(prepared), self.dim)
        for row, text in enumerate(prepared):
            for ch in self.salt + text:
                vec[row, ord(ch) % self.dim] += 1
        return F.normalize(vec, dim=-1)


TEXTS = {'cat/0.png': 'A red cat.', 'cat/1.png': 'A red cat, sleeping.',
         'dog/0.png': 'A green dog.', 'dog/1.png': 'A green dog at play.',
         'ship/0.png': 'A blue ship.', 'ship/1.png': 'A blue ship at dusk.'}


def test_registry_picks_by_prefix_and_options():
    enc = build_text_encoder('toy_hash:abc', width=8)
    assert isinstance(enc, ToyHashEncoder) and enc.dim == 8
    # options of other encoders are not passed to it (tools/embed.py
    # hands every encoder the same set)
    assert build_text_encoder('toy_hash:abc', device='cpu',
                              request_size=3).dim == 16
    with pytest.raises(EncoderError, match=r"unknown text encoder option.*"
                       r"'widht'"):
        build_text_encoder('toy_hash:abc', widht=8)
    assert TEXT_ENCODERS.get('hf') is HFEncoder


def test_unknown_spec_names_the_registered_kinds(tmp_path):
    with pytest.raises(EncoderError, match=r"registered encoder kind .*"
                       r"'toy_hash'"):
        build_text_encoder('no_such_kind:x')
    with pytest.raises(EncoderError, match='not an importable TextEncoder'):
        build_text_encoder('json.JSONDecoder:x')


def _descriptions(tmp_path):
    desc = tmp_path / 'desc.jsonl'
    desc.write_text(''.join(json.dumps(dict(key=k, text=t)) + '\n'
                            for k, t in TEXTS.items()))
    return desc


def test_toy_encoder_through_tools_embed(tmp_path):
    from gpt4image_mm.datasets.store import EmbeddingStore, read_manifest
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.path.dirname(__file__),
         os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'embed.py'),
         str(_descriptions(tmp_path)), '--encoder',
         f'{MODULE}.ToyHashEncoder:salt', '--out', str(tmp_path / 'store'),
         '--device', 'cpu', '--store-dtype', 'float32', '--no-progress'],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    store = EmbeddingStore(str(tmp_path / 'store'))
    assert read_manifest(str(tmp_path / 'store'))['encoder'] == 'toy_hash:salt'
    expected = ToyHashEncoder('salt').encode([TEXTS[k] for k in store.keys()])
    np.testing.assert_allclose(np.asarray(store.embeddings),
                               expected.numpy(), atol=1e-7)


def test_toy_encoder_as_a_configs_teacher(tmp_path):
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg_file = tmp_path / 'online.py'
    cfg_file.write_text(
        f"custom_imports = dict(imports=['gpt4image_mm', '{MODULE}'], "
        'allow_failed_imports=False)\n'
        "model = dict(type='TextAlignedClassifier',\n"
        "    backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8,"
        ' base_channels=8),\n'
        "    neck=dict(type='GlobalAveragePooling'),\n"
        "    head=dict(type='LinearClsHead', num_classes=3, in_channels=64),\n"
        "    align_neck=dict(type='AlignmentNeck', out_channels=12),\n"
        "    align_loss=dict(type='ContrastiveAlignLoss'),\n"
        "    teacher=dict(type='TextEmbeddingTeacher',"
        " encoder='toy_hash:salt', width=12))\n")
    model = MODELS.build(Config.fromfile(str(cfg_file)).model)
    texts = list(TEXTS.values())
    assert isinstance(model.teacher.encoder, ToyHashEncoder)
    torch.testing.assert_close(
        model.teacher(texts), ToyHashEncoder('salt', width=12).encode(texts))


def test_builtin_kinds_claim_their_specs(tmp_path):
    from helpers import make_tiny_clip

    from gpt4image_mm.embedding.encoders import (
        CLIPEncoder,
        OpenAIEncoder,
        OpenCLIPEncoder,
        encoder_class,
    )
    from gpt4image_mm.utils.assets import minilm_dir
    make_tiny_clip(tmp_path / 'clip')
    clip_dir, minilm = str(tmp_path / 'clip'), minilm_dir()
    assert encoder_class(clip_dir, {}) == (CLIPEncoder, clip_dir)
    assert encoder_class(minilm, {}) == (HFEncoder, minilm)
    # a served model name with a colon (ollama's name:tag) stays whole
    assert encoder_class('nomic-embed-text:latest',
                         {'api_base': 'http://127.0.0.1:9'}) == \
        (OpenAIEncoder, 'nomic-embed-text:latest')
    assert encoder_class('org.model:v1', {'api_base': 'http://127.0.0.1:9'}) \
        == (OpenAIEncoder, 'org.model:v1')
    assert encoder_class('open_clip:RN50/openai', {}) == \
        (OpenCLIPEncoder, 'RN50/openai')
    assert isinstance(build_text_encoder(f'hf:{minilm}'), HFEncoder)
    with pytest.raises(EncoderError, match='not a CLIP checkpoint'):
        build_text_encoder(f'clip:{minilm}')
