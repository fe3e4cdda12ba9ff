"""One streaming pass over a descriptions JSONL: the text-side measurements.

Why compact arrays: an ImageNet file has 1.28 M records; per-record Python
objects (a dict of keys, a list of texts) would take gigabytes. Each record
leaves a few fixed-size numbers here (key and text hashes, word and token
counts, class flags: ~30 bytes), so memory stays in the tens of MB and every
figure (percentiles, duplicates, latest record per key) is still exact.

The record rules are those of :mod:`gpt4image_mm.utils.descriptions`: records come
from its streaming reader :func:`~gpt4image_mm.utils.descriptions.iter_records`; a
key whose latest record is a failure is a failure (a later success
supersedes it); a key's repeated success is counted once, and a repair
answer (``"redo": true``) replaces the key's earlier success.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from gpt4image_mm.analysis.wordforms import forms_pattern, stem
from gpt4image_mm.utils.class_names import id_like_names
from gpt4image_mm.utils.descriptions import iter_records, supersedes
from gpt4image_mm.utils.keys import CLASS_PREFIX, base_key

# Phrases with which chat models decline or fail to describe an image
# (collected from GPT-4/LLaVA/MiniGPT-4/Qwen-VL refusals); matched at the
# start of the text or of a sentence, case-insensitively.
REFUSAL_PATTERNS = (
    r"i'?m sorry", r'i am sorry', r'i apologi[sz]e', r'sorry, (?:but )?i',
    r"i (?:can ?not|can't|am unable to|'m unable to|do not|don't) "
    r'(?:see|view|describe|provide|help|access|identify|assist|determine)',
    r'as an ai', r'unfortunately,? i', r'there is no image',
    r"i(?:'m| am) not able to")
_REFUSAL = re.compile(r'(?:^|[.!?]\s+)(?:' + '|'.join(REFUSAL_PATTERNS) + ')',
                      re.IGNORECASE)
# A refusal contains one of these; texts without any skip the regex (most).
_REFUSAL_CUES = ('sorry', 'apologi', 'unable', 'cannot', "can't", 'can not',
                 'as an ai', "don't", 'do not', 'unfortunately', 'not able',
                 'no image')
_CHUNK = 2048  # texts per tokenizer call: large enough to amortise its cost


def stable_hash(text: str) -> int:
    """64-bit content hash (same across runs and machines, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(
        text.encode('utf-8'), digest_size=8).digest(), 'little')


def is_refusal(text: str) -> bool:
    """Whether the model declined instead of describing."""
    low = text.lower()
    if not any(cue in low for cue in _REFUSAL_CUES):
        return False
    return _REFUSAL.search(text.strip()) is not None


def is_contentless(text: str) -> bool:
    """Empty in substance: no letter or digit (``"..."``, ``"-"``). The
    reader already refuses blank texts; these pass it and carry nothing."""
    return not any(ch.isalnum() for ch in text)


_JOINER = re.compile(r'[\s_-]+')  # how words of a name may be joined
_SYNONYM_SEP = re.compile(r'[,/;]')  # 'tench, Tinca tinca', 'T-shirt/top'

ClassSynonyms = Union[str, Sequence[str]]  # a display name, or all names


def name_key(text: str) -> Tuple[str, ...]:
    """A name or a matched span as a tuple of word stems: ``Saint-Bernard``,
    ``saint_bernards`` and ``Saint  Bernard`` are all ``('saint',
    'bernard')``; ``bands`` and ``banded`` are both ``('band',)``."""
    return tuple(stem(w) if w.isalpha() else w
                 for w in _JOINER.split(text.lower().strip()) if w)


def id_like_preview(names: Sequence[str]) -> Optional[str]:
    """A few of the names, when most of them look like ids (wnids,
    digits), for the one line that says so and names the fix; else None."""
    ids = id_like_names(names)
    if not names or len(ids) * 2 < len(names):
        return None
    return ', '.join(ids[:3]) + (', ...' if len(ids) > 3 else '')


def display_of(names: Sequence[ClassSynonyms]) -> List[str]:
    """Each class's display name: the name, or the first of its list."""
    return [n if isinstance(n, str) else (list(n) or [''])[0]
            for n in names]


class ClassNames:
    """Finds class names in a text, whole words, in any inflected form.

    Give each class its display name (:mod:`gpt4image_mm.utils.class_names`)
    or a list of names (display name first, then synonyms: ImageNet's
    ``tench``, ``Tinca tinca``); any of them names the class. A name is
    also split at ``,``, ``/`` and ``;`` (``'tench, Tinca tinca'``,
    ``'T-shirt/top'``). Words match in their inflected forms
    (:mod:`~gpt4image_mm.analysis.wordforms`: "bands" names ``banded``,
    "weave" names ``woven``), and a space, ``_`` or ``-`` between the words
    of a name matches any of them ("Saint Bernard", "saint-bernard").
    Longer names match first, so ``t-shirt`` is not also read as ``shirt``.
    """

    def __init__(self, names: Sequence[ClassSynonyms]):
        synonyms = [[n] if isinstance(n, str) else list(n) for n in names]
        self.names = [group[0] if group else '' for group in synonyms]
        self.index = {n: i for i, n in enumerate(self.names)}
        owners: Dict[Tuple[str, ...], set] = {}
        patterns: Dict[Tuple[str, ...], str] = {}
        for i, group in enumerate(synonyms):
            for name in group:
                for part in _SYNONYM_SEP.split(name):
                    key = name_key(part)
                    if len(''.join(key)) < 2:
                        continue  # a letter alone would match articles
                    owners.setdefault(key, set()).add(i)
                    patterns.setdefault(key, r'[\s_-]+'.join(
                        forms_pattern(w) for w in
                        _JOINER.split(part.lower().strip()) if w))
        self.owners = owners
        order = sorted(patterns, key=lambda k: (-len(k), -len(''.join(k))))
        self.pattern = re.compile(
            r'(?<!\w)(?:' + '|'.join(patterns[k] for k in order)
            + r')(?!\w)', re.IGNORECASE) if order else None

    def found(self, text: str) -> set:
        """Indices of the classes named in ``text``."""
        if self.pattern is None:
            return set()
        out: set = set()
        for m in self.pattern.finditer(text):
            out |= self.owners.get(name_key(m.group(0)), set())
        return out


