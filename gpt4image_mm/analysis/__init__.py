"""Description-quality analysis (``tools/analyze_descriptions.py``).

``records`` streams a descriptions JSONL into compact per-record arrays,
``metrics`` turns them into figures, ``embeddings`` measures a store
(near-duplicates, class signal), ``report`` writes report.md and the PNGs,
``gpt4image_mm.cli.analyze`` is the tool. See docs/analysis.md.
"""
from gpt4image_mm.analysis.embeddings import class_signal, near_duplicates
from gpt4image_mm.analysis.metrics import text_metrics
from gpt4image_mm.analysis.records import ClassNames, is_refusal, scan_records

__all__ = ['class_signal',
           'near_duplicates', 'text_metrics', 'ClassNames', 'is_refusal',
           'scan_records']
