"""``gpt4image configs``: the configs that ship with the package, by the
name a config inherits them with (``gpt4image_mm::NAME``).

    gpt4image configs                     # the table: name, kind, model, ...
    gpt4image configs cifar --json        # one JSON object per match
    gpt4image configs --show gpt4image/gpt4image_resnet18_8xb16_cifar100.py

``--show`` prints one config with its bases merged, as training reads it
(mmpretrain's ``tools/misc/print_config.py``); it is the only mode that
imports MMEngine.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
from importlib.resources import files
from typing import Dict, List

from gpt4image_mm.utils.errors import ToolError

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
    p.add_argument('--show', metavar='CONFIG',
                   help='print this config with its bases merged (a shipped '
                   'NAME, gpt4image_mm::NAME, mmpretrain::NAME or a file)')
    p.set_defaults(handler=run)
    return p


def show(config: str) -> str:
    """The merged text of ``config``: a bare shipped name is read as
    ``gpt4image_mm::NAME``."""
    from gpt4image_mm.utils.config import load_config
    if '::' not in config and not osp.exists(config):
        if not osp.isfile(osp.join(CONFIG_ROOT, config)):
            raise ToolError(f'{config}: no such file or shipped config -- '
                            '`gpt4image configs` lists the shipped ones')
        config = f'gpt4image_mm::{config}'
    return load_config(config).pretty_text


def run(args: argparse.Namespace) -> int:
    if args.show:
        print(show(args.show))
        return 0
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
