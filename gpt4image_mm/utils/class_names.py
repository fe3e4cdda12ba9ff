"""A class's name in text: the one home of display names and synonyms.

Folder datasets name their classes after directories (``saint_bernard``,
``Russian_Blue``, ImageNet's ``n01440764``); captions, prompts and reports
need the words a person writes ("Saint Bernard"). Every tool that puts a
class name into text (caption prompts, the analysis's class matching and
report, ``query`` class texts, the demo) goes through this module, so one
rule holds everywhere:

* underscores read as spaces, case kept (``Russian_Blue`` -> "Russian Blue");
* a name is a comma-separated list of synonyms, as ImageNet writes them
  (``tench, Tinca tinca``): the **display name** is the first synonym
  ("tench"); where two classes share a first synonym, a class shows its
  first synonym no other class has (ImageNet's ``maillot`` /
  ``maillot, tank suit`` -> "maillot" / "tank suit");
* a user's file (``--class-names FILE``) overrides the names; its format is
  detected from its content (:data:`FORMATS`): a JSON object
  ``{folder: name}``, ImageNet's ``imagenet_class_index.json``
  (``{"0": ["n01440764", "tench"], ...}``), ImageNet's
  ``LOC_synset_mapping.txt`` (lines ``n01440764 tench, Tinca tinca``), a CSV
  ``folder,name`` or one name per line in class order. ImageNet's two files
  are matched by wnid to folders named by wnids, or by class index to a
  dataset whose classes are already words (mmpretrain's ``ImageNet``).

Public functions:

* :func:`class_display_names` ``(names, class_names_file=None) ->
  List[str]``: the display name of each class, in class order;
* :func:`class_synonyms` ``(names, class_names_file=None) ->
  List[List[str]]``: every name of each class, the display name first, then
  the other synonyms in the file's order (no repeats, case-insensitively).
  A text that says any of them names the class;
* :func:`read_class_name_map` ``(path, names) -> Dict[str, str]``: a file's
  ``{folder: name text}`` (the text may hold several synonyms);
* :func:`display_name` / :func:`display_names`: the underscore rule and the
  rule above without a file;
* :func:`id_like_names` / :func:`ids_warning`: names that are ids (wnids
  such as ``n01440764``, or digits), and the one warning line that names
  ``--class-names``. :func:`class_synonyms` (and so
  :func:`class_display_names`) logs that line once per process, so a
  command that shows or matches names need not.

Two classes with one display name make a prompt call dog images cats and
the analysis count every caption as naming "another class": when a user's
own map (JSON, CSV, one per line) does that, :class:`ClassNameError` names
the file and the duplicate; where the names come with the data
(mmpretrain's ImageNet list, ImageNet's own files: its two ``crane``
synsets), it is logged once and kept.

Keys, store rows and ``class:<name>`` keys keep the folder names: only text
changes. Pure Python on purpose: the light command lines import it.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from gpt4image_mm.utils.errors import InputError

logger = logging.getLogger(__name__)

WNID = re.compile(r'n\d{8}')
_LOC_LINE = re.compile(r'(n\d{8})\s+(\S.*)')

# format name -> how it looks (error messages and docs list these)
FORMATS = {
    'json': 'a JSON object {"<folder>": "<name>"}',
    'imagenet_class_index': 'imagenet_class_index.json '
                            '{"0": ["n01440764", "tench"], ...}',
    'loc_synset_mapping': 'LOC_synset_mapping.txt lines '
                          '"n01440764 tench, Tinca tinca"',
    'csv': 'CSV rows "<folder>,<name>"',
    'lines': 'one name per line in class order',
}
# Formats where the user wrote each name: a duplicate there is a mistake.
_OWN_NAMES = ('json', 'csv', 'lines')
_warned: set = set()


class ClassNameError(InputError):
    """A class-name file that does not fit the dataset's classes."""


