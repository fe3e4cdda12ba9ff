"""A class's name in text: the one home of display names.

Folder datasets name their classes after directories (``saint_bernard``,
``Russian_Blue``, ImageNet's ``n01440764``); captions, prompts and reports
need the words a person writes ("Saint Bernard"). Every tool that puts a
class name into text (caption prompts, the analysis's class matching and
report, ``query`` class texts, the demo) calls :func:`display_names`, so one
rule holds everywhere:

* underscores read as spaces, case kept (``Russian_Blue`` -> "Russian Blue");
* a user's map (``--class-names FILE``) overrides it, for folders named by
  ids; :func:`read_class_name_map` reads a JSON object ``{folder: name}``, a
  CSV ``folder,name`` or one name per line in class order.

Keys, store rows and ``class:<name>`` keys keep the folder names: only text
changes. Names that are already words (mmpretrain's ImageNet, CIFAR, CUB
lists) pass through unchanged apart from the underscore rule.

Pure Python on purpose: the light command lines import it.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Dict, List, Mapping, Optional, Sequence

from gpt4image_mm.utils.errors import InputError


class ClassNameError(InputError):
    """A class-name map that does not fit the dataset's classes."""


def display_name(name: str) -> str:
    """The words of one class name: underscores as spaces, runs of
    whitespace as one space, case kept."""
    return ' '.join(str(name).replace('_', ' ').split())


def display_names(names: Sequence[str],
                  mapping: Optional[Mapping[str, str]] = None) -> List[str]:
    """Display names of ``names`` (folder names, in class order); a name in
    ``mapping`` takes the mapped text instead."""
    mapping = mapping or {}
    return [display_name(mapping.get(n, n)) for n in names]


def read_class_name_map(path: str, names: Sequence[str]) -> Dict[str, str]:
    """``{folder name: display name}`` from a user's file.

    The file is a JSON object ``{folder: name}``, a CSV whose rows are
    ``folder,name`` (a ``folder,name`` header is skipped), or one name per
    line in class order (as many lines as classes). A folder the dataset
    does not have is an error naming it: a typo would otherwise silently
    leave the folder name in every prompt.
    """
    try:
        with open(path, encoding='utf-8-sig') as f:
            text = f.read()
    except OSError as e:
        raise ClassNameError(f'{path}: cannot read ({e.strerror})') from None
    stripped = text.strip()
    if not stripped:
        raise ClassNameError(f'{path}: no class names')
    if stripped.startswith('{'):
        mapping = _json_map(path, stripped)
    elif _is_folder_csv(stripped, names):
        mapping = _csv_map(path, stripped)
    else:
        mapping = _line_map(path, stripped, names)
    unknown = [k for k in mapping if k not in set(names)]
    if unknown:
        raise ClassNameError(f'{path}: {len(unknown)} class(es) not in the '
                             f'dataset, e.g. {unknown[0]!r} (its classes: '
                             f'{_preview(names)})')
    return mapping


def _json_map(path: str, text: str) -> Dict[str, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClassNameError(f'{path}: not JSON ({e.msg}, line {e.lineno})'
                             ) from None
    bad = [k for k, v in data.items() if not isinstance(v, str)
           or not v.strip()]
    if bad:
        raise ClassNameError(f'{path}: the name of {bad[0]!r} must be a '
                             'non-empty string')
    return {str(k): v.strip() for k, v in data.items()}


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
    for n, (folder, name) in enumerate(rows, 1):
        folder, name = folder.strip(), name.strip()
        if not folder or not name:
            raise ClassNameError(f'{path}: row {n} needs folder,name')
        if folder in out:
            raise ClassNameError(f'{path}: folder {folder!r} appears twice')
        out[folder] = name
    return out


def _line_map(path: str, text: str, names: Sequence[str]) -> Dict[str, str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) != len(names):
        raise ClassNameError(f'{path}: {len(lines)} names, one per line, but '
                             f'the dataset has {len(names)} classes (or '
                             'give folder,name rows / a JSON object)')
    return dict(zip(names, lines))


def _preview(names: Sequence[str], n: int = 5) -> str:
    shown = ', '.join(map(repr, list(names)[:n]))
    return shown + (', ...' if len(names) > n else '')


def class_display_names(names: Sequence[str],
                        class_names_file: Optional[str] = None) -> List[str]:
    """The display names of ``names``, mapped by ``--class-names FILE``
    when one is given."""
    mapping = (read_class_name_map(class_names_file, names)
               if class_names_file else None)
    return display_names(names, mapping)


__all__ = ['ClassNameError', 'display_name', 'display_names',
           'read_class_name_map', 'class_display_names']
