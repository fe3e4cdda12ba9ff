"""Caption files other tools write, recognised by their content and read as
a stream of entries.

Formats (``--format`` names one; by default the file's content decides):

* ``json``: an object ``{name: caption | [captions]}`` or a list of records
  ``[{"image": ..., "caption": ...}]``;
* ``jsonl``: JSON Lines of such records;
* ``csv``: a CSV with a header (``image,caption``, ``key,text``, ...), else
  its first two columns;
* ``llava``: LLaVA / ShareGPT(4V) conversation records, a JSON list (or
  JSON Lines) of ``{"id", "image", "conversations": [{"from": "human",
  ...}, {"from": "gpt", "value": CAPTION}]}``: the ``gpt`` turns are the
  captions;
* ``coco``: a COCO captions file ``{"images": [{"id", "file_name"}],
  "annotations": [{"image_id", "caption"}]}``.

In ``llava`` and ``coco`` files one image may have several entries (turns,
annotations): they are *grouped* formats, and the importer numbers an
image's captions ``#k`` as ``caption --per-image`` does.

Every source is hostile until read: only a regular file is opened (a FIFO
or a device is refused, :func:`gpt4image_mm.utils.files.open_regular`), no
record may exceed ``max_record`` characters (a file of zeros named
``.jsonl`` is refused after that many, not read into memory), a JSON value
is decoded in time linear in its size (the buffer grows geometrically while
a value is incomplete), and too deep nesting, over-long CSV fields and
non-UTF-8 bytes are one-line errors naming the file and the record.
"""
from __future__ import annotations

