"""The frozen text teacher: descriptions -> unit vectors, on the fly.

Online mode of GPT4Image (small datasets, prompt studies): instead of a
precomputed store, the classifier hands the batch's raw descriptions to this
module. It encodes through the same :mod:`gpt4image_mm.embedding.encoders`
as ``tools/embed.py``, so online and offline targets are the same vectors.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import torch
from mmpretrain.registry import MODELS

from gpt4image_mm.embedding.encoders import TextEncoder, build_text_encoder
from gpt4image_mm.utils.devices import resolve_device


@MODELS.register_module()
class TextEmbeddingTeacher(torch.nn.Module):
    """A frozen text encoder as an ``nn.Module``: ``forward(texts)`` -> ``B x D``
    float32, L2-normalised, computed without grad on the module's device.

    The encoder's weights are deliberately *not* registered as parameters:
    they never reach the optimizer, DDP's gradient buckets, EMA averaging or
    training checkpoints (keys under the teacher's prefix in old checkpoints
    are ignored on load). ``.to()/.cuda()`` still move them.

    Args:
        encoder (str): A spec for :func:`build_text_encoder`, looked up in
            the ``TEXT_ENCODERS`` registry: a local model directory (HF CLIP
            or sentence-transformers/HF encoder), ``openai:<model>``,
            ``open_clip:<arch>/<pretrained>``, ``<kind>:...`` of an encoder
            a plugin registered (``custom_imports``).
        pooling (str, optional): Override the pooling of HF encoders
            (``mean``/``cls``/...). Defaults to None (the model's own).
        max_length (int, optional): Override the token limit. Defaults to
            None (the model's own).
        dtype (str): Compute dtype: ``float32``, ``float16``, ``bfloat16``,
            or ``auto`` (:func:`gpt4image_mm.utils.devices.resolve_dtype`'s rule
            for ``device``). Defaults to ``'float32'``.
        api_base (str, optional): Base URL of an embeddings endpoint.
            Defaults to None.
        api_key_env (str, optional): Name of the variable holding that
            endpoint's key. Defaults to None.
        dimensions (int, optional): Output width an embeddings API is asked
            for. Defaults to None.
        chunk_size (int): Texts per forward pass (bounds the memory of big
            batches). Defaults to 256.
        device (str, optional): Where the encoder is built: ``'auto'`` is
            :func:`gpt4image_mm.utils.devices.resolve_device`'s answer, the device
            MMEngine's runner moves the model to, so the weights are not
            loaded on the CPU first and ``dtype='auto'`` sees the real
            device; ``.to()`` moves the teacher later as any module.
            Defaults to ``'auto'``.
        **encoder_options: Further options the chosen encoder declares
            (a plugin encoder's own ones).
    """

    def __init__(self, encoder: str, pooling: Optional[str] = None,
                 max_length: Optional[int] = None, dtype: str = 'float32',
                 api_base: Optional[str] = None,
                 api_key_env: Optional[str] = None,
                 dimensions: Optional[int] = None, chunk_size: int = 256,
                 device: Optional[str] = 'auto', **encoder_options: Any):
        super().__init__()
        self.spec = encoder
        self.chunk_size = int(chunk_size)
        device = resolve_device(device)
        self.encoder: TextEncoder = build_text_encoder(
            encoder, device=device, dtype=dtype, pooling=pooling,
            max_length=max_length, api_base=api_base,
            api_key_env=api_key_env, dimensions=dimensions,
            **encoder_options)
        for mod in self.encoder.modules():
            mod.eval().requires_grad_(False)
        # a non-persistent probe tells the device even for API encoders
        self.register_buffer('_device_probe', torch.zeros(0, device=device),
                             persistent=False)
        self.training = False

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def truncated(self) -> Optional[int]:
        """Texts cut to the encoder's token limit so far."""
        return self.encoder.truncated

    def train(self, mode: bool = True) -> TextEmbeddingTeacher:
        """Stays in eval mode: a frozen teacher has no training behaviour
        (no dropout noise in the targets)."""
        return super().train(False)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> TextEmbeddingTeacher:
        super()._apply(fn, *args, **kwargs)
        for mod in self.encoder.modules():
            mod._apply(fn, *args, **kwargs)
        return self

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str,
                              local_metadata: Dict[str, Any], strict: bool,
                              missing_keys: List[str],
                              unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        # Checkpoints that stored the frozen weights still load.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            del state_dict[key]

    def __deepcopy__(self, memo: Dict[int, Any]) -> TextEmbeddingTeacher:
        """Copies (e.g. an EMA model) share the frozen encoder."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = value if key == 'encoder' else copy.deepcopy(
                value, memo)
        return new

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        device = self._device_probe.device
        outs = []
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            for a in range(0, len(texts), self.chunk_size):
                vec = self.encoder.encode(list(texts[a:a + self.chunk_size]))
                outs.append(vec.to(device=device, dtype=torch.float32))
        if not outs:
            return torch.zeros(0, self.dim, device=device)
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return f'encoder={self.spec!r}, dim={self.dim}'
