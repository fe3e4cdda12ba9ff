"""Captions written by other tools, read as a stream and put on our keys.

Other projects ship captions keyed their own way: bare file names
(``{"saint_bernard_148.jpg": "..."}``), paths under another root, JSON
Lines with ``image``/``caption`` fields, CSVs with a header. Training joins
on the path relative to the dataset root (:mod:`gpt4image_mm.utils.keys`), so
:func:`import_onto_dataset` resolves each source name to a dataset key:
the exact relative path first, else the file name when exactly one dataset
image has it. Ambiguous names are an error that lists them, and nothing is
written.

Sources are read as a stream (a JSON object too: :func:`iter_json_items`),
and the only per-source state is one byte per dataset key, so an
ImageNet-sized source (1.28 M captions) imports in the memory of the key
index (docs/benchmarks.md).
"""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from gpt4image_mm.embedding.importers import ImportSourceError, write_records
from gpt4image_mm.utils.keys import check_key, description_key

# Field names other tools use for the image and for its caption (JSON Lines
# records and CSV headers), first match wins.
NAME_FIELDS = ('key', 'image', 'file', 'file_name', 'filename', 'image_id',
               'path', 'img', 'name')
TEXT_FIELDS = ('text', 'caption', 'description', 'captions', 'texts')
SHOW_UNMATCHED = 20  # unmatched names listed in the summary
_CHUNK = 1 << 20     # characters read at a time from a JSON document


class MapSourceError(ImportSourceError):
    """A source entry we cannot use (file and entry named)."""


# -- reading -------------------------------------------------------------
def iter_json_items(f: IO[str], path: str) -> Iterator[Tuple[str, Any]]:
    """``(name, value)`` of a JSON object, or of a JSON list of records, one
    at a time: the document is never held whole."""
    reader = _JsonStream(f, path)
    opening = reader.next_char()
    if opening not in '{[':
        raise MapSourceError(f'{path}: expected a JSON object {{name: '
                             'caption}} or a list of records')
    closing = '}' if opening == '{' else ']'
    n = 0
    while True:
        c = reader.next_char()
        if c == closing and n == 0:
            break
        if n:
            if c == closing:
                break
            if c != ',':
                raise reader.error("',' or the end")
            c = reader.next_char()
        reader.unread()
        n += 1
        if opening == '{':
            name = reader.value()
            if reader.next_char() != ':':
                raise reader.error("':'")
            yield name, reader.value()
        else:
            yield _record_item(reader.value(), path, f'record {n}')
    if reader.next_char(eof_ok=True):
        raise reader.error('the end of the document')


