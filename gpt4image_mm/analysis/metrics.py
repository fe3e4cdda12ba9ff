"""Figures of a description set from :class:`RecordStats` (text side).

Every figure is a plain number in a flat dict, so the report and
``--compare`` render any set, and tests read the same numbers.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from gpt4image_mm.analysis.records import (
    CONTENTLESS,
    OTHER_CLASS,
    OWN_CLASS,
    REDO,
    REFUSAL,
    RecordStats,
)

# CLIP's text tower (the paper's encoder) cuts every text at 77 tokens
# (CLIP's context_length, Radford et al. 2021).
CLIP_CONTEXT = 77


def first_per_key(stats: RecordStats) -> np.ndarray:
    """Mask of the records that count, one per key: the key's latest
    repair answer (``"redo": true``), else its first success (writers emit
    one success per key otherwise; a repeat of it is the same
    description)."""
    n = len(stats.key_hash)
    _, first = np.unique(stats.key_hash, return_index=True)
    eligible = np.zeros(n, bool)
    eligible[first] = True
    if len(stats.flags):
        eligible |= (stats.flags & REDO).astype(bool)
    latest_first = np.flatnonzero(eligible)[::-1]
    _, last = np.unique(stats.key_hash[latest_first], return_index=True)
    keep = np.zeros(n, bool)
    keep[latest_first[last]] = True
    return keep


def _percentiles(values: np.ndarray, prefix: str) -> Dict[str, float]:
    if not len(values):
        return {}
    p5, med, p95 = np.percentile(values, [5, 50, 95])
    return {f'{prefix}_p5': float(p5), f'{prefix}_median': float(med),
            f'{prefix}_p95': float(p95), f'{prefix}_mean': float(values.mean())}


def truncation(tokens: np.ndarray, limit: int, prefix: str
               ) -> Dict[str, float]:
    """How many texts a ``limit``-token encoder cuts and what it loses."""
    if not len(tokens):
        return {}
    over = tokens > limit
    lost = np.clip(tokens - limit, 0, None)
    return {f'{prefix}_truncated': int(over.sum()),
            f'{prefix}_truncated_share': float(over.mean()),
            f'{prefix}_tokens_lost_share': float(lost.sum() / tokens.sum()),
            f'{prefix}_lost_per_cut_text': float(lost[over].mean())
            if over.any() else 0.0}


def text_metrics(stats: RecordStats, max_length: Optional[int] = None
                 ) -> Dict[str, Any]:
    """Counts, lengths, truncation and class naming of one set."""
    keep = first_per_key(stats)
    n = int(keep.sum())
    failed = np.setdiff1d(np.unique(stats.failed_key_hash), stats.key_hash)
    flags = stats.flags[keep]
    known = stats.label[keep] >= 0
    out: Dict[str, Any] = {
        'lines': stats.lines, 'failure_records': stats.failure_records,
        'descriptions': n, 'repeated_keys': int(len(keep) - n),
        'failures': int(len(failed)),
        'contentless': int((flags & CONTENTLESS).astype(bool).sum()),
        'refusals': int((flags & REFUSAL).astype(bool).sum()),
        'exact_duplicates': int(n - len(np.unique(stats.text_hash[keep]))),
        'labelled': int(known.sum())}
    out.update(_percentiles(stats.words[keep], 'words'))
    if stats.tokens is not None:
        tokens = stats.tokens[keep]
        out.update(_percentiles(tokens, 'tokens'))
        out.update(truncation(tokens, CLIP_CONTEXT, 'clip77'))
        if max_length:
            out['encoder_max_length'] = int(max_length)
            out.update(truncation(tokens, max_length, 'encoder'))
    if known.any():
        named = flags[known]
        out['names_own_class_share'] = float(
            (named & OWN_CLASS).astype(bool).mean())
        out['names_other_class_share'] = float(
            (named & OTHER_CLASS).astype(bool).mean())
        out['names_other_class'] = int((named & OTHER_CLASS).astype(bool).sum())
        out['names_only_other_class'] = int(
            ((named & (OTHER_CLASS | OWN_CLASS)) == OTHER_CLASS).sum())
    return out
