"""Descriptions JSON Lines: the one home of the format caption.py writes and
embed.py reads.

One record per line, append-only. A success record has ``key`` and ``text``
(plus ``model``, ``prompt_id``, ``usage``, ``time``); a failure record has
``key`` and ``error``. A later success for a key supersedes earlier failures;
writers never emit a second success for a key, except a repair pass
(``caption.py --redo-keys``) and a rerun whose class names changed, whose
answers carry ``"redo": true`` and supersede the key's earlier success (the
rules live in :class:`KeyStates`). A repair pass's answers also carry
``"redo_pass"``, the pass they belong to, so an interrupted pass continues
with the keys it has not yet redone (:meth:`KeyStates.redo_pass`).
Every record goes through :func:`gpt4image_mm.utils.security.scrub_record`
as it is written: a key a server echoed never reaches the file.
A torn last line (a crash in the middle of a write) is tolerated on read
and cut off before appending; a complete last record that only lacks its
newline is kept by both.
Files are read as a stream: memory does not grow with their size.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import (
    Any,
    Collection,
    Dict,
    Iterable,
    Iterator,
    Optional,
    Set,
    Tuple,
)

from gpt4image_mm.utils.errors import InputError
from gpt4image_mm.utils.keys import check_key
from gpt4image_mm.utils.security import scrub, scrub_record

# A description longer than this is almost surely garbage (the paper's are
# ~100 words); text encoders truncate to 77-512 tokens anyway. The one limit
# of writer (:func:`clip_text`), reader and embedder.
MAX_TEXT_CHARS = 100_000


def supersedes(rec: Dict[str, Any]) -> bool:
    """Whether a success record replaces its key's earlier success: the
    answers of a repair pass (``caption.py --redo-keys``) do."""
    return 'error' not in rec and rec.get('redo') is True


def clip_text(text: str) -> Tuple[str, bool]:
    """``(text cut to MAX_TEXT_CHARS, whether it was cut)``: what a writer
    does with an over-long answer so no reader rejects its record."""
    if len(text) <= MAX_TEXT_CHARS:
        return text, False
    return text[:MAX_TEXT_CHARS].rstrip(), True


class DescriptionFileError(InputError):
    """A descriptions file holds a record we cannot use (file and line named)."""


def _parse_line(path: str, lineno: int, raw: bytes) -> Dict[str, Any]:
    where = f'{path}:{lineno}: '
    try:
        line = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise DescriptionFileError(f'{where}not UTF-8 ({e.reason} at byte '
                                   f'{e.start})') from None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DescriptionFileError(f'{where}not a JSON record ({e.msg})') from None
    except RecursionError:  # [[[[... a million deep
        raise DescriptionFileError(f'{where}not a usable JSON record (nested '
                                   'too deeply)') from None
    except ValueError as e:  # a 5000-digit number
        raise DescriptionFileError(f'{where}not a usable JSON record '
                                   f'({str(e).split(";")[0]})') from None
    if not isinstance(rec, dict):
        raise DescriptionFileError(f'{where}a record must be a JSON object')
    check_record(rec, where)
    return rec


def check_record(rec: Dict[str, Any], where: str = '') -> None:
    """What every record must hold (reader and writer: one rule), else
    :class:`DescriptionFileError` prefixed by ``where``."""
    try:
        check_key(rec.get('key'))
        for field in ('key', 'text'):  # a lone "\ud800" escape
            if isinstance(rec.get(field), str):
                rec[field].encode('utf-8')
    except UnicodeEncodeError:
        raise DescriptionFileError(
            f'{where}record {rec["key"]!r}: its {field} holds a lone '
            'surrogate escape (not Unicode text)') from None
    except ValueError as e:
        raise DescriptionFileError(f'{where}{e}') from None
    if 'error' not in rec:
        text = rec.get('text')
        if not isinstance(text, str) or not text.strip():
            raise DescriptionFileError(
                f'{where}record {rec["key"]!r} has an empty or missing "text" '
                '(failures must carry "error")')
        if len(text) > MAX_TEXT_CHARS:
            raise DescriptionFileError(
                f'{where}record {rec["key"]!r}: text of {len(text)} characters '
                f'exceeds {MAX_TEXT_CHARS}')


def iter_records(path: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """Yield ``(line number, record)``, streaming (memory does not grow with
    the file). A last line without its newline is yielded when it is a
    complete record and skipped when torn -- exactly what
    :class:`DescriptionWriter` keeps and cuts (:func:`_usable_tail`)."""
    with open(path, 'rb') as f:
        for lineno, raw in enumerate(f, 1):
            if raw.endswith(b'\n'):
                if raw.strip():
                    yield lineno, _parse_line(path, lineno, raw[:-1])
            elif raw.strip():
                rec = _usable_tail(path, lineno, raw)
                if rec is not None:
                    yield lineno, rec


def _usable_tail(path: str, lineno: int, raw: bytes
                 ) -> Optional[Dict[str, Any]]:
    """The record of a last line without newline, or None if it is torn.

    One rule for reader and writer: a complete, valid record is kept (the
    writer appends the missing newline), anything else is a crash-torn
    write that the writer cuts.
    """
    try:
        return _parse_line(path, lineno, raw)
    except DescriptionFileError:
        return None


def is_descriptions_file(path: str) -> bool:
    """Whether ``path`` is a descriptions file (empty, or its first line is a
    record): what ``--force`` / ``--overwrite`` may replace."""
    if not os.path.isfile(path):
        return False
    with open(path, 'rb') as f:
        first = f.readline()
    if not first.strip():
        return os.path.getsize(path) == len(first)
    try:
        _parse_line(path, 1, first.rstrip(b'\n'))
    except DescriptionFileError:
        return False
    return True


def read_descriptions(path: str,
                      on_duplicate: str = 'error') -> Dict[str, Dict[str, Any]]:
    """Successful records by key, in first-seen order.

    ``on_duplicate``: a key with two different successful texts is an
    ``'error'`` (names both lines), or ``'first'`` / ``'last'`` wins.
    """
    out: Dict[str, Dict[str, Any]] = {}
    seen_at: Dict[str, int] = {}
    for lineno, rec in iter_records(path):
        if 'error' in rec:
            continue
        key = rec['key']
        if key in out and supersedes(rec):
            out[key] = rec
            seen_at[key] = lineno
            continue
        if key in out:
            if out[key]['text'] == rec['text'] or on_duplicate == 'first':
                continue
            if on_duplicate == 'error':
                raise DescriptionFileError(
                    f'{path}:{lineno}: duplicate key {key!r} with a different '
                    f'text (first at line {seen_at[key]}); pass '
                    "on_duplicate='first' or 'last' to choose")
        out[key] = rec
        seen_at[key] = lineno
    return out


class KeyStates:
    """Where each key stands after a stream of records: the format's one
    "latest record per key" rule, used by every reader that folds records.

    A key's first success holds (later successes are duplicates, for the
    caller to drop or refuse) until a repair answer (:func:`supersedes`)
    replaces it; a failure stands only while no success has been seen, and
    the latest failure is the one kept. ``done`` maps each key with a
    success to the prompt id of its current text; ``redone`` maps the keys
    a repair pass answered to those passes. Keeps keys, (interned) prompt
    ids and failure records only, so a 1.3M-record file folds in little
    memory.
    """

    def __init__(self) -> None:
        self.done: Dict[str, str] = {}
        self.failed: Dict[str, Dict[str, Any]] = {}
        self.redone: Dict[str, Set[str]] = {}

    def add(self, rec: Dict[str, Any]) -> bool:
        """Fold one record; True when it is now its key's text (the first
        success, or a repair answer that supersedes it)."""
        key = rec['key']
        if 'error' in rec:
            if key not in self.done:
                self.failed[key] = rec
            return False
        if key in self.done and not supersedes(rec):
            return False
        self.succeed(key, rec.get('prompt_id'), rec.get('redo_pass'))
        return True

    def succeed(self, key: str, prompt_id: Any = '',
                redo_pass: Any = None) -> None:
        """``key`` now has a success (asked with ``prompt_id``; by the
        repair pass ``redo_pass``, if one)."""
        self.done[key] = sys.intern(prompt_id if isinstance(prompt_id, str)
                                    else '')
        self.failed.pop(key, None)
        if isinstance(redo_pass, str) and redo_pass:
            self.redone.setdefault(key, set()).add(sys.intern(redo_pass))

    def fail(self, key: str, error: str) -> None:
        self.add({'key': key, 'error': error})

    def redo_pass(self, keys: Collection[str],
                  listed: Collection[str]) -> Tuple[str, Set[str]]:
        """The repair pass that asks ``keys`` (the keys of the key list
        ``listed`` this run can ask) and those of them it has answered.

        A pass is named by the list (a digest of its keys) and a count:
        while some of ``keys`` have no answer of the latest pass of this
        list, that pass continues (an interrupted or failed pass, rerun);
        once all have one, the same list starts the next pass."""
        digest = keys_digest(listed)
        prefix = digest + '-'
        latest = max((int(p[len(prefix):]) for k in keys
                      for p in self.redone.get(k, ())
                      if p.startswith(prefix) and p[len(prefix):].isdigit()),
                     default=0)
        if latest:
            name = f'{digest}-{latest}'
            answered = {k for k in keys if name in self.redone.get(k, ())}
            if len(answered) < len(set(keys)):
                return name, answered
        return f'{digest}-{latest + 1}', set()

    @classmethod
    def load(cls, path: str) -> KeyStates:
        """The states of an existing file (empty when it does not exist)."""
        states = cls()
        if os.path.exists(path):
            for _, rec in iter_records(path):
                states.add(rec)
        return states


def keys_digest(keys: Iterable[str]) -> str:
    """A short, order-independent name of a set of keys."""
    h = hashlib.sha1()
    for key in sorted(set(keys)):
        h.update(key.encode('utf-8', 'surrogateescape') + b'\n')
    return h.hexdigest()[:12]


SOURCE_SUFFIX = '.source.json'


def source_path(path: str) -> str:
    """The provenance sidecar of a descriptions file."""
    return path + SOURCE_SUFFIX


def read_source(path: str) -> Optional[Dict[str, Any]]:
    """What the descriptions at ``path`` were made from (``root``: real path
    of the image / data root, ``split``), or None when unknown."""
    try:
        with open(source_path(path), encoding='utf-8') as f:
            src = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DescriptionFileError(f'{source_path(path)}: unreadable '
                                   f'({e})') from None
    return src if isinstance(src, dict) else None


def record_source(path: str, source: Optional[Dict[str, Any]]) -> None:
    """Record (or check) the dataset the descriptions at ``path`` describe.

    Keys are relative to an image root, so appending descriptions of another
    folder with the same layout would mix two datasets silently: refused.
    """
    if not source:
        return
    old = read_source(path)
    if old is None:
        from gpt4image_mm.utils.files import atomic_write_json
        atomic_write_json(source_path(path), source, indent=1)
    elif (old.get('root'), old.get('split')) != (source.get('root'),
                                                 source.get('split')):
        raise DescriptionFileError(
            f'{path} holds descriptions of {old} (see '
            f'{source_path(path)}), not of {source}; write to another --out')


def texts_checksum(records: Iterable[Tuple[str, str]]) -> str:
    """Order-independent checksum of (key, text) pairs: the store's source id."""
    h = hashlib.sha256()
    for key, text in sorted(records):
        h.update(key.encode('utf-8') + b'\0' + text.encode('utf-8') + b'\0')
    return 'sha256:' + h.hexdigest()