class _JsonStream:
    """Decodes one JSON value at a time from a file read in chunks."""

    def __init__(self, f: IO[str], path: str):
        self.f, self.path = f, path
        self.buf, self.pos, self.eof = '', 0, False
        self.consumed = 0  # characters before buf (for error positions)
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        data = '' if self.eof else self.f.read(_CHUNK)
        self.eof = self.eof or not data
        self.consumed += self.pos
        self.buf, self.pos = self.buf[self.pos:] + data, 0
        return bool(data)

    def next_char(self, eof_ok: bool = False) -> str:
        """The next non-blank character, consumed ('' at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in ' \t\r\n':
                self.pos += 1
            if self.pos < len(self.buf):
                self.pos += 1
                return self.buf[self.pos - 1]
            if not self._fill():
                if eof_ok:
                    return ''
                raise self.error('more (the document ends early)')

    def unread(self) -> None:
        self.pos -= 1

    def value(self) -> Any:
        self.next_char()  # raw_decode takes no leading blanks
        self.unread()
        while True:
            try:
                val, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if e.pos >= len(self.buf) - 1 or not self.eof:
                    if self._fill():
                        continue
                raise MapSourceError(f'{self.path}: not JSON ({e.msg} at '
                                     f'character {self.consumed + e.pos})'
                                     ) from None
            self.pos = end
            return val

    def error(self, wanted: str) -> MapSourceError:
        return MapSourceError(f'{self.path}: not JSON (expected {wanted} at '
                              f'character {self.consumed + self.pos})')


def _pick(rec: Dict[str, Any], fields: Sequence[str]) -> Optional[str]:
    return next((f for f in fields if f in rec), None)


def _record_item(rec: Any, path: str, where: str) -> Tuple[str, Any]:
    if not isinstance(rec, dict):
        raise MapSourceError(f'{path}: {where} is not a JSON object')
    name, text = _pick(rec, NAME_FIELDS), _pick(rec, TEXT_FIELDS)
    if name is None or text is None:
        raise MapSourceError(
            f'{path}: {where} needs an image field ({", ".join(NAME_FIELDS)})'
            f' and a caption field ({", ".join(TEXT_FIELDS)}); it has '
            f'{sorted(rec)}')
    return rec[name], rec[text]


def _iter_jsonl(f: IO[str], path: str) -> Iterator[Tuple[str, Any]]:
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise MapSourceError(f'{path}:{lineno}: not JSON ({e.msg})'
                                 ) from None
        yield _record_item(rec, path, f'line {lineno}')


def _iter_csv(f: IO[str], path: str) -> Iterator[Tuple[str, Any]]:
    """Rows of a CSV: the columns its header names, else the first two."""
    rows = csv.reader(f)
    head = next(rows, None)
    if head is None:
        return
    low = [c.strip().lower() for c in head]
    name_col = next((low.index(c) for c in NAME_FIELDS if c in low), None)
    text_col = next((low.index(c) for c in TEXT_FIELDS if c in low), None)
    if name_col is None or text_col is None:  # no header: data from row 1
        name_col, text_col = 0, 1
        rows = _prepend(head, rows)
    for n, row in enumerate(rows, 1):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(name_col, text_col):
            raise MapSourceError(f'{path}: row {n} has no text column')
        yield row[name_col], row[text_col]


def _prepend(first: List[str], rows: Iterator[List[str]]
             ) -> Iterator[List[str]]:
    yield first
    yield from rows


def iter_source(path: str) -> Iterator[Tuple[str, Any]]:
    """``(name, caption or [captions])`` of a source file, streamed: a JSON
    object ``{name: text | [texts]}`` or list of records, JSON Lines
    records, or a CSV (by its extension; anything else is read as CSV)."""
    low = path.lower()
    # utf-8-sig: a byte-order mark (Windows tools, Excel) is not part of a
    # name
    with open(path, encoding='utf-8-sig', newline='' if not
              low.endswith(('.json', '.jsonl')) else None) as f:
        if low.endswith('.jsonl'):
            yield from _iter_jsonl(f, path)
        elif low.endswith('.json'):
            yield from iter_json_items(f, path)
        else:
            yield from _iter_csv(f, path)


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
        if not text.strip():
            raise MapSourceError(f'{where}: empty description')
        out.append(text.strip())
    if not out:
        raise MapSourceError(f'{path}: {name}: an empty list of captions')
    return out


# -- resolving names to dataset keys ---------------------------------------
class KeyIndex:
    """Dataset keys by relative path and by file name.

    A file name shared by several images maps to all of them (an ambiguous
    source name lists them); otherwise one int per name.
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

    def resolve(self, name: str) -> Tuple[Optional[int], str]:
        """``(index, how)``: how is ``path``, ``name``, ``ambiguous`` (index
        None) or ``unmatched`` (index None)."""
        rel = name.strip().replace('\\', '/')
        while rel.startswith('./'):
            rel = rel[2:]
        i = self.by_path.get(rel)
        if i is not None:
            return i, 'path'
        hit = self.by_name.get(rel.rsplit('/', 1)[-1])
        if hit is None:
            return None, 'unmatched'
        if isinstance(hit, list):
            return None, 'ambiguous'
        return hit, 'name'

    def candidates(self, name: str) -> List[str]:
        hit = self.by_name.get(name.strip().replace('\\', '/')
                               .rsplit('/', 1)[-1])
        return [self.keys[i] for i in hit] if isinstance(hit, list) else []


