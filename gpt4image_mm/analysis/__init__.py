"""Description-quality analysis (``tools/analyze_descriptions.py``).

``records`` streams a descriptions JSONL into compact per-record arrays,
``metrics`` turns them into figures, ``embeddings`` measures a store
(near-duplicates, class signal), ``report`` writes report.md and the PNGs,
``cli`` is the tool. See docs/analysis.md.
"""
from .cli import analyse, main, write_report
from .embeddings import class_signal, near_duplicates
from .metrics import text_metrics
from .records import ClassNames, is_refusal, scan_records

__all__ = ['analyse', 'main', 'write_report', 'class_signal',
           'near_duplicates', 'text_metrics', 'ClassNames', 'is_refusal',
           'scan_records']
