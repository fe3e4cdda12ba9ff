"""Stage 2 of GPT4Image: descriptions -> frozen text encoder -> unit vectors.

``encoders`` is the one home of encoding (shared by the offline store writer
and the online :class:`~gpt4image_mm.models.teacher.TextEmbeddingTeacher`);
``embed`` writes, resumes, shards and merges stores; ``importers`` turns other
description sources into descriptions JSONL; ``assets`` unpacks the bundled
offline model.

The names below are imported on first use: ``gpt4image import-map`` and
``--help`` import this package's ``cli`` without torch or transformers.
"""
import importlib
from typing import Any

_HOMES = {'minilm_dir': 'assets',
          'EmbedResult': 'embed', 'embed_descriptions': 'embed',
          'load_description_texts': 'embed', 'merge_stores': 'embed',
          'EncoderError': 'encoders', 'TextEncoder': 'encoders',
          'build_text_encoder': 'encoders', 'read_st_layout': 'encoders'}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{_HOMES[name]}', __name__),
                    name)
    globals()[name] = value
    return value