# -- the rules -------------------------------------------------------------
def display_name(name: str) -> str:
    """The words of one name: underscores as spaces, runs of whitespace as
    one space, case kept (commas are kept: see :func:`synonyms_of`)."""
    return ' '.join(str(name).replace('_', ' ').split())


def synonyms_of(text: str) -> List[str]:
    """The synonyms of one name text (``tench, Tinca tinca``), each by
    :func:`display_name`, without repeats (case-insensitively)."""
    out: List[str] = []
    seen = set()
    for part in str(text).split(','):
        word = display_name(part)
        if word and word.casefold() not in seen:
            seen.add(word.casefold())
            out.append(word)
    return out


def _synonym_lists(names: Sequence[str],
                   mapping: Mapping[str, str]) -> List[List[str]]:
    """Each class's synonyms, its display name first (see the module doc:
    a shared first synonym gives way to one no other class has)."""
    lists = [synonyms_of(mapping.get(n, n)) or [display_name(n) or str(n)]
             for n in names]
    firsts: Dict[str, int] = {}
    owners: Dict[str, int] = {}
    for syns in lists:
        firsts[syns[0].casefold()] = firsts.get(syns[0].casefold(), 0) + 1
        for s in syns:
            owners[s.casefold()] = owners.get(s.casefold(), 0) + 1
    out = []
    for syns in lists:
        if firsts[syns[0].casefold()] > 1:
            own = [s for s in syns if owners[s.casefold()] == 1]
            if own:
                syns = [own[0]] + [s for s in syns if s != own[0]]
        out.append(syns)
    return out


def display_names(names: Sequence[str],
                  mapping: Optional[Mapping[str, str]] = None) -> List[str]:
    """Display names of ``names`` (folder names, in class order); a name in
    ``mapping`` takes the mapped text instead."""
    return [s[0] for s in _synonym_lists(names, mapping or {})]


# -- names that are ids ----------------------------------------------------
def id_like_names(names: Sequence[str]) -> List[str]:
    """The names that are ids rather than words: wnids (``n01440764``) or
    digits."""
    return [n for n in names
            if WNID.fullmatch(str(n)) or str(n).strip().isdigit()]


def ids_warning(names: Sequence[str]) -> Optional[str]:
    """One line saying that display names are ids and how to give words,
    or None when they are words."""
    ids = id_like_names(names)
    if not ids:
        return None
    return (f'warning: {len(ids)} of {len(names)} class names are ids, not '
            f'words (e.g. {ids[0]!r}): prompts and the analysis say them '
            'as they are -- give --class-names FILE (ImageNet\'s '
            'LOC_synset_mapping.txt or imagenet_class_index.json, a JSON '
            '{"<folder>": "<name>"}, CSV folder,name or one name per line)')


def _log_once(line: str) -> None:
    if line not in _warned:
        _warned.add(line)
        logger.warning(line)


# -- files -----------------------------------------------------------------
def read_class_name_map(path: str, names: Sequence[str]) -> Dict[str, str]:
    """``{folder name: name text}`` from a user's file (format detected
    from its content, :data:`FORMATS`). A folder the dataset does not have
    is an error naming it (a typo would otherwise silently leave the folder
    name in every prompt); ImageNet's files may list more synsets than the
    dataset has."""
    return _read_map(path, names)[0]


def _read_map(path: str, names: Sequence[str]) -> Tuple[Dict[str, str], str]:
    """The map and the name of its format."""
    try:
        with open(path, encoding='utf-8-sig') as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ClassNameError(f'{path}: not UTF-8 text ({e.reason} at byte '
                             f'{e.start}); {_known()}') from None
    except OSError as e:
        raise ClassNameError(f'{path}: cannot read ({e.strerror})') from None
    stripped = text.strip()
    if not stripped:
        raise ClassNameError(f'{path}: no class names')
    if stripped[0] in '{[':
        mapping, fmt = _json_map(path, stripped, names)
    elif _is_loc(stripped):
        mapping, fmt = _loc_map(path, stripped, names), 'loc_synset_mapping'
    elif _is_folder_csv(stripped, names):
        mapping, fmt = _csv_map(path, stripped), 'csv'
    else:
        mapping, fmt = _line_map(path, stripped, names), 'lines'
    if fmt in _OWN_NAMES:
        unknown = [k for k in mapping if k not in set(names)]
        if unknown:
            raise ClassNameError(
                f'{path}: {len(unknown)} class(es) not in the dataset, e.g. '
                f'{unknown[0]!r} (its classes: {_preview(names)})')
    return mapping, fmt


