"""Stage 2 of GPT4Image: descriptions -> frozen text encoder -> unit vectors.

``encoders`` is the one home of encoding (shared by the offline store writer
and the online :class:`~gpt4image_mm.models.teacher.TextEmbeddingTeacher`);
``embed`` writes, resumes, shards and merges stores; ``importers`` and
``map_import`` turn other description sources into descriptions JSONL.
Import from the module you need: ``import-map`` imports no torch, so this
package re-exports nothing.
"""
