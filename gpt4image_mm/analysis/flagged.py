"""The keys an analysis flags, for a repair pass (``caption.py --redo-keys``).

:func:`flag_records` marks, from the compact arrays of one scan, the
records worth asking again: failures, refusals, empty texts, texts the
encoder cuts, texts that name another class, and exact duplicates (every
repeat of a text after its first). :func:`write_flagged_keys` then streams
the file a second time to turn those marks into key strings (and a few
examples per reason for the report): no key is held in memory during the
scan, so ImageNet-sized files stay cheap.

A repair pass is paid per key, so "another class" is queued only when the
evidence agrees: the text names another class and not its own (word forms
counted), and, with a store, its embedding lies nearer that class's
centroid than its own. Class names are everyday words in many datasets
(textures: a ``banded`` cloth is "woven"), so a text that names its own
class too, or whose embedding stays with its own class, is reported as a
mention and not asked again.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from gpt4image_mm.analysis.metrics import first_per_key
from gpt4image_mm.analysis.records import (
    CONTENTLESS,
    OTHER_CLASS,
    OWN_CLASS,
    REFUSAL,
    ClassNames,
    RecordStats,
    stable_hash,
)
from gpt4image_mm.utils.descriptions import iter_records
from gpt4image_mm.utils.keys import write_key_file

FLAGGED_KEYS = 'flagged_keys.txt'
EXAMPLES = 3  # records shown per reason in the report
EXCERPT = 160  # characters of a text shown in an example

# What each reason means, for the report (queued, then mentions).
REASONS = {
    'failure': "the key's latest record is a failure",
    'refusal': 'the model declined to describe',
    'empty': 'no letter or digit',
    'cut_by_encoder': "longer than the encoder's token limit",
    'other_class': 'names another class, not its own'
                   ' (and, with a store, lies nearer that class)',
    'exact_duplicate': 'repeats an earlier text',
}
MENTIONS = {
    'other_and_own': 'names another class and its own',
    'other_nearer_own': 'names only another class, but its embedding lies '
                        'nearer its own class',
}


class Flags:
    """Which success records (by scan order) and failed keys are flagged,
    the mask of each reason and of each mention, and their counts;
    ``examples`` is filled by :func:`write_flagged_keys`."""

    def __init__(self, records: np.ndarray, failed: np.ndarray,
                 reasons: Dict[str, np.ndarray],
                 mentions: Dict[str, np.ndarray]):
        self.records, self.failed = records, failed
        self.reasons, self.mentions = reasons, mentions
        self.counts = {'failure': int(len(failed)),
                       **{k: int(v.sum()) for k, v in reasons.items()},
                       'keys': int(records.sum()) + int(len(failed))}
        self.mention_counts = {k: int(v.sum()) for k, v in mentions.items()}
        self.examples: Dict[str, List[Dict[str, Any]]] = {}


def other_class_queued(stats: RecordStats, keep: np.ndarray,
                       nearer: Optional[np.ndarray]) -> np.ndarray:
    """Records naming another class and not their own; with ``nearer``
    (one bool per row of ``stats.other_named``: the embedding lies nearer
    that class), only those nearer at least one class they name."""
    named = stats.flags & (OTHER_CLASS | OWN_CLASS)
    only_other = keep & (named == OTHER_CLASS)
    if nearer is None:
        return only_other
    agreed = np.zeros(len(keep), bool)
    agreed[stats.other_named[nearer, 0]] = True
    return only_other & agreed


def flag_records(stats: RecordStats, max_length: Optional[int],
                 nearer: Optional[np.ndarray] = None) -> Flags:
    """Mark the counted records that a repair pass should ask again;
    ``nearer``: the store's evidence for each named other class (see
    :func:`other_class_queued`), None without a store."""
    keep = first_per_key(stats)
    n = len(keep)
    named = stats.flags & (OTHER_CLASS | OWN_CLASS)
    reasons = {
        'refusal': keep & (stats.flags & REFUSAL).astype(bool),
        'empty': keep & (stats.flags & CONTENTLESS).astype(bool),
        'other_class': other_class_queued(stats, keep, nearer),
    }
    mentions = {'other_and_own': keep & (named == (OTHER_CLASS | OWN_CLASS))}
    if nearer is not None:
        mentions['other_nearer_own'] = keep & (named == OTHER_CLASS) \
            & ~reasons['other_class']
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
    return Flags(records, failed, reasons, mentions)


def _example(flags: Flags, reason: str, key: str, text: str,
             classes: Optional[ClassNames]) -> None:
    shown = flags.examples.setdefault(reason, [])
    if len(shown) >= EXAMPLES:
        return
    ex: Dict[str, Any] = {'key': key, 'text': text[:EXCERPT]
                          + ('...' if len(text) > EXCERPT else '')}
    if classes is not None and reason in ('other_class', *MENTIONS):
        ex['names'] = sorted(classes.names[c] for c in classes.found(text))
    shown.append(ex)


def _flagged_keys(path: str, flags: Flags,
                  classes: Optional[ClassNames]) -> Iterator[str]:
    """The flagged keys in file order (second streaming pass; the success
    records come in the same order as in the scan); collects examples of
    each reason and mention on the way."""
    failed, written = set(flags.failed.tolist()), set()
    marks = {**flags.reasons, **flags.mentions}
    marked = np.zeros(len(flags.records), bool)
    for mask in marks.values():
        marked |= mask
    i = 0
    for _, rec in iter_records(path):
        key = rec['key']
        if 'error' in rec:
            h = stable_hash(key)
            if h in failed and h not in written:
                written.add(h)
                _example(flags, 'failure', key, str(rec['error']), classes)
                yield key
            continue
        if marked[i]:
            for reason, mask in marks.items():
                if mask[i]:
                    _example(flags, reason, key, rec['text'], classes)
        if flags.records[i]:
            yield key
        i += 1


def write_flagged_keys(path: str, flags: Flags, out: str,
                       classes: Optional[ClassNames] = None) -> int:
    """Write the flagged keys of ``path`` to ``out``, one per line, and
    fill ``flags.examples``."""
    return write_key_file(out, _flagged_keys(path, flags, classes))