def _known() -> str:
    return 'known formats: ' + '; '.join(FORMATS.values())


def _json_map(path: str, text: str,
              names: Sequence[str]) -> Tuple[Dict[str, str], str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClassNameError(f'{path}: not JSON ({e.msg}, line {e.lineno})'
                             ) from None
    except RecursionError:
        raise ClassNameError(f'{path}: JSON nested too deeply') from None
    if not isinstance(data, dict):
        raise ClassNameError(f'{path}: unknown class-name format: found a '
                             f'JSON {type(data).__name__}; {_known()}')
    if data and all(_is_index_entry(k, v) for k, v in data.items()):
        return _class_index_map(path, data, names), 'imagenet_class_index'
    bad = [k for k, v in data.items() if not isinstance(v, str)
           or not v.strip()]
    if bad:
        found = type(data[bad[0]]).__name__
        raise ClassNameError(
            f'{path}: unknown class-name format: found a JSON object whose '
            f'value for {bad[0]!r} is a {found}, not a non-empty name; '
            f'{_known()}')
    return {str(k): v.strip() for k, v in data.items()}, 'json'


def _is_index_entry(key: Any, value: Any) -> bool:
    return (str(key).isdigit() and isinstance(value, list)
            and len(value) == 2 and all(isinstance(v, str) for v in value)
            and WNID.fullmatch(value[0]) is not None)


def _class_index_map(path: str, data: Dict[str, list],
                     names: Sequence[str]) -> Dict[str, str]:
    """``imagenet_class_index.json``: by wnid where the dataset's classes
    are wnids, else by class index."""
    by_wnid = {wnid: name.strip() for wnid, name in data.values()}
    if set(names) & set(by_wnid):
        return {n: by_wnid[n] for n in names if n in by_wnid}
    by_index = {int(k): v[1].strip() for k, v in data.items()}
    if len(by_index) == len(names) and set(by_index) == set(range(len(names))):
        return {n: by_index[i] for i, n in enumerate(names)}
    raise ClassNameError(
        f'{path}: an imagenet_class_index.json of {len(data)} classes whose '
        f'wnids name none of the dataset\'s {len(names)} classes (its '
        f'classes: {_preview(names)})')


def _is_loc(text: str) -> bool:
    return all(_LOC_LINE.fullmatch(ln.strip())
               for ln in text.splitlines() if ln.strip())


def _loc_map(path: str, text: str, names: Sequence[str]) -> Dict[str, str]:
    """``LOC_synset_mapping.txt``: by wnid where the dataset's classes are
    wnids, else in class order (the file lists synsets in index order)."""
    rows = [_LOC_LINE.fullmatch(ln.strip()).groups()  # type: ignore[union-attr]
            for ln in text.splitlines() if ln.strip()]
    by_wnid = dict(rows)
    if set(names) & set(by_wnid):
        return {n: by_wnid[n] for n in names if n in by_wnid}
    if len(rows) == len(names):
        return {n: row[1] for n, row in zip(names, rows)}
    raise ClassNameError(
        f'{path}: a LOC_synset_mapping.txt of {len(rows)} synsets whose wnids '
        f'name none of the dataset\'s {len(names)} classes (its classes: '
        f'{_preview(names)})')


def _csv_rows(text: str) -> List[List[str]]:
    return [r for r in csv.reader(io.StringIO(text)) if any(c.strip()
                                                           for c in r)]


def _is_folder_csv(text: str, names: Sequence[str]) -> bool:
    """``folder,name`` rows: a ``folder,name`` header, or two columns whose
    first is always a class folder (one name per line may hold commas:
    ImageNet's ``tench, Tinca tinca``)."""
    rows = _csv_rows(text)
    if [c.strip().lower() for c in rows[0]] == ['folder', 'name']:
        return True
    known = set(names)
    return all(len(r) == 2 and r[0].strip() in known for r in rows)


def _csv_map(path: str, text: str) -> Dict[str, str]:
    rows = _csv_rows(text)
    if [c.strip().lower() for c in rows[0]] == ['folder', 'name']:
        rows = rows[1:]
    out: Dict[str, str] = {}
    for n, row in enumerate(rows, 1):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ClassNameError(f'{path}: row {n} needs folder,name')
        folder, name = row[0].strip(), row[1].strip()
        if folder in out:
            raise ClassNameError(f'{path}: folder {folder!r} appears twice')
        out[folder] = name
    return out


def _line_map(path: str, text: str, names: Sequence[str]) -> Dict[str, str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) != len(names):
        raise ClassNameError(
            f'{path}: unknown class-name format: found {len(lines)} names, '
            f'one per line (first {lines[0][:60]!r}), but the dataset has '
            f'{len(names)} classes; {_known()}')
    return dict(zip(names, lines))


def _preview(names: Sequence[str], n: int = 5) -> str:
    shown = ', '.join(map(repr, list(names)[:n]))
    return shown + (', ...' if len(names) > n else '')


# -- what the tools call ---------------------------------------------------
def class_synonyms(names: Sequence[str],
                   class_names_file: Optional[str] = None
                   ) -> List[List[str]]:
    """Every name of each class (``names``: folder names or the dataset's
    own, in class order), mapped by ``--class-names FILE`` when given: per
    class, the display name first, then its other synonyms.

    Raises :class:`ClassNameError` when the user's map gives two classes
    one display name; logs (once) when names are ids or when names that
    came with the data share a display name.
    """
    mapping, fmt = (_read_map(class_names_file, names) if class_names_file
                    else ({}, None))
    lists = _synonym_lists(names, mapping)
    _check_unique(names, lists, class_names_file, fmt, mapping)
    line = ids_warning([s[0] for s in lists])
    if line:
        _log_once(line)
    return lists


def _check_unique(names: Sequence[str], lists: List[List[str]],
                  path: Optional[str], fmt: Optional[str],
                  mapping: Mapping[str, str]) -> None:
    by_name: Dict[str, List[int]] = {}
    for i, syns in enumerate(lists):
        by_name.setdefault(syns[0].casefold(), []).append(i)
    for idx in by_name.values():
        if len(idx) < 2:
            continue
        shown, folders = lists[idx[0]][0], [names[i] for i in idx]
        if fmt in _OWN_NAMES and any(f in mapping for f in folders):
            raise ClassNameError(
                f'{path}: {folders[0]!r} and {folders[1]!r} both have the '
                f'name {shown!r}: a prompt would say {shown!r} for both '
                'classes; give each class its own name')
        fix = (f'put another synonym first in {path}' if path
               else 'map them to distinct names with --class-names FILE')
        which = ', '.join(f'{names[i]!r} (class {i})' for i in idx)
        _log_once(f'warning: {len(idx)} classes share the name {shown!r} '
                  f'({which}): prompts and the analysis cannot tell them '
                  f'apart -- {fix}')


def class_display_names(names: Sequence[str],
                        class_names_file: Optional[str] = None) -> List[str]:
    """The display names of ``names``, mapped by ``--class-names FILE``
    when one is given (see :func:`class_synonyms`)."""
    return [s[0] for s in class_synonyms(names, class_names_file)]


__all__ = ['ClassNameError', 'FORMATS', 'display_name', 'display_names',
           'synonyms_of', 'class_synonyms', 'read_class_name_map',
           'class_display_names', 'id_like_names', 'ids_warning']
