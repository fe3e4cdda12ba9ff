"""The plugin's own registries, for parts mmpretrain has no registry for.

Models, datasets and transforms register into mmpretrain's registries (so
configs find them under ``default_scope='mmpretrain'``). Three kinds of parts
are this plugin's own and live here:

* ``TEXT_ENCODERS``: frozen text encoders, looked up by
  :func:`gpt4image_mm.embedding.build_text_encoder` from an encoder spec
  (``tools/embed.py --encoder`` and ``TextEmbeddingTeacher`` both go
  through it);
* ``ALIGN_LOSS_MODES``: the modes of ``ContrastiveAlignLoss`` (``'clip'``,
  ``'ctr'``, ``'cosine'``): functions ``mode(loss, batch) -> Tensor``;
* ``CAPTION_BACKENDS``: ``tools/caption.py --backend`` (``'openai'``,
  ``'openai-batch'``, ``'transformers'``): subclasses of
  :class:`gpt4image_mm.captioning.base.CaptionBackend`, which declare their
  own command-line options and build themselves from the parsed ones.

A user adds one by registering it from their own module and importing that
module (``custom_imports`` in a config, ``--custom-imports`` for
``tools/caption.py``); see docs/extending.md.
"""
from mmengine.registry import Registry

TEXT_ENCODERS = Registry('text encoder', scope='gpt4image_mm',
                         locations=['gpt4image_mm.embedding.encoders'])
ALIGN_LOSS_MODES = Registry('alignment loss mode', scope='gpt4image_mm',
                            locations=['gpt4image_mm.models.loss'])
CAPTION_BACKENDS = Registry(
    'caption backend', scope='gpt4image_mm',
    locations=['gpt4image_mm.captioning.openai_api',
               'gpt4image_mm.captioning.batch_api',
               'gpt4image_mm.captioning.local_hf'])
