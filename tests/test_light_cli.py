"""The ``gpt4image`` command and the ``tools/*.py`` scripts start light:
their text-only commands import no torch, mmengine, mmpretrain or
transformers (seconds and ~900 MB each), and the modules a config's
``custom_imports`` names register everything.

Each command runs as the console script runs it (``from
gpt4image_mm.cli.main import main``) or as ``python tools/X.py`` runs the
script, in its own process, which reports its ``sys.modules``."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, make_image_folder, random_store

HEAVY = ('torch', 'mmengine', 'mmpretrain', 'transformers', 'mmcv')

# pip's console script for ``gpt4image = gpt4image_mm.cli.main:main``, plus a
# report of the heavy stacks the process imported, written at exit.
PROBE = f'''
import atexit, json, sys
report, sys.argv = sys.argv[1], ['gpt4image', *sys.argv[2:]]
atexit.register(lambda: open(report, 'w').write(json.dumps(
    sorted(m for m in {HEAVY!r} if m in sys.modules))))
from gpt4image_mm.cli.main import main
sys.exit(main())
'''
# ``python tools/SCRIPT ARGS``, reporting the same way.
TOOL_PROBE = PROBE.replace("['gpt4image', *sys.argv[2:]]", 'sys.argv[2:]').replace(
    'from gpt4image_mm.cli.main import main\nsys.exit(main())',
    'import runpy\nrunpy.run_path(sys.argv[0], run_name="__main__")')

# ``gpt4image`` subcommand -> (script, first words) of its tools/ spelling
TOOLS = {'caption': ['caption.py'], 'caption-merge': ['caption.py', 'merge'],
         'import-map': ['embed.py', 'import-map'],
         'analyze': ['analyze_descriptions.py']}


def gpt4image(tmp_path, *args, env_extra=None, script=None):
    """``gpt4image ARGS`` (or ``python tools/SCRIPT ARGS``): (process,
    heavy modules it imported)."""
    report = tmp_path / 'modules.json'
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    probe, args = ((PROBE, args) if script is None else
                   (TOOL_PROBE, [ROOT / 'tools' / script, *args]))
    proc = subprocess.run([sys.executable, '-c', probe, str(report),
                           *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, json.loads(report.read_text())


def light(tmp_path, *args, **kw):
    """Run a command that must succeed without any heavy stack."""
    proc, heavy = gpt4image(tmp_path, *args, **kw)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert heavy == [], f'{kw.get("script") or "gpt4image"} ' \
        f'{" ".join(map(str, args))} imported {heavy}'
    return proc


def spelling(tools: bool):
    """``light`` for ``gpt4image NAME ARGS`` or its ``tools/`` script."""
    def run(tmp_path, name, *args):
        if not tools:
            return light(tmp_path, name, *args)
        script, *words = TOOLS[name]
        return light(tmp_path, *words, *args, script=script)
    return run


@pytest.mark.parametrize('args', [['--help'], ['caption', '--help'],
                                  ['analyze', '--help'],
                                  ['import-map', '--help'], ['--version']])
def test_help_imports_no_heavy_stack(tmp_path, args):
    out = light(tmp_path, *args).stdout
    assert 'gpt4image' in out


@pytest.mark.parametrize('script', sorted(
    p.name for p in (ROOT / 'tools').glob('*.py')))
def test_every_tool_script_help_imports_no_heavy_stack(tmp_path, script):
    """The documented ``python tools/X.py`` commands start as light as
    ``gpt4image X``, first words included (``embed.py merge``)."""
    words = [[]] + [[w] for w in {'caption.py': ['merge'], 'embed.py': [
        'merge', 'import-map', 'import-gpt4image',
        'import-gpt4image-embeddings']}.get(script, [])]
    for first in words:
        out = light(tmp_path, *first, '--help', script=script).stdout
        assert out.startswith(f'usage: {" ".join([script, *first])} ')


@pytest.mark.parametrize('tools', [False, True], ids=['gpt4image', 'tools'])
def test_caption_merge_import_map_analyze_import_no_heavy_stack(
        tmp_path, serve, tools):
    """A real caption run against a local OpenAI-wire server, then the
    text-only commands on its output, as ``gpt4image`` subcommands and as
    ``tools/*.py`` scripts."""
    light = spelling(tools)
    root = tmp_path / 'imgs'
    keys = make_image_folder(root, per_class=1, size=8)
    fake, url = serve()
    parts = []
    for i in range(2):  # two shards, so that caption-merge has work
        parts.append(tmp_path / f'part{i}.jsonl')
        proc = light(tmp_path, 'caption', '--images', root, '--model', 'm',
                     '--base-url', url, '--out', parts[-1], '--shard',
                     f'{i}/2', '--no-progress')
        assert json.loads(proc.stdout.splitlines()[-1])['ok']
    assert fake.n_requests == len(keys)
    merged = tmp_path / 'merged.jsonl'
    light(tmp_path, 'caption-merge', merged, *parts)
    assert sorted(json.loads(ln)['key'] for ln in
                  merged.read_text().splitlines()) == sorted(keys)

    table = tmp_path / 'names.csv'
    table.write_text('key,text\ncat,A small cat.\ndog,A loyal dog.\n',
                     encoding='utf-8')
    light(tmp_path, 'import-map', table, '--out', tmp_path / 'cls.jsonl',
          '--class-level')
    light(tmp_path, 'analyze', tmp_path / 'cls.jsonl', '--per-class',
          '--out', tmp_path / 'report', '--no-figures', '--no-progress')
    metrics = json.loads((tmp_path / 'report' / 'metrics.json').read_text())
    assert metrics['descriptions']['descriptions'] == 2


def test_analyze_with_a_store_under_the_light_start(tmp_path):
    """With a store, analyze imports what it needs where it needs it."""
    desc = tmp_path / 'cls.jsonl'
    desc.write_text(''.join(json.dumps(
        {'key': f'class:{c}#{k}', 'text': f'A photo of a {c}, view {k}.',
         'model': 'm'}) + '\n' for c in ('cat', 'dog') for k in range(3)),
        encoding='utf-8')
    random_store(tmp_path / 'store', [f'class:{c}#{k}' for c in ('cat', 'dog')
                                      for k in range(3)])
    proc, heavy = gpt4image(tmp_path, 'analyze', desc, '--per-class',
                            '--store', tmp_path / 'store', '--out',
                            tmp_path / 'report', '--no-figures',
                            '--no-progress')
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / 'report' / 'metrics.json').read_text())
    assert metrics['descriptions']['store_rows'] == 6
    assert 'torch' in heavy


def test_a_command_with_a_config_under_the_light_start(tmp_path):
    """caption --config builds its dataset through mmpretrain's registry,
    from a config whose custom_imports name the (lightly imported)
    package; --cfg-options (mmengine's DictAction, imported when given)
    points it at the real folder."""
    root = tmp_path / 'imgs'
    make_image_folder(root, per_class=1, size=8)
    config = tmp_path / 'cfg.py'
    config.write_text(
        "custom_imports = dict(imports=['gpt4image_mm'], "
        'allow_failed_imports=False)\n'
        "default_scope = 'mmpretrain'\n"
        'train_dataloader = dict(dataset=dict(\n'
        "    type='DescriptionDataset', descriptions='d.jsonl',\n"
        "    dataset=dict(type='CustomDataset', data_root='nowhere',\n"
        '                 pipeline=[])))\n', encoding='utf-8')
    proc, heavy = gpt4image(tmp_path, 'caption', '--config', config,
                            '--cfg-options',
                            f'train_dataloader.dataset.dataset.data_root={root}',
                            '--model', 'gpt-4o-mini', '--out',
                            tmp_path / 'd.jsonl', '--dry-run',
                            '--no-progress')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)['requests'] == 3
    assert 'mmpretrain' in heavy


def test_other_commands_register_first(tmp_path):
    """strip runs after the package's registration, which allow-lists
    MMEngine's ``HistoryBuffer`` for safe loading: a real training
    checkpoint (message hub included) strips under the light start. The
    checkpoint is written in this process (torch is here already), the
    command in its own."""
    import torch
    from mmengine.logging import HistoryBuffer
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {}, 'state_dict': {
        'backbone.w': torch.ones(2), 'align_neck.fc.weight': torch.ones(2)},
        'message_hub': {'log_scalars': {'loss': HistoryBuffer([1.0], [1])}}},
        ckpt)
    proc, heavy = gpt4image(tmp_path, 'strip', ckpt, tmp_path / 'deploy.pth')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'removed 1 training-only tensors' in proc.stdout
    assert {'torch', 'mmpretrain'} <= set(heavy)


def test_custom_imports_register_every_component(tmp_path):
    """The modules the base config's ``custom_imports`` names register every
    component (what MMEngine's own Runner relies on)."""
    base = (ROOT / 'configs' / '_base_' / 'gpt4image.py').read_text()
    custom = base[base.index('custom_imports'):base.index(')', base.index(
        'custom_imports')) + 1]
    config = tmp_path / 'cfg.py'
    config.write_text(custom + '\n', encoding='utf-8')
    code = f'''
from mmengine.config import Config
Config.fromfile({str(config)!r})
from mmpretrain.registry import DATASETS, HOOKS, MODELS
for registry, name in [(DATASETS, 'DescriptionDataset'),
                       (MODELS, 'TextAlignedClassifier'),
                       (MODELS, 'TextAlignedDataPreprocessor'),
                       (MODELS, 'AlignmentNeck'),
                       (MODELS, 'ContrastiveAlignLoss'),
                       (MODELS, 'TextEmbeddingTeacher'),
                       (HOOKS, 'StoreIdentityHook'),
                       (HOOKS, 'CheckpointShapeHook'),
                       (HOOKS, 'TrainProgressHook')]:
    assert name in registry.module_dict, name
print('registered')
'''
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, '-c', code], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == 'registered', proc.stderr[-3000:]


def test_importing_the_package_loads_no_heavy_stack():
    """``import gpt4image_mm`` and its helpers load no torch, MMEngine or
    mmpretrain: the package has one job at import, its version."""
    code = ('import sys, gpt4image_mm, gpt4image_mm.utils.keys, '
            'gpt4image_mm.utils.descriptions, gpt4image_mm.cli.main\n'
            f'print(sorted(m for m in {HEAVY!r} if m in sys.modules))')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, '-c', code], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == '[]', out.stderr
