"""Join the outputs of ``--shard i/N`` runs into one descriptions file.

Streams: only the set of keys already written is held in memory, not the
texts. The first success of a key wins (shards are disjoint, so a second one
only appears when parts overlap); a key with no success anywhere keeps its
latest failure, so the merged file still says what is left to redo.
"""
from __future__ import annotations

import os
from typing import Dict, Sequence

from gpt4image_mm.utils.descriptions import (
    DescriptionWriter,
    KeyStates,
    is_descriptions_file,
    iter_records,
    read_source,
    source_path,
)
from gpt4image_mm.utils.errors import InputError
from gpt4image_mm.utils.files import (
    atomic_path,
    atomic_write_json,
    check_replaceable,
    real_path,
    same_path,
)


def merge(out: str, parts: Sequence[str], overwrite: bool = False) -> Dict[
        str, int]:
    """Write ``out`` from ``parts``; returns counts (successes, failures,
    duplicate successes dropped)."""
    if not parts:
        raise InputError('merge: no input files')
    for p in parts:
        if not os.path.isfile(p):
            raise InputError(f'merge: no such file {p}')
        if same_path(p, out):
            raise InputError(f'merge: {out} is also an input ({p})')
    out = real_path(out)  # written through a link, its sidecar beside it
    if os.path.exists(out) and not overwrite:
        raise InputError(f'merge: {out} exists (pass --overwrite)')
    check_replaceable(out, is_descriptions_file, 'a descriptions file')
    states = KeyStates()
    dupes = 0
    with atomic_path(out) as tmp, \
            DescriptionWriter(tmp, fsync_every=4096) as w:
        for p in parts:
            for _, rec in iter_records(p):
                if states.add(rec):
                    w.write(rec)
                elif 'error' not in rec:
                    dupes += 1
        for rec in states.failed.values():
            w.write(rec)
    sources = [read_source(p) for p in parts]
    if sources[0] and all(s == sources[0] for s in sources):
        atomic_write_json(source_path(out), sources[0], indent=1)
    elif os.path.exists(source_path(out)):  # parts of unknown/mixed origin
        os.remove(source_path(out))
    return {'successes': len(states.done), 'failures': len(states.failed),
            'duplicates_dropped': dupes}
