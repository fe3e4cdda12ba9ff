"""The plugin's own registries, for parts mmpretrain has no registry for.

Models, datasets and transforms register into mmpretrain's registries (so
configs find them under ``default_scope='mmpretrain'``). Two kinds of parts
are this plugin's own and live here:

* ``TEXT_ENCODERS``: frozen text encoders, looked up by
  :func:`gpt4image_mm.embedding.build_text_encoder` from an encoder spec
  (``tools/embed.py --encoder`` and ``TextEmbeddingTeacher`` both go
  through it);
* ``ALIGN_LOSS_MODES``: the modes of ``ContrastiveAlignLoss`` (``'clip'``,
  ``'ctr'``, ``'cosine'``): functions ``mode(loss, batch) -> Tensor``.

A user adds one by registering it from their own module and importing that
module (``custom_imports`` in a config); see docs/extending.md.
"""
from mmengine.registry import Registry

TEXT_ENCODERS = Registry('text encoder', scope='gpt4image_mm',
                         locations=['gpt4image_mm.embedding.encoders'])
ALIGN_LOSS_MODES = Registry('alignment loss mode', scope='gpt4image_mm',
                            locations=['gpt4image_mm.models.loss'])