import contextlib
import csv
import json
import re
from dataclasses import dataclass
from typing import (
    IO,
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

from gpt4image_mm.embedding.importers import ImportSourceError
from gpt4image_mm.utils.files import open_regular

# Field names other tools use for the image and for its caption (JSON Lines
# records and CSV headers), first match wins.
NAME_FIELDS = ('key', 'image', 'file', 'file_name', 'filename', 'image_id',
               'path', 'img', 'name')
TEXT_FIELDS = ('text', 'caption', 'description', 'captions', 'texts')
FORMATS = {
    'json': 'JSON object {name: caption | [captions]} or list of '
            '{"image", "caption"} records',
    'jsonl': 'JSON Lines of {"image", "caption"} records',
    'csv': 'CSV with an image,caption header',
    'llava': 'LLaVA/ShareGPT conversations (the gpt turns are captions)',
    'coco': 'COCO captions {"images", "annotations"}',
}
GROUPED = frozenset(('llava', 'coco'))  # several entries per image
ANSWER_ROLES = ('gpt', 'assistant')     # LLaVA turns that are captions
COCO_KEYS = ('info', 'licenses', 'images', 'annotations', 'categories',
             'type')
DEFAULT_MAX_RECORD = 16 << 20  # characters in one record, line or value
_CHUNK = 1 << 20               # characters read at a time
_SNIFF = 4096                  # characters looked at to tell the format
_WS = re.compile(r'[ \t\r\n]*')
_ESCAPE_TAIL = 6               # a \uXXXX escape cut at the buffer's end


class MapSourceError(ImportSourceError):
    """A source entry we cannot use (file and entry named)."""


@dataclass
class Entry:
    """One source entry: an image name and its caption(s).

    ``texts`` is a string (one caption) or a list (several, ``#k`` keys);
    ``where`` names the entry in messages (``record 3``, ``line 7``).
    """

    name: Any
    texts: Any
    where: str


# -- opening and telling the format ---------------------------------------
@contextlib.contextmanager
def open_source(path: str, newline: Optional[str] = None
                ) -> Iterator[IO[str]]:
    """The source as text: a regular file only, UTF-8 with or without a
    byte-order mark (Windows tools and Excel write one; it is never part of
    the first name), a decoding error naming the file."""
    with open_regular(path, encoding='utf-8-sig', newline=newline) as f:
        try:
            yield f
        except UnicodeDecodeError as e:
            raise MapSourceError(
                f'{path}: not UTF-8 text ({e.reason}: byte 0x'
                f'{e.object[e.start:e.start + 1].hex()}) -- save it as '
                'UTF-8') from None


def known_formats() -> str:
    return '; '.join(f'{k} ({v})' for k, v in FORMATS.items())


def unknown_format(path: str, found: str) -> MapSourceError:
    return MapSourceError(
        f'{path}: not a caption file this tool reads: found {found} -- '
        f'known formats: {known_formats()}; convert it or name one with '
        '--format')


def detect_format(path: str, max_record: int = DEFAULT_MAX_RECORD) -> str:
    """The format of ``path`` by its content (see the module docstring)."""
    with open_source(path) as f:
        head = f.read(_SNIFF)
        start = _WS.match(head).end()
        if start == len(head):
            raise unknown_format(path, 'an empty file')
        if '\0' in head:
            raise unknown_format(path, 'binary data (NUL bytes)')
        f.seek(0)
        first = head[start]
        if first == '[':
            return _list_format(path, f, max_record)
        if first == '{':
            return _object_format(path, f, max_record)
        return _csv_format(path, f, max_record)


def _csv_format(path: str, f: IO[str], max_record: int) -> str:
    """CSV when its first row has two columns or more (a header or an
    image and its caption); one column is a list of something else."""
    try:
        first = next(csv.reader([f.readline(max_record + 1)]), [])
    except csv.Error:  # an over-long first field: the reader names it
        return 'csv'
    if len(first) < 2:
        raise unknown_format(path, 'text whose first line has one column '
                             f'({first[0][:40]!r}...)' if first else
                             'text with no columns')
    return 'csv'


def _record_kind(rec: Any) -> Optional[str]:
    """``llava``, ``record`` (image and caption fields) or None."""
    if not isinstance(rec, dict):
        return None
    if isinstance(rec.get('conversations'), list):
        return 'llava'
    if _pick(rec, NAME_FIELDS) and _pick(rec, TEXT_FIELDS):
        return 'record'
    return None


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f'an object with fields {sorted(value)[:8]}'
    return {str: 'a string', list: 'a list', bool: 'a boolean',
            type(None): 'null'}.get(type(value), 'a number')


def _list_format(path: str, f: IO[str], max_record: int) -> str:
    stream = JsonStream(f, path, max_record)
    stream.next_char()  # '['
    if stream.peek() == ']':
        raise unknown_format(path, 'an empty JSON list')
    first = stream.value('record 1')
    kind = _record_kind(first)
    if kind is None:
        raise unknown_format(path, 'a JSON list whose first item is '
                             + _describe(first))
    return 'llava' if kind == 'llava' else 'json'


def _object_format(path: str, f: IO[str], max_record: int) -> str:
    """JSON Lines (the first line is a whole record), COCO (its top-level
    fields) or a ``{name: caption}`` map (a string or list value)."""
    line = f.readline(max_record + 1)
    with contextlib.suppress(ValueError, RecursionError):
        kind = _record_kind(json.loads(line))
        if kind:
            return 'llava' if kind == 'llava' else 'jsonl'
    f.seek(0)
    stream = JsonStream(f, path, max_record)
    stream.next_char()  # '{'
    if stream.peek() == '}':
        raise unknown_format(path, 'an empty JSON object')
    name = stream.value('the first name')
    if stream.next_char() != ':':
        raise stream.error("':'")
    opening = stream.peek()
    if name in COCO_KEYS and opening == '{':
        return 'coco'
    if name in COCO_KEYS and opening == '[':
        stream.next_char()
        if stream.peek() in ('{', ']'):
            return 'coco'
    if opening in ('"', '['):
        return 'json'
    raise unknown_format(path, f'a JSON object whose first entry {name!r} '
                         'holds ' + _describe(stream.value(f'{name!r}')))


# -- the JSON stream ---------------------------------------------------------
class JsonStream:
    """JSON values decoded one at a time from a file read in chunks.

    A value that does not fit the buffer makes the buffer grow by its own
    size, so decoding a value of n characters costs O(n) however large it
    is (growing by a fixed chunk and decoding again from its start would
    cost O(n^2 / chunk)). No value may exceed ``max_record``.
    """

    def __init__(self, f: IO[str], path: str,
                 max_record: int = DEFAULT_MAX_RECORD):
        self.f, self.path, self.max_record = f, path, max_record
        self.buf, self.pos, self.eof = '', 0, False
        self.consumed = 0  # characters before buf (for error positions)
        self.decoder = json.JSONDecoder()

    def _fill(self, want: int = _CHUNK) -> bool:
        data = '' if self.eof else self.f.read(max(want, _CHUNK))
        self.eof = self.eof or not data
        self.consumed += self.pos
        self.buf, self.pos = self.buf[self.pos:] + data, 0
        return bool(data)

    def peek(self) -> str:
        """The next non-blank character ('' at the end), not consumed."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ''

    def next_char(self, eof_ok: bool = False) -> str:
        """The next non-blank character, consumed ('' at the end)."""
        c = self.peek()
        if not c and not eof_ok:
            raise self.error('more (the document ends early)')
        self.pos += len(c)
        return c

    def value(self, where: str) -> Any:
        """Decode the next value; ``where`` names it in errors."""
        if not self.peek():
            raise self.error('a value (the document ends early)')
        while True:
            try:
                val, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if not self.eof and self._maybe_cut(e):
                    self._grow(where)
                    continue
                raise MapSourceError(
                    f'{self.path}: {where} is not JSON ({e.msg} at character'
                    f' {self.consumed + e.pos})') from None
            except RecursionError:
                raise MapSourceError(
                    f'{self.path}: {where} is nested too deeply to be a '
                    f'caption entry (at character {self.consumed + self.pos})'
                    ) from None
            if end == len(self.buf) and not self.eof:
                self._grow(where)  # a number may go on in the next chunk
                continue
            if end - self.pos > self.max_record:
                raise self._too_large(where)
            self.pos = end
            return val

    def _maybe_cut(self, e: json.JSONDecodeError) -> bool:
        """Whether the error may only mean that the buffer ends mid-value."""
        return (e.pos >= len(self.buf) - _ESCAPE_TAIL
                or e.msg.startswith('Unterminated string'))

    def _grow(self, where: str) -> None:
        pending = len(self.buf) - self.pos
        if pending > self.max_record:
            raise self._too_large(where)
        self._fill(pending)

    def _too_large(self, where: str) -> MapSourceError:
        return MapSourceError(
            f'{self.path}: {where} is larger than {_mib(self.max_record)} '
            '(no caption entry is) -- check the file, or raise '
            '--max-record-mb if it really is one entry')

    def items(self, closing: str, where: str) -> Iterator[int]:
        """After an opening ``[`` or ``{``: yields n = 1, 2, ... with the
        stream at each element (the caller reads it), until ``closing``."""
        n = 0
        while True:
            c = self.next_char()
            if c == closing:
                return
            if n:
                if c != ',':
                    raise self.error(f"',' or {closing!r} in {where}")
            else:
                self.pos -= 1
            n += 1
            yield n

    def expect(self, char: str, where: str) -> None:
        if self.next_char() != char:
            raise self.error(f'{char!r} ({where})')

    def end(self) -> None:
        if self.next_char(eof_ok=True):
            raise self.error('the end of the document')

    def error(self, wanted: str) -> MapSourceError:
        return MapSourceError(f'{self.path}: not JSON (expected {wanted} at '
                              f'character {self.consumed + self.pos})')


def _mib(n: int) -> str:
    return f'{n / 2**20:g} MiB'


# -- the readers ----------------------------------------------------------------
def _pick(rec: Dict[str, Any], fields: Sequence[str]) -> Optional[str]:
    return next((f for f in fields if f in rec), None)


def _record_entry(rec: Any, path: str, where: str) -> Entry:
    if not isinstance(rec, dict):
        raise MapSourceError(f'{path}: {where} is not a JSON object')
    name, text = _pick(rec, NAME_FIELDS), _pick(rec, TEXT_FIELDS)
    if name is None or text is None:
        hint = ' (a conversation: --format llava)' \
            if 'conversations' in rec else ''
        raise MapSourceError(
            f'{path}: {where} needs an image field ({", ".join(NAME_FIELDS)})'
            f' and a caption field ({", ".join(TEXT_FIELDS)}); it has '
            f'{sorted(rec)}{hint}')
    return Entry(rec[name], rec[text], where)


def _llava_entry(rec: Any, path: str, where: str) -> Optional[Entry]:
    """The gpt turns of one conversation record; None for a text-only
    record (no image: nothing to put a caption on)."""
    if not isinstance(rec, dict) or not isinstance(rec.get('conversations'),
                                                   list):
        raise MapSourceError(f'{path}: {where} is not a conversation record '
                             '({"image", "conversations": [...]})')
    image = rec.get('image')
    if image is None:
        return None
    if not isinstance(image, str):
        raise MapSourceError(f'{path}: {where}: "image" must be one path, '
                             f'got {_describe(image)}')
    texts = [turn.get('value') for turn in rec['conversations']
             if isinstance(turn, dict) and turn.get('from') in ANSWER_ROLES]
    if not texts:
        raise MapSourceError(f'{path}: {where} ({image!r}) has no '
                             f'{"/".join(ANSWER_ROLES)} turn')
    return Entry(image, texts, where)


def _bounded_lines(f: IO[str], path: str, max_record: int
                   ) -> Iterator[str]:
    """The lines of ``f``, none longer than ``max_record`` (a file of zeros
    has one endless line)."""
    n = 0
    while True:
        line = f.readline(max_record + 1)
        if not line:
            return
        n += 1
        if len(line) > max_record:
            raise MapSourceError(f'{path}: line {n} is longer than '
                                 f'{_mib(max_record)} (no caption record is)'
                                 ' -- check the file, or raise '
                                 '--max-record-mb')
        yield line


def _iter_jsonl(f: IO[str], path: str, max_record: int, kind: str
                ) -> Iterator[Entry]:
    for lineno, line in enumerate(_bounded_lines(f, path, max_record), 1):
        if not line.strip():
            continue
        where = f'line {lineno}'
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise MapSourceError(f'{path}: {where} is not JSON ({e.msg})'
                                 ) from None
        except RecursionError:
            raise MapSourceError(f'{path}: {where} is nested too deeply to be'
                                 ' a caption record') from None
        entry = _llava_entry(rec, path, where) if kind == 'llava' \
            else _record_entry(rec, path, where)
        if entry is not None:
            yield entry


def _iter_json_list(stream: JsonStream, kind: str) -> Iterator[Entry]:
    for n in stream.items(']', 'the list'):
        where = f'record {n}'
        rec = stream.value(where)
        entry = _llava_entry(rec, stream.path, where) if kind == 'llava' \
            else _record_entry(rec, stream.path, where)
        if entry is not None:
            yield entry
    stream.end()


def _iter_json_map(stream: JsonStream) -> Iterator[Entry]:
    for n in stream.items('}', 'the object'):
        name = stream.value(f'name {n}')
        if not isinstance(name, str):
            raise MapSourceError(f'{stream.path}: not JSON (name {n} of the '
                                 f'object is {_describe(name)}, not a string)')
        stream.expect(':', f'after name {n}')
        yield Entry(name, stream.value(repr(name)), repr(name))
    stream.end()


def _iter_json(f: IO[str], path: str, max_record: int, kind: str
               ) -> Iterator[Entry]:
    stream = JsonStream(f, path, max_record)
    opening = stream.next_char()
    if opening == '[':
        yield from _iter_json_list(stream, kind)
    elif opening == '{' and kind == 'llava':
        f.seek(0)  # conversation records as JSON Lines
        yield from _iter_jsonl(f, path, max_record, kind)
    elif opening == '{':
        yield from _iter_json_map(stream)
    else:
        raise unknown_format(path, f'{opening!r} where JSON starts with '
                             "'{' or '['")


def _iter_coco(f: IO[str], path: str, max_record: int) -> Iterator[Entry]:
    """Annotations as entries named by their image's ``file_name``. The
    images come first in COCO's own files; if the annotations come first,
    the file is read a second time for them (memory stays one name per
    image, never the captions)."""
    names: Dict[Any, str] = {}
    later = False
    for section, stream in _coco_sections(f, path, max_record):
        if section == 'images':
            _read_coco_images(stream, names)
        elif names:
            yield from _coco_annotations(stream, names)
        else:
            later = True
            _skip_list(stream, 'annotation')
    if not names:
        raise MapSourceError(f'{path}: a COCO file with no "images" (each '
                             'needs "id" and "file_name")')
    if later:
        f.seek(0)
        for section, stream in _coco_sections(f, path, max_record):
            if section == 'annotations':
                yield from _coco_annotations(stream, names)
            else:
                _skip_list(stream, 'image')


def _coco_sections(f: IO[str], path: str, max_record: int
                   ) -> Iterator[Tuple[str, JsonStream]]:
    """``images`` and ``annotations`` with the stream at their list; every
    other top-level field is read and dropped."""
    stream = JsonStream(f, path, max_record)
    if stream.next_char() != '{':
        raise MapSourceError(f'{path}: a COCO captions file is a JSON object'
                             ' {"images": [...], "annotations": [...]}')
    for n in stream.items('}', 'the object'):
        name = stream.value(f'field {n}')
        stream.expect(':', f'after {name!r}')
        if name in ('images', 'annotations'):
            stream.expect('[', f'{name!r} is a list')
            yield name, stream
        else:
            stream.value(repr(name))
    stream.end()


def _skip_list(stream: JsonStream, what: str) -> None:
    for n in stream.items(']', f'the {what}s'):
        stream.value(f'{what} {n}')


def _read_coco_images(stream: JsonStream, names: Dict[Any, str]) -> None:
    for n in stream.items(']', 'the images'):
        where = f'image {n}'
        img = stream.value(where)
        if (not isinstance(img, dict) or 'id' not in img
                or not isinstance(img.get('file_name'), str)):
            raise MapSourceError(f'{stream.path}: {where} needs "id" and '
                                 '"file_name"')
        if img['id'] in names:
            raise MapSourceError(f'{stream.path}: {where}: image id '
                                 f'{img["id"]!r} appears twice')
        names[img['id']] = img['file_name']


def _coco_annotations(stream: JsonStream, names: Dict[Any, str]
                      ) -> Iterator[Entry]:
    for n in stream.items(']', 'the annotations'):
        where = f'annotation {n}'
        ann = stream.value(where)
        if not isinstance(ann, dict) or 'image_id' not in ann \
                or 'caption' not in ann:
            raise MapSourceError(f'{stream.path}: {where} needs "image_id" '
                                 'and "caption"')
        name = names.get(ann['image_id'])
        if name is None:
            raise MapSourceError(f'{stream.path}: {where}: image_id '
                                 f'{ann["image_id"]!r} is not in "images"')
        yield Entry(name, [ann['caption']], where)


def _iter_csv(f: IO[str], path: str, max_record: int) -> Iterator[Entry]:
    """Rows of a CSV: the columns its header names, else the first two."""
    old_limit = csv.field_size_limit(max_record)
    rows = csv.reader(_bounded_lines(f, path, max_record))
    try:
        yield from _csv_rows(rows, path)
    except csv.Error as e:
        raise MapSourceError(f'{path}: line {rows.line_num}: {e} -- check '
                             'the file, or raise --max-record-mb') from None
    finally:
        csv.field_size_limit(old_limit)


def _csv_rows(rows: Any, path: str) -> Iterator[Entry]:
    """Entries named by the line a row ends on (``rows.line_num``)."""
    head = next(rows, None)
    if head is None:
        return
    low = [c.strip().lower() for c in head]
    name_col = next((low.index(c) for c in NAME_FIELDS if c in low), None)
    text_col = next((low.index(c) for c in TEXT_FIELDS if c in low), None)
    if name_col is None or text_col is None:  # no header: data from line 1
        name_col, text_col = 0, 1
        yield from _csv_entries([(head, rows.line_num)], 0, 1, path)
    yield from _csv_entries(((row, rows.line_num) for row in rows),
                            name_col, text_col, path)


def _csv_entries(rows: Iterable[Tuple[List[str], int]], name_col: int,
                 text_col: int, path: str) -> Iterator[Entry]:
    for row, line in rows:
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(name_col, text_col):
            raise MapSourceError(f'{path}: line {line} has no caption column '
                                 f'(it has {len(row)} column(s))')
        yield Entry(row[name_col], row[text_col], f'line {line}')


def source_format(path: str, fmt: str = 'auto',
                  max_record: int = DEFAULT_MAX_RECORD) -> str:
    """``fmt`` when it names a format, else (``auto``) the format of
    ``path`` by its content."""
    if fmt == 'auto':
        return detect_format(path, max_record)
    if fmt not in FORMATS:
        raise MapSourceError(f'unknown --format {fmt!r} (auto, '
                             f'{", ".join(FORMATS)})')
    return fmt


def read_entries(path: str, fmt: str, max_record: int = DEFAULT_MAX_RECORD
                 ) -> Iterator[Entry]:
    """The entries of ``path`` in format ``fmt``, read as a stream."""
    with open_source(path, newline='' if fmt == 'csv' else None) as f:
        if fmt == 'csv':
            yield from _iter_csv(f, path, max_record)
        elif fmt == 'coco':
            yield from _iter_coco(f, path, max_record)
        elif fmt == 'jsonl':
            yield from _iter_jsonl(f, path, max_record, 'record')
        else:
            yield from _iter_json(f, path, max_record,
                                  'llava' if fmt == 'llava' else 'record')
