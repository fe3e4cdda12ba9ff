"""Stage 2 of GPT4Image: descriptions -> frozen text encoder -> unit vectors.

``encoders`` is the one home of encoding (shared by the offline store writer
and the online :class:`~gpt4image_mm.models.teacher.TextEmbeddingTeacher`);
``embed`` writes, resumes, shards and merges stores; ``importers`` turns other
description sources into descriptions JSONL; ``assets`` unpacks the bundled
offline model.
"""
from .assets import minilm_dir
from .embed import EmbedResult, embed_descriptions, load_description_texts, merge_stores
from .encoders import EncoderError, TextEncoder, build_text_encoder, read_st_layout

__all__ = ['minilm_dir', 'EmbedResult', 'embed_descriptions',
           'load_description_texts', 'merge_stores', 'EncoderError',
           'TextEncoder', 'build_text_encoder', 'read_st_layout']