@dataclass
class RecordStats:
    """Per-success-record arrays plus file-level counts (see module doc)."""

    path: str
    lines: int = 0
    failure_records: int = 0
    key_hash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    text_hash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    words: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    tokens: Optional[np.ndarray] = None  # None: no tokenizer given
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    failed_key_hash: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.uint64))
    # (record, class) rows: the other classes named by each record that
    # names another class and not its own (the repair candidates)
    other_named: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 2), np.int64))


# bits of RecordStats.flags
REFUSAL, CONTENTLESS, OWN_CLASS, OTHER_CLASS, REDO = 1, 2, 4, 8, 16


class _Growing:
    """An append-only numpy column that doubles when full (no Python list
    of a million ints)."""

    def __init__(self, dtype: Any):
        self.buf = np.zeros(1024, dtype)
        self.n = 0

    def append(self, value: Any) -> None:
        if self.n == len(self.buf):
            self.buf = np.concatenate([self.buf, np.zeros_like(self.buf)])
        self.buf[self.n] = value
        self.n += 1

    def extend(self, values: Sequence[Any]) -> None:
        for v in values:
            self.append(v)

    def array(self) -> np.ndarray:
        return self.buf[:self.n].copy()


LabelOf = Callable[[str], int]  # key -> class index, -1 when unknown


def class_label_of(names: Sequence[str],
                   per_image: Optional[LabelOf] = None) -> LabelOf:
    """Label of a key: ``class:<name>[#k]`` keys name it; other keys ask
    ``per_image`` (built from a dataset config), else -1."""
    index = {n: i for i, n in enumerate(names)}

    def label(key: str) -> int:
        base = base_key(key)
        if base.startswith(CLASS_PREFIX):
            return index.get(base[len(CLASS_PREFIX):], -1)
        return per_image(base) if per_image else -1
    return label


def scan_records(path: str, label_of: LabelOf,
                 classes: Optional[ClassNames] = None,
                 tokenizer: Optional[Any] = None,
                 progress: bool = True) -> RecordStats:
    """Stream ``path`` once and measure every successful record."""
    from tqdm import tqdm
    cols = {name: _Growing(dt) for name, dt in (
        ('key_hash', np.uint64), ('text_hash', np.uint64),
        ('words', np.int32), ('label', np.int32), ('flags', np.uint8),
        ('tokens', np.int32), ('failed', np.uint64),
        ('other_record', np.int64), ('other_class', np.int64))}
    stats = RecordStats(path)
    pending: List[str] = []

    def count_tokens() -> None:
        if tokenizer is not None and pending:
            ids = tokenizer(pending, truncation=False,
                            add_special_tokens=True)['input_ids']
            cols['tokens'].extend([len(x) for x in ids])
        pending.clear()

    bar = tqdm(iter_records(path), desc=f'reading {path}', unit=' rec',
               disable=not progress, mininterval=1.0)
    for _, rec in bar:
        stats.lines += 1
        key = rec['key']
        if 'error' in rec:
            stats.failure_records += 1
            cols['failed'].append(stable_hash(key))
            continue
        text = rec['text']
        label = label_of(key)
        flags, others = _text_flags(text, label, classes)
        if supersedes(rec):
            flags |= REDO
        for c in others:
            cols['other_record'].append(cols['key_hash'].n)
            cols['other_class'].append(c)
        cols['key_hash'].append(stable_hash(key))
        cols['text_hash'].append(stable_hash(text))
        cols['words'].append(len(text.split()))
        cols['label'].append(label)
        cols['flags'].append(flags)
        pending.append(text)
        if len(pending) >= _CHUNK:
            count_tokens()
    bar.close()
    count_tokens()
    stats.key_hash, stats.text_hash = (cols['key_hash'].array(),
                                       cols['text_hash'].array())
    stats.words, stats.label = cols['words'].array(), cols['label'].array()
    stats.flags = cols['flags'].array()
    stats.failed_key_hash = cols['failed'].array()
    stats.other_named = np.stack([cols['other_record'].array(),
                                  cols['other_class'].array()], 1)
    if tokenizer is not None:
        stats.tokens = cols['tokens'].array()
    return stats


def _text_flags(text: str, label: int, classes: Optional[ClassNames]
                ) -> Tuple[int, List[int]]:
    """The record's flag bits and, when it names other classes but not
    its own, those classes (sorted)."""
    flags = (REFUSAL if is_refusal(text) else 0) | (
        CONTENTLESS if is_contentless(text) else 0)
    others: List[int] = []
    if classes is not None and label >= 0:
        named = classes.found(text)
        if label in named:
            flags |= OWN_CLASS
        if named - {label}:
            flags |= OTHER_CLASS
            if label not in named:
                others = sorted(named)
    return flags, others
