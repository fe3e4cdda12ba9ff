"""Captions written by other tools, read as a stream and put on our keys.

Other projects ship captions keyed their own way: bare file names
(``{"saint_bernard_148.jpg": "..."}``), paths under another root
(``coco/train2017/...``, ``imagenet/train/n01440764/...``), JSON Lines,
CSVs, LLaVA conversation lists, COCO caption files (the formats:
:mod:`gpt4image_mm.embedding.caption_sources`). Training joins on the path
relative to the dataset root (:mod:`gpt4image_mm.utils.keys`), so
:func:`import_onto_dataset` resolves each source name to a dataset key: the
exact relative path first, else a dataset key the name ends with (the
source has a root prefix the dataset lacks), else a key that ends with the
name (the name lacks folders, a bare file name). A name whose folders
contradict every key of its file name (``dog/cat0.png`` where the dataset
has ``cat/cat0.png``) is unmatched, never put on that image. Ambiguous
names are an error that lists them, and nothing is written.

Sources are read as a stream, and the per-source state is one byte per
dataset key (two counters per key for grouped formats, where one image has
several entries), so an ImageNet-sized source (1.28 M captions) imports in
the memory of the key index (docs/benchmarks.md).
"""
from __future__ import annotations

import os
import posixpath
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from gpt4image_mm.embedding.caption_sources import (
    DEFAULT_MAX_RECORD,
    FORMATS,
    GROUPED,
    Entry,
    MapSourceError,
    read_entries,
    source_format,
)
from gpt4image_mm.embedding.importers import write_records
from gpt4image_mm.utils.descriptions import MAX_TEXT_CHARS
from gpt4image_mm.utils.keys import check_key, class_key, description_key

SHOW_UNMATCHED = 20  # unmatched names listed in the summary


class CaptionSource:
    """A caption file and its format; :meth:`entries` reads it afresh each
    time (grouped formats are read twice: once to count each image's
    captions, once to write them)."""

    def __init__(self, path: str, fmt: str = 'auto',
                 max_record: int = DEFAULT_MAX_RECORD):
        self.path, self.max_record = path, max_record
        self.format = source_format(path, fmt, max_record)

    @property
    def grouped(self) -> bool:
        return self.format in GROUPED

    def entries(self) -> Iterator[Entry]:
        return read_entries(self.path, self.format, self.max_record)


def clean_texts(name: Any, value: Any, path: str) -> List[str]:
    """The caption(s) of one entry: a string, or a list of them (several
    descriptions of one image, keys ``<key>#k``)."""
    many = isinstance(value, list)
    texts = value if many else [value]
    out = []
    for k, text in enumerate(texts):
        where = f'{path}: {name}' + (f'#{k}' if many else '')
        if not isinstance(text, str):
            raise MapSourceError(f'{where}: text must be a string, got '
                                 f'{type(text).__name__}')
        text = text.strip()
        if not text:
            raise MapSourceError(f'{where}: empty description')
        if len(text) > MAX_TEXT_CHARS:
            raise MapSourceError(
                f'{where}: a caption of {len(text)} characters, over the '
                f'{MAX_TEXT_CHARS} a description may have -- check the '
                'file (a wrong column or field?)')
        out.append(text)
    if not out:
        raise MapSourceError(f'{path}: {name}: an empty list of captions')
    return out


def _caption_count(entry: Entry) -> int:
    return len(entry.texts) if isinstance(entry.texts, list) else 1


def read_map(path: str, fmt: str = 'auto',
             max_record: int = DEFAULT_MAX_RECORD
             ) -> List[Tuple[str, str]]:
    """(key, text) pairs of a source with the names as keys; a list of
    captions, or several entries of one image (grouped formats), give
    ``key#k`` keys."""
    return list(_named_pairs(CaptionSource(path, fmt, max_record)))


def _named_pairs(source: CaptionSource) -> Iterator[Tuple[str, str]]:
    counts: Optional[Counter] = None
    if source.grouped:
        counts = Counter()
        for e in source.entries():
            counts[str(e.name)] += _caption_count(e)
    next_k: Counter = Counter()
    for e in source.entries():
        name = str(e.name)
        texts = clean_texts(name, e.texts, source.path)
        many = isinstance(e.texts, list) if counts is None \
            else counts[name] > 1
        for text in texts:
            k = next_k[name]
            next_k[name] += 1
            yield (description_key(name, k) if many else name), text


