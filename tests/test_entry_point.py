"""The one console entry point ``gpt4image``: every subcommand is there,
and a subcommand gives what its ``tools/*.py`` script gives (real
all-MiniLM-L6-v2, real subprocesses)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, make_image_folder

from gpt4image_mm.cli.main import COMMANDS, main
from gpt4image_mm.utils.assets import minilm_dir
from gpt4image_mm.version import __version__

CLASSES = {'cat': ['A tabby cat asleep on a windowsill.',
                   'A kitten chasing a ball of yarn.'],
           'ship': ['A cargo ship on the open sea at dusk.',
                    'A ferry leaving a busy harbour.'],
           'car': ['A red sports car on a mountain road.',
                   'A taxi waiting at a city crossing.']}


def gpt4image(*args, cwd=ROOT):
    """``gpt4image ARGS`` as a user runs it: the console script's module,
    light start included (``python -m``: the shared venv's console script
    points at another checkout)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, '-m', 'gpt4image_mm.cli',
                           *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def tool(script, *args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / script),
                           *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_help_lists_every_subcommand_on_one_line_and_version():
    out = ok(gpt4image('--help')).stdout
    for name, cmd in COMMANDS.items():
        line = next(ln for ln in out.splitlines()
                    if ln.split()[:1] == [name] or ln.strip() == cmd.help)
        assert cmd.help in line or line.strip() == name, line
        assert cmd.help in out
    assert set(COMMANDS) >= {'caption', 'caption-merge', 'embed',
                             'embed-merge', 'import-gpt4image',
                             'import-gpt4image-embeddings', 'import-map',
                             'analyze', 'query', 'strip'}
    assert ok(gpt4image('--version')).stdout.strip() == \
        f'gpt4image {__version__}'
    none = gpt4image()
    assert none.returncode == 2 and 'COMMAND' in none.stderr


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, '--help'])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: gpt4image {name} ')
    assert COMMANDS[name].help in ' '.join(out.split())


def test_installed_console_script_runs():
    """The script pip writes (skipped where this checkout is not the one
    installed into the venv running the tests)."""
    script = shutil.which('gpt4image', path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip('no gpt4image console script in this venv')
    out = ok(subprocess.run([script, '--help'], capture_output=True,
                            text=True, timeout=300)).stdout
    assert 'embed' in out and 'analyze' in out


def _descriptions(path):
    with open(path, 'w', encoding='utf-8') as f:
        for name, texts in CLASSES.items():
            for k, text in enumerate(texts):
                f.write(json.dumps({'key': f'class:{name}#{k}',
                                    'text': text, 'model': 'm'}) + '\n')
    return path


def test_embed_then_analyze_equals_the_tools(tmp_path):
    desc = _descriptions(tmp_path / 'd.jsonl')
    common = ['--encoder', minilm_dir(), '--device', 'cpu',
              '--store-dtype', 'float32', '--no-progress']
    ok(gpt4image('embed', desc, '--out', tmp_path / 'cli', *common))
    ok(tool('embed.py', desc, '--out', tmp_path / 'tool', *common))
    vec = {s: np.load(tmp_path / s / 'embeddings.npy') for s in ('cli',
                                                              'tool')}
    assert vec['cli'].shape == (6, 384)
    np.testing.assert_array_equal(vec['cli'], vec['tool'])
    reports = {}
    for name, run in (('cli', lambda *a: gpt4image('analyze', *a)),
                      ('tool', lambda *a: tool('analyze_descriptions.py',
                                               *a))):
        proc = ok(run(desc, '--per-class', '--store', tmp_path / 'cli',
                      '--out', tmp_path / f'report_{name}', '--no-figures',
                      '--no-progress'))
        # the same report, each in its own folder (the page's path)
        reports[name] = (proc.stdout.replace(
            str(tmp_path / f'report_{name}'), 'OUT'), json.loads(
            (tmp_path / f'report_{name}' / 'metrics.json').read_text()))
    assert reports['cli'] == reports['tool']
    assert reports['cli'][1]['descriptions']['store_rows'] == 6


def test_caption_dry_run_equals_the_tool(tmp_path):
    root = tmp_path / 'imgs'
    make_image_folder(root, per_class=2)
    args = ['--images', root, '--model', 'gpt-4o-mini', '--dry-run',
            '--no-progress']
    cli = ok(gpt4image('caption', '--out', tmp_path / 'a.jsonl', *args))
    script = ok(tool('caption.py', '--out', tmp_path / 'a.jsonl', *args))
    assert json.loads(cli.stdout) == json.loads(script.stdout)
    assert json.loads(cli.stdout)['requests'] == 6
    # caption's --custom-imports is read before parsing, here too
    bad = gpt4image('caption', '--custom-imports', 'no_such_backend_mod',
                    '--out', tmp_path / 'b.jsonl', *args)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith('error: ')
    assert 'no_such_backend_mod' in bad.stderr


def test_errors_are_one_line_with_the_project_exit_code(tmp_path):
    missing = tmp_path / 'missing.jsonl'
    for proc in (gpt4image('embed', missing, '--encoder', minilm_dir(),
                           '--out', tmp_path / 's', '--device', 'cpu'),
                 tool('embed.py', missing, '--encoder', minilm_dir(),
                      '--out', tmp_path / 's', '--device', 'cpu')):
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: ')
        assert str(missing) in lines[0]


def test_configs_lists_the_shipped_ones_and_names_a_missing_one(tmp_path):
    """``gpt4image configs PATTERN`` from another folder; ``--show`` of a
    name that is not shipped is one line and exit 2 (tests/test_wheel.py
    shows a real one with its bases merged)."""
    out = ok(gpt4image('configs', 'cifar100', cwd=tmp_path)).stdout
    rows = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines()[1:]
            if ln.strip() and not ln.startswith(('3 configs', 'name'))}
    assert rows == {
        'resnet18_8xb16_cifar100.py': ['baseline', 'resnet18', '8xb16',
                                       'cifar100'],
        'gpt4image/gpt4image_resnet18_8xb16_cifar100.py': [
            'recipe', 'resnet18', '8xb16', 'cifar100'],
        'gpt4image/gpt4image_resnet50_8xb16_cifar100.py': [
            'recipe', 'resnet50', '8xb16', 'cifar100']}, out
    bad = gpt4image('configs', '--show', 'gpt4image/no_such.py', cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        'error: gpt4image/no_such.py: no such file or shipped config -- ')