def _last_line_start(f: Any, size: int, chunk: int = 1 << 16) -> int:
    """Offset just after the last newline of an open binary file (0: none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        nl = f.read(pos - start).rfind(b'\n')
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0


class DescriptionWriter:
    """Append records to a JSONL file, flushed per record, crash-safe.

    Opening cuts a torn last line. Use as a context manager.
    """

    def __init__(self, path: str, fsync_every: int = 64):
        self.path = path
        self.fsync_every = fsync_every
        self._pending = 0
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._repair_tail()
        self._f = open(path, 'ab')

    def _repair_tail(self) -> None:
        """Make the file end with a newline before appending: a complete
        last record gets its newline, a torn one is cut (as the reader
        decides, :func:`_usable_tail`)."""
        if not os.path.exists(self.path):
            return
        with open(self.path, 'rb+') as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b'\n':
                return
            start = _last_line_start(f, size)
            f.seek(start)
            tail = f.read(size - start)
            if _usable_tail(self.path, 0, tail) is not None:
                f.write(b'\n')
            else:
                f.truncate(start)
            f.flush()
            os.fsync(f.fileno())

    def write(self, record: Dict[str, Any]) -> None:
        """Append one record, scrubbed of secrets (every field but the
        key, which names the user's own file); :class:`DescriptionFileError`
        (nothing written) for one a reader would reject or UTF-8 cannot
        hold."""
        check_record(record, f'{self.path}: ')
        line = json.dumps(record, ensure_ascii=False) + '\n'
        if scrub.finds(line):  # rare: re-made from the scrubbed fields
            record = scrub_record(record)
            check_record(record, f'{self.path}: ')
            line = json.dumps(record, ensure_ascii=False) + '\n'
        try:
            data = line.encode('utf-8')
        except UnicodeEncodeError as e:
            raise DescriptionFileError(
                f'{self.path}: record {record["key"]!r} is not valid Unicode '
                f'({e.reason} at character {e.start})') from None
        self._f.write(data)
        self._f.flush()
        self._pending += 1
        if self._pending >= self.fsync_every:
            self.sync()

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._pending = 0

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()

    def __enter__(self) -> DescriptionWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