def import_map(path: str, out: str, class_level: bool = False,
               force: bool = False, model: Optional[str] = None,
               fmt: str = 'auto', max_record: int = DEFAULT_MAX_RECORD
               ) -> int:
    """Write a source's captions as descriptions JSONL, keyed by the names
    as written (streamed; nothing is written unless all of it is good).

    ``class_level``: the names are class names; they become ``class:<name>``
    (per-class descriptions for ``DescriptionDataset(per_class=True)``).
    """
    source = CaptionSource(path, fmt, max_record)
    model = model or f'import:{os.path.basename(path)}'
    now = time.time()

    def records() -> Iterator[Dict[str, Any]]:
        seen = set()
        for key, text in _named_pairs(source):
            if class_level:
                key = class_key(key)
            check_key(key, f'{path}: ')
            if key in seen:
                raise MapSourceError(f'{path}: key {key!r} appears twice')
            seen.add(key)
            yield dict(key=key, text=text, model=model,
                       prompt_id='imported', time=now)
        if not seen:
            raise MapSourceError(f'{path}: no descriptions')
    return write_records(records(), out, force)


# -- resolving names to dataset keys ---------------------------------------
def normalise_name(name: str) -> str:
    """A source name as a relative ``/`` path: backslashes, ``./``, a
    leading ``/`` and ``..`` steps (which point into the other tool's own
    tree, not ours) are dropped; the folders left are kept."""
    rel = posixpath.normpath(name.strip().replace('\\', '/') or '.')
    return '/'.join(p for p in rel.split('/') if p not in ('', '.', '..'))


class KeyIndex:
    """Dataset keys by relative path and by file name.

    A file name shared by several images maps to all of them (a list);
    otherwise one int per name.
    """

    def __init__(self, keys: Sequence[str]):
        self.keys = keys
        self.by_path: Dict[str, int] = {}
        self.by_name: Dict[str, Any] = {}
        for i, key in enumerate(keys):
            self.by_path[key] = i
            name = key.rsplit('/', 1)[-1]
            had = self.by_name.get(name)
            if had is None:
                self.by_name[name] = i
            elif isinstance(had, list):
                had.append(i)
            else:
                self.by_name[name] = [had, i]

    def resolve(self, name: str) -> Tuple[Optional[int], str, List[int]]:
        """``(index, how, tied)``: how is ``path`` (the exact key),
        ``suffix`` (the name is a key under another root), ``name`` (a key
        that ends with the name: a bare file name or a shorter path),
        ``ambiguous`` (index None; ``tied`` the candidates), ``contradicts``
        (index None: the dataset has the file name only under other
        folders) or ``unmatched`` (index None)."""
        i = self.by_path.get(name)
        if i is None:
            name = normalise_name(name)
            i = self.by_path.get(name)
        if i is not None:
            return i, 'path', []
        hit = self.by_name.get(name.rsplit('/', 1)[-1])
        if hit is None:
            return None, 'unmatched', []
        best: List[int] = []
        best_depth, how = 0, 'contradicts'
        for i in hit if isinstance(hit, list) else [hit]:
            depth, kind = _shared_depth(name, self.keys[i])
            if depth > best_depth:
                best, best_depth, how = [i], depth, kind
            elif depth and depth == best_depth:
                best.append(i)
        if len(best) > 1:
            return None, 'ambiguous', best
        return (best[0] if best else None), how, []


def _shared_depth(name: str, key: str) -> Tuple[int, str]:
    """How many path components ``name`` and ``key`` share when one ends
    with the other (0 when their folders differ), and which ends with the
    other (``suffix``: the name has a root prefix; ``name``: the name has
    fewer folders)."""
    if name.endswith('/' + key):
        return key.count('/') + 1, 'suffix'
    if key.endswith('/' + name):
        return name.count('/') + 1, 'name'
    return 0, 'contradicts'


@dataclass
class ImportReport:
    """What an import onto a dataset did."""

    out: str
    source_format: str = ''
    entries: int = 0              # source entries read
    descriptions: int = 0         # records written (several per image too)
    by_path: int = 0
    by_suffix: int = 0
    by_name: int = 0
    unmatched: int = 0
    contradicting: int = 0        # unmatched: the file name under other folders
    unmatched_names: List[str] = field(default_factory=list)
    samples: int = 0              # dataset samples
    described: int = 0            # dataset samples that have a description

    def format(self) -> str:
        lines = [f'{self.out}: {self.descriptions} descriptions from '
                 f'{self.entries} source entries (read as '
                 f'{self.source_format}); matched '
                 f'{self.by_path + self.by_suffix + self.by_name} (by path '
                 f'{self.by_path}, by path suffix {self.by_suffix}, by file '
                 f'name {self.by_name}), unmatched {self.unmatched}']
        if self.contradicting:
            lines.append(f'  {self.contradicting} unmatched name(s) have a '
                         'file name the dataset holds under other folders: '
                         'not put on those images')
        if self.unmatched_names:
            more = self.unmatched - len(self.unmatched_names)
            lines.append('  unmatched: ' + ', '.join(self.unmatched_names)
                         + (f' (and {more} more)' if more > 0 else ''))
        lines.append(f'{self.described} of {self.samples} dataset samples '
                     f'now have a description ({self.samples - self.described}'
                     ' without)')
        return '\n'.join(lines)


