"""Captioning: the first stage of GPT4Image (see docs/captioning.md).

``caption(out, ...)`` describes a dataset, an image folder or a class list
into a descriptions JSONL, resumably; ``merge`` joins shard outputs. The
backends are the classes registered in
:data:`gpt4image_mm.registry.CAPTION_BACKENDS` (docs/extending.md).
"""
from .base import (
    Answer,
    Backend,
    CaptionBackend,
    CaptionError,
    CaptionOptions,
    FatalError,
    Request,
    RunControl,
)
from .cli import build_plan, caption, configure_merge_parser, configure_parser
from .merge import merge
from .runner import Summary, caption_async, caption_plan

__all__ = ['caption', 'caption_async', 'caption_plan', 'build_plan', 'merge',
           'configure_parser', 'configure_merge_parser', 'Summary',
           'CaptionBackend', 'Backend', 'CaptionOptions', 'RunControl',
           'Request', 'Answer', 'CaptionError', 'FatalError']
