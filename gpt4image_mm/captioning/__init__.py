"""Captioning: the first stage of GPT4Image (see docs/captioning.md).

``runner`` describes a dataset, an image folder or a class list into a
descriptions JSONL, resumably (``gpt4image caption``, and
:func:`gpt4image_mm.cli.caption.caption` from Python); ``merge`` joins shard
outputs. The backends are the classes registered in
:data:`gpt4image_mm.captioning.registry.CAPTION_BACKENDS` (docs/extending.md).
"""
from gpt4image_mm.captioning.base import (
    Answer,
    Backend,
    CaptionBackend,
    CaptionError,
    CaptionOptions,
    FatalError,
    Request,
    RunControl,
)
from gpt4image_mm.captioning.merge import merge
from gpt4image_mm.captioning.runner import Summary, caption_async, caption_plan

__all__ = ['caption_async', 'caption_plan', 'merge', 'Summary',
           'CaptionBackend', 'Backend', 'CaptionOptions', 'RunControl',
           'Request', 'Answer', 'CaptionError', 'FatalError']
