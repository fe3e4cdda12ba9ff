"""The package as a pip user gets it: the wheel built from this checkout,
installed alone into an empty folder, used from another folder with the
checkout neither the working directory nor on ``sys.path``.

The wheel is built once per session (a module fixture) from a copy of the
working tree, so a stale ``build/`` of the checkout cannot leak into it.
The installed folder comes first on ``sys.path`` (``PYTHONPATH``); the
venv still provides torch, MMEngine and mmpretrain. Every step runs the
console script pip wrote from the wheel's entry point: embed real
descriptions with all-MiniLM-L6-v2, train a user config that inherits
``gpt4image_mm::_base_/gpt4image.py``, test its checkpoint, a 2-arm x
1-seed experiment (one of its ``--print-commands`` lines run by hand), a
shipped recipe read by its ``gpt4image_mm::`` name, and MMEngine's own
Runner in a plain script."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT, make_image_folder
from helpers import BASE_CFG

# What the wheel is built from; everything else (tests, docs, venvs, work
# dirs, earlier builds) stays behind.
SOURCES = ('setup.py', 'pyproject.toml', 'README.md', 'LICENSE',
           'model-index.yml', 'configs', 'gpt4image_mm')

# A user's own config in their own folder, written as mmpretrain users
# write one: mmpretrain's runtime plus the plugin's base, both by scope.
USER_CFG = BASE_CFG.replace(
    "_base_ = ['mmpretrain::_base_/default_runtime.py']",
    "_base_ = ['mmpretrain::_base_/default_runtime.py',\n"
    "          'gpt4image_mm::_base_/gpt4image.py']").replace(
    'max_epochs=2', 'max_epochs=1') + '''
model = dict(
    _base_.gpt4image_cnn, backbone=model['backbone'], neck=model['neck'],
    head=model['head'], align_neck=dict(
        type='AlignmentNeck', out_channels=384, norm_cfg=dict(type='BN1d')))
train_dataloader['dataset'] = dict(
    type='DescriptionDataset', dataset=train_dataloader['dataset'],
    store='{store}')
'''

RECIPE = 'gpt4image/gpt4image_resnet18_8xb16_cifar100.py'

# MMEngine's own Runner in a plain script: only the registry module is
# imported (it teaches MMEngine the ``gpt4image_mm::`` prefix, which a
# config's own custom_imports come too late for); the config's
# custom_imports register the plugin's components.
RUNNER_SCRIPT = '''
import sys
from mmengine.config import Config
from mmengine.runner import Runner

try:
    Config.fromfile(sys.argv[1])
except AssertionError as e:
    print('without the registry:', e)
import gpt4image_mm.registry  # noqa: F401
cfg = Config.fromfile(sys.argv[1])
cfg.work_dir = sys.argv[2]
Runner.from_cfg(cfg).train()
print('plugin from', sys.modules['gpt4image_mm'].__file__)
'''


def _copy_sources(dest: Path) -> None:
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True,
                            ignore=shutil.ignore_patterns('__pycache__'))
        elif src.exists():
            shutil.copy2(src, dest / name)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The wheel installed alone into an empty folder: its paths, the
    environment that puts it first, and a runner for its commands."""
    tmp = tmp_path_factory.mktemp('wheel')
    (tmp / 'src').mkdir()
    _copy_sources(tmp / 'src')
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    subprocess.run(pip + ['wheel', '--no-deps', '--no-build-isolation', '-w',
                          str(tmp / 'dist'), str(tmp / 'src')],
                   check=True, capture_output=True, timeout=600)
    wheel, = (tmp / 'dist').glob('gpt4image_mm-*.whl')
    target = tmp / 'site'
    subprocess.run(pip + ['install', '--no-deps', '--target', str(target),
                          str(wheel)], check=True, capture_output=True,
                   timeout=600)
    work = tmp / 'user'
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env.update(PYTHONPATH=str(target), PYTHONWARNINGS='ignore')
    script = target / 'bin' / 'gpt4image'  # what pip wrote from the wheel

    def gpt4image(*args, cwd=work):
        proc = subprocess.run([str(script), *map(str, args)], cwd=cwd,
                              env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, \
            f'gpt4image {args}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}'
        return proc

    return SimpleNamespace(wheel=wheel, target=target, work=work, env=env,
                           gpt4image=gpt4image)


@pytest.fixture(scope='module')
def project(installed):
    """A small image folder, one description per image embedded by the
    installed ``gpt4image embed``, a plain config and a user config."""
    from gpt4image_mm.utils.assets import minilm_dir
    work = installed.work
    keys = make_image_folder(work / 'imgs', per_class=2, size=16)
    with open(work / 'd.jsonl', 'w', encoding='utf-8') as f:
        for key in keys:
            cls = key.split('/')[0]
            f.write(json.dumps({'key': key, 'model': 'm', 'text':
                                f'A small photo of a {cls}, {key}.'}) + '\n')
    installed.gpt4image('embed', 'd.jsonl', '--encoder', minilm_dir(),
                        '--out', 'store', '--device', 'cpu', '--no-progress')
    (work / 'base.py').write_text(BASE_CFG.format(root=work / 'imgs').replace(
        'max_epochs=2', 'max_epochs=1'))
    (work / 'mine.py').write_text(USER_CFG.format(root=work / 'imgs',
                                                  store=work / 'store'))
    return SimpleNamespace(keys=keys, work=work)


def test_the_wheel_ships_the_configs_and_runs_from_its_own_folder(
        installed):
    """The package the commands import is the installed one; every shipped
    config is in the wheel and listed; a recipe resolves by its scope name
    through its relative and mmpretrain:: bases."""
    probe = subprocess.run(
        [sys.executable, '-c', 'import gpt4image_mm, json, os, sys; print('
         'json.dumps([gpt4image_mm.__file__, os.getcwd(), sys.path]))'],
        cwd=installed.work, env=installed.env, capture_output=True, text=True,
        timeout=300, check=True)
    module, cwd, path = json.loads(probe.stdout)
    assert Path(module).is_relative_to(installed.target)
    assert Path(cwd).resolve() != ROOT
    assert str(ROOT) not in {str(Path(p).resolve()) for p in path if p}

    shipped = sorted(p.relative_to(ROOT / 'configs').as_posix()
                     for p in (ROOT / 'configs').rglob('*.py'))
    listed = [json.loads(line)['name'] for line in installed.gpt4image(
        'configs', '--json').stdout.splitlines()]
    assert sorted(listed) == shipped and RECIPE in listed
    prompts = installed.target / 'gpt4image_mm' / '.mim' / 'configs' / \
        'prompts' / 'cifar.txt'
    assert prompts.read_text() == (ROOT / 'configs' / 'prompts' /
                                   'cifar.txt').read_text()

    text = installed.gpt4image('configs', '--show',
                               f'gpt4image_mm::{RECIPE}').stdout
    assert "type='TextAlignedClassifier'" in text  # gpt4image_mm::_base_
    assert 'depth=18' in text                       # ../resnet18 baseline
    assert "type='CIFAR100'" in text                # mmpretrain:: base
    assert "store='data/cifar100/gpt4image_store'" in text


def test_embed_train_test_and_an_experiment_from_the_wheel(
        installed, project):
    work = project.work
    store = np.load(work / 'store' / 'embeddings.npy')
    assert store.shape == (len(project.keys), 384)

    installed.gpt4image('train', 'mine.py', '--work-dir', 'run')
    ckpt = (work / 'run' / 'last_checkpoint').read_text().strip()
    assert Path(ckpt).name == 'epoch_1.pth'
    installed.gpt4image('test', 'mine.py', ckpt, '--work-dir', 'run',
                        '--out', 'metrics.json')
    metrics = json.loads((work / 'metrics.json').read_text())
    assert 0 <= metrics['accuracy/top1'] <= 100

    # the cluster route: a printed line runs where only the wheel is
    # installed; the experiment then trains only the other arm
    experiment = ['experiment', '--config', 'base.py', '--gpt4image-config',
                  'mine.py', '--arms', 'baseline,gpt4image', '--seeds', '1',
                  '--work-dir', 'exp']
    lines = installed.gpt4image(*experiment, '--print-commands'
                                ).stdout.strip().splitlines()
    # no checkout path in them (the interpreter may live in the checkout's
    # venv, as in CI, but no code comes from the checkout)
    assert len(lines) == 2 and all(
        '-m gpt4image_mm.cli train' in ln and str(ROOT / 'tools') not in ln
        and str(ROOT / 'gpt4image_mm') not in ln for ln in lines)
    subprocess.run(['bash', '-c', lines[0]], env=installed.env, check=True,
                   capture_output=True, timeout=600)
    report = installed.gpt4image(*experiment).stdout
    for arm in ('baseline', 'gpt4image'):
        top1 = json.loads((work / 'exp' / 'runs' / arm / 'seed0' /
                           'test_metrics.json').read_text())['accuracy/top1']
        assert 0 <= top1 <= 100
    assert 'GPT4Image' in report and 'baseline' in report


def test_mmengine_runner_trains_the_user_config_after_the_registry_import(
        installed, project):
    """A third-party script: MMEngine's Config and Runner, nothing of the
    plugin but ``import gpt4image_mm.registry`` before the config is read
    (without it MMEngine refuses the ``gpt4image_mm::`` prefix)."""
    work = project.work
    (work / 'runner.py').write_text(RUNNER_SCRIPT)
    proc = subprocess.run([sys.executable, 'runner.py', 'mine.py', 'mmengine'],
                          cwd=work, env=installed.env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'without the registry: mmengine does not support to load ' \
        'gpt4image_mm config' in proc.stdout
    assert (work / 'mmengine' / 'epoch_1.pth').is_file()
    plugin = proc.stdout.strip().splitlines()[-1].split(' from ')[1]
    assert Path(plugin).is_relative_to(installed.target)