@dataclass
class ImportReport:
    """What an import onto a dataset did."""

    out: str
    entries: int = 0              # source entries (names) read
    descriptions: int = 0         # records written (several per image too)
    by_path: int = 0
    by_name: int = 0
    unmatched: int = 0
    unmatched_names: List[str] = field(default_factory=list)
    samples: int = 0              # dataset samples
    described: int = 0            # dataset samples that have a description

    def format(self) -> str:
        lines = [f'{self.out}: {self.descriptions} descriptions from '
                 f'{self.entries} source entries; matched '
                 f'{self.by_path + self.by_name} (by path {self.by_path}, by '
                 f'file name {self.by_name}), unmatched {self.unmatched}']
        if self.unmatched_names:
            more = self.unmatched - len(self.unmatched_names)
            lines.append('  unmatched: ' + ', '.join(self.unmatched_names)
                         + (f' (and {more} more)' if more > 0 else ''))
        lines.append(f'{self.described} of {self.samples} dataset samples '
                     f'now have a description ({self.samples - self.described}'
                     ' without)')
        return '\n'.join(lines)


def _resolved_records(path: str, index: KeyIndex, report: ImportReport,
                      model: str) -> Iterator[Dict[str, Any]]:
    """Description records on dataset keys; ambiguous names and duplicates
    raise at the end / on sight, so the atomic write keeps nothing."""
    seen = bytearray(len(index.keys))
    ambiguous: List[str] = []
    now = time.time()
    for name, value in iter_source(path):
        report.entries += 1
        name = str(name)
        i, how = index.resolve(name)
        if how == 'ambiguous':
            if len(ambiguous) < SHOW_UNMATCHED:
                ambiguous.append(f'{name!r} ({" and ".join(index.candidates(name))})')
            else:
                ambiguous.append('')
            continue
        if i is None:
            report.unmatched += 1
            if len(report.unmatched_names) < SHOW_UNMATCHED:
                report.unmatched_names.append(name)
            continue
        key = index.keys[i]
        if seen[i]:
            raise MapSourceError(f'{path}: {name!r} is the second entry for '
                                 f'dataset key {key!r}')
        seen[i] = 1
        report.by_path += how == 'path'
        report.by_name += how == 'name'
        report.described += 1
        texts = clean_texts(name, value, path)
        many = isinstance(value, list)
        for k, text in enumerate(texts):
            report.descriptions += 1
            yield dict(key=check_key(description_key(key, k) if many else key),
                       text=text, model=model, prompt_id='imported', time=now)
    if ambiguous:
        shown = [a for a in ambiguous if a]
        raise MapSourceError(
            f'{path}: {len(ambiguous)} name(s) match several dataset images, '
            f'nothing written: {"; ".join(shown)}; key them by their path '
            'relative to the dataset root')
    if not report.by_path + report.by_name:
        raise MapSourceError(
            f'{path}: none of its {report.entries} names is a dataset key or '
            f'a file name of the dataset (e.g. '
            f'{report.unmatched_names[:3]}); is --images/--config the '
            'dataset these captions describe?')


def import_onto_dataset(path: str, keys: Sequence[str], out: str,
                        force: bool = False, model: Optional[str] = None,
                        source: Optional[Dict[str, Any]] = None
                        ) -> ImportReport:
    """Write the captions of ``path`` as descriptions on ``keys`` (the
    dataset's keys, :func:`gpt4image_mm.utils.keys.dataset_keys` order).

    ``source``: the dataset the keys belong to (``root``, ``split``),
    recorded beside ``out`` as caption.py does, so training can check that
    the descriptions describe its dataset.
    """
    from gpt4image_mm.utils.descriptions import record_source, source_path
    index = KeyIndex(keys)
    report = ImportReport(out, samples=len(keys))
    write_records(_resolved_records(
        path, index, report, model or f'import:{os.path.basename(path)}'),
        out, force)
    if source:
        if os.path.exists(source_path(out)):
            os.remove(source_path(out))  # force replaced what it described
        record_source(out, source)
    return report
