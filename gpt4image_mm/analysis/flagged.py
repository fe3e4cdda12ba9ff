"""The keys an analysis flags, for a repair pass (``caption.py --redo-keys``).

:func:`flag_records` marks, from the compact arrays of one scan, the
records worth asking again: failures, refusals, empty texts, texts the
encoder cuts, texts that name another class, and exact duplicates (every
repeat of a text after its first). :func:`write_flagged_keys` then streams
the file a second time to turn those marks into key strings: no key is
held in memory during the scan, so ImageNet-sized files stay cheap.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional

import numpy as np

from gpt4image_mm.analysis.metrics import first_per_key
from gpt4image_mm.analysis.records import (
    CONTENTLESS,
    OTHER_CLASS,
    REFUSAL,
    RecordStats,
    stable_hash,
)
from gpt4image_mm.utils.descriptions import iter_records
from gpt4image_mm.utils.keys import write_key_file

FLAGGED_KEYS = 'flagged_keys.txt'


class Flags:
    """Which success records (by scan order) and failed keys are flagged,
    how many of each reason and, per reason, which records (the page
    shows each record's reasons)."""

    def __init__(self, records: np.ndarray, failed: np.ndarray,
                 counts: Dict[str, int],
                 reasons: Optional[Dict[str, np.ndarray]] = None):
        self.records, self.failed, self.counts = records, failed, counts
        self.reasons = reasons or {}


def flag_records(stats: RecordStats, max_length: Optional[int]) -> Flags:
    """Mark the counted records that a repair pass should ask again."""
    keep = first_per_key(stats)
    n = len(keep)
    reasons = {
        'refusal': keep & (stats.flags & REFUSAL).astype(bool),
        'empty': keep & (stats.flags & CONTENTLESS).astype(bool),
        'other_class': keep & (stats.flags & OTHER_CLASS).astype(bool),
    }
    if stats.tokens is not None and max_length:
        reasons['cut_by_encoder'] = keep & (stats.tokens > max_length)
    kept = np.flatnonzero(keep)
    _, first = np.unique(stats.text_hash[kept], return_index=True)
    repeat = np.ones(len(kept), bool)
    repeat[first] = False
    dup = np.zeros(n, bool)
    dup[kept[repeat]] = True
    reasons['exact_duplicate'] = dup
    failed = np.setdiff1d(np.unique(stats.failed_key_hash), stats.key_hash)
    records = np.zeros(n, bool)
    for mask in reasons.values():
        records |= mask
    counts = {'failure': int(len(failed)),
              **{k: int(v.sum()) for k, v in reasons.items()}}
    counts['keys'] = int(records.sum()) + int(len(failed))
    return Flags(records, failed, counts, reasons)


def _flagged_keys(path: str, flags: Flags) -> Iterator[str]:
    """The flagged keys in file order (second streaming pass; the success
    records come in the same order as in the scan)."""
    failed, written = set(flags.failed.tolist()), set()
    i = 0
    for _, rec in iter_records(path):
        key = rec['key']
        if 'error' in rec:
            h = stable_hash(key)
            if h in failed and h not in written:
                written.add(h)
                yield key
            continue
        if flags.records[i]:
            yield key
        i += 1


def write_flagged_keys(path: str, flags: Flags, out: str) -> int:
    """Write the flagged keys of ``path`` to ``out``, one per line."""
    return write_key_file(out, _flagged_keys(path, flags))
