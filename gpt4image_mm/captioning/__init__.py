"""Captioning: the first stage of GPT4Image (see docs/captioning.md).

``caption(out, ...)`` describes a dataset, an image folder or a class list
into a descriptions JSONL, resumably; ``merge`` joins shard outputs.
"""
from .base import Answer, Backend, CaptionError, FatalError, Request
from .cli import build_plan, caption
from .merge import merge
from .runner import Summary, caption_async, caption_plan

__all__ = ['caption', 'caption_async', 'caption_plan', 'build_plan', 'merge',
           'Summary', 'Backend', 'Request', 'Answer', 'CaptionError',
           'FatalError']