class _Numbering:
    """``#k`` numbering of grouped sources: each dataset key's caption
    count (a first pass) and how many were written (the second)."""

    def __init__(self, source: CaptionSource, index: KeyIndex):
        self.total = array('I', bytes(4 * len(index.keys)))
        self.done = array('I', bytes(4 * len(index.keys)))
        for e in source.entries():
            i = index.resolve(str(e.name))[0]
            if i is not None:
                self.total[i] += _caption_count(e)

    def key(self, i: int, base: str, path: str) -> str:
        k = self.done[i]
        self.done[i] += 1
        if k >= self.total[i]:
            raise MapSourceError(f'{path}: changed while it was read (more '
                                 f'captions of {base!r} than before); rerun')
        return description_key(base, k) if self.total[i] > 1 else base


def _resolved_records(source: CaptionSource, index: KeyIndex,
                      report: ImportReport, model: str
                      ) -> Iterator[Dict[str, Any]]:
    """Description records on dataset keys; ambiguous names and duplicates
    raise at the end / on sight, so the atomic write keeps nothing."""
    path = source.path
    numbering = _Numbering(source, index) if source.grouped else None
    seen = bytearray(len(index.keys))
    ambiguous: Dict[str, str] = {}
    # grouped formats name an image once per caption: count images, not
    # captions, among the unmatched
    missed: Optional[set] = set() if numbering is not None else None
    now = time.time()
    for entry in source.entries():
        report.entries += 1
        name = str(entry.name)
        i, how, tied = index.resolve(name)
        if how == 'ambiguous':
            if name not in ambiguous:
                ambiguous[name] = ' and '.join(index.keys[t] for t in tied) \
                    if len(ambiguous) < SHOW_UNMATCHED else ''
            continue
        if i is None:
            if missed is not None:
                if name in missed:
                    continue
                missed.add(name)
            report.unmatched += 1
            report.contradicting += how == 'contradicts'
            if len(report.unmatched_names) < SHOW_UNMATCHED:
                report.unmatched_names.append(name)
            continue
        key = index.keys[i]
        if seen[i] and numbering is None:
            raise MapSourceError(f'{path}: {name!r} is the second entry for '
                                 f'dataset key {key!r}')
        report.described += not seen[i]
        seen[i] = 1
        report.by_path += how == 'path'
        report.by_suffix += how == 'suffix'
        report.by_name += how == 'name'
        texts = clean_texts(f'{entry.where} ({name})', entry.texts, path)
        many = isinstance(entry.texts, list)
        for k, text in enumerate(texts):
            report.descriptions += 1
            if numbering is not None:
                rec_key = numbering.key(i, key, path)
            else:
                rec_key = description_key(key, k) if many else key
            yield dict(key=check_key(rec_key), text=text, model=model,
                       prompt_id='imported', time=now)
    if ambiguous:
        shown = [f'{name!r} ({keys})' for name, keys in ambiguous.items()
                 if keys]
        raise MapSourceError(
            f'{path}: {len(ambiguous)} name(s) match several dataset images, '
            f'nothing written: {"; ".join(shown)}; key them by their path '
            'relative to the dataset root')
    if not report.described:
        raise MapSourceError(
            f'{path}: none of its {report.entries} names ({FORMATS[source.format]}'
            f') is a dataset key or a file name of the dataset (e.g. '
            f'{report.unmatched_names[:3]}); is --images/--config the '
            'dataset these captions describe?')


def import_onto_dataset(path: str, keys: Sequence[str], out: str,
                        force: bool = False, model: Optional[str] = None,
                        source: Optional[Dict[str, Any]] = None,
                        fmt: str = 'auto',
                        max_record: int = DEFAULT_MAX_RECORD
                        ) -> ImportReport:
    """Write the captions of ``path`` as descriptions on ``keys`` (the
    dataset's keys, :func:`gpt4image_mm.utils.keys.dataset_keys` order).

    ``source``: the dataset the keys belong to (``root``, ``split``),
    recorded beside ``out`` as caption.py does, so training can check that
    the descriptions describe its dataset. ``fmt``: the source's format
    (``auto``: by its content).
    """
    from gpt4image_mm.utils.descriptions import record_source, source_path
    captions = CaptionSource(path, fmt, max_record)
    index = KeyIndex(keys)
    report = ImportReport(out, source_format=captions.format,
                          samples=len(keys))
    write_records(_resolved_records(
        captions, index, report, model or f'import:{os.path.basename(path)}'),
        out, force)
    if source:
        if os.path.exists(source_path(out)):
            os.remove(source_path(out))  # force replaced what it described
        record_source(out, source)
    return report
