"""``gpt4image configs``: the configs that ship with the package, by the
name a config inherits them with (``gpt4image_mm::NAME``)."""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
from importlib.resources import files
from typing import Dict, List

# where the wheel ships them and MMEngine looks for them (as mmpretrain's)
CONFIG_ROOT = str(files('gpt4image_mm') / '.mim' / 'configs')


def shipped_configs() -> List[str]:
    """Every shipped config, as ``gpt4image_mm::`` names (sorted)."""
    names = []
    for folder, dirs, names_here in os.walk(CONFIG_ROOT):
        dirs.sort()
        for f in sorted(names_here):
            if f.endswith('.py'):
                names.append(osp.relpath(osp.join(folder, f), CONFIG_ROOT))
    return names


def describe(name: str) -> Dict[str, str]:
    """Model, data and schedule of a config, read off its file name
    (``{algo}_{model}_{training}_{data}.py``, mmpretrain's convention);
    bases (``_base_/``) are parts to inherit, not recipes."""
    stem = osp.splitext(osp.basename(name))[0]
    if name.startswith('_base_/'):
        return dict(name=name, kind='base', model='', schedule='', data='')
    parts = stem.split('_')
    kind = 'recipe' if parts[0].startswith('gpt4image') else 'baseline'
    if kind == 'recipe' and len(parts) > 1:
        parts = parts[1:]
    model, data = parts[0], parts[-1] if len(parts) > 1 else ''
    schedule = '_'.join(parts[1:-1])
    return dict(name=name, kind=kind, model=model, schedule=schedule,
                data=data)


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument('pattern', nargs='?', default='',
                   help='only names matching this regular expression')
    p.add_argument('--json', action='store_true',
                   help='one JSON object per config instead of a table')
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    rows = [describe(n) for n in shipped_configs()
            if re.search(args.pattern, n)]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    cols = ('name', 'kind', 'model', 'schedule', 'data')
    width = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in cols}
    print('  '.join(c.ljust(width[c]) for c in cols).rstrip())
    for r in rows:
        print('  '.join(r[c].ljust(width[c]) for c in cols).rstrip())
    print(f'\n{len(rows)} configs; inherit one with '
          "_base_ = ['gpt4image_mm::NAME'] (docs/configs.md)")
    return 0
