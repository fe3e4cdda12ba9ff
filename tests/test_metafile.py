"""configs/gpt4image/metafile.yml and README.md: what an mmpretrain user and
mim read, true to the configs on disk.

The metafile follows mmpretrain's schema (Collections + Models, as in
mmpretrain/.mim/configs/*/metafile.yml); model-index.yml imports it. Every
GPT4Image config (a ``TextAlignedClassifier`` model) under configs/ is listed
and linked from the README, its metadata (epochs, global batch, data) is the
config's own, and the only results are the ones this project measured.
"""
import re
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / 'configs' / 'gpt4image'
NAME = re.compile(r'^gpt4image(-official)?_[\w.-]+$')
GPUS_X_BATCH = re.compile(r'_(\d+)xb(\d+)[_-]')
# mmpretrain dataset class -> the name metafiles give it.
DATA_NAMES = {
    'ImageNet': 'ImageNet-1k', 'CIFAR10': 'CIFAR-10', 'CIFAR100': 'CIFAR-100',
    'CUB': 'CUB-200-2011', 'StanfordCars': 'Stanford Cars',
    'FGVCAircraft': 'FGVC-Aircraft', 'Flowers102': 'Oxford Flowers-102',
    'FashionMNIST': 'Fashion-MNIST'}
# What this project measured: docs/demo.md's table (`make demo ARMS=all
# SEEDS=5`), the GPT4Image arm's test top-1.
MEASURED = {'gpt4image_resnet18-w16_fmnist': ('docs/demo.md', 'GPT4Image')}


@pytest.fixture(scope='module')
def meta():
    with open(FOLDER / 'metafile.yml', encoding='utf-8') as f:
        return yaml.safe_load(f)


@pytest.fixture(scope='module')
def configs():
    """Every config under configs/ (not _base_), loaded without imports."""
    out = {}
    for path in sorted((ROOT / 'configs').rglob('*.py')):
        if '_base_' not in path.parts:
            out[path] = Config.fromfile(str(path), import_custom_modules=False)
    return out


def gpt4image_configs(configs):
    return {p: c for p, c in configs.items()
            if c.model.type == 'TextAlignedClassifier'}


def innermost(ds):
    while ds.get('type') in ('DescriptionDataset', 'RepeatDataset',
                             'ClassBalancedDataset'):
        ds = ds['dataset']
    return ds


def test_schema(meta):
    assert set(meta) == {'Collections', 'Models'}
    collections = {c['Name']: c for c in meta['Collections']}
    assert list(collections) == ['GPT4Image']
    col = collections['GPT4Image']
    assert col['Paper']['URL'] == 'https://arxiv.org/abs/2306.00693'
    assert (ROOT / col['README']).is_file()
    names = [m['Name'] for m in meta['Models']]
    assert len(names) == len(set(names))
    for model in meta['Models']:
        assert model['In Collection'] in collections
        assert NAME.match(model['Name']), model['Name']
        assert Path(model['Config']).stem == model['Name']
        assert {'Training Data', 'Epochs', 'Batch Size'} <= set(
            model['Metadata'])


def test_every_config_path_exists(meta):
    missing = [m['Config'] for m in meta['Models']
               if not (ROOT / m['Config']).is_file()]
    assert not missing


def test_every_gpt4image_config_is_listed_and_lives_in_its_folder(
        meta, configs):
    listed = {(ROOT / m['Config']).resolve() for m in meta['Models']}
    ours = {p.resolve() for p in gpt4image_configs(configs)}
    assert ours, 'no GPT4Image config found: the check checks nothing'
    assert sorted(map(str, ours - listed)) == []  # unlisted configs
    assert sorted(map(str, listed - ours)) == []  # listed, not GPT4Image
    assert all(p.parent == FOLDER for p in ours)
    assert all(NAME.match(p.stem) for p in ours)


def test_metadata_is_the_configs_own(meta, configs):
    for model in meta['Models']:
        cfg = configs[ROOT / model['Config']]
        md = model['Metadata']
        assert md['Epochs'] == cfg.train_cfg.max_epochs, model['Name']
        m = GPUS_X_BATCH.search(model['Name'] + '_')
        gpus = int(m.group(1)) if m else 1  # the demo: one process
        if m:
            assert int(m.group(2)) == cfg.train_dataloader.batch_size
        assert md['Batch Size'] == gpus * cfg.train_dataloader.batch_size, \
            model['Name']
        data = innermost(cfg.train_dataloader.dataset)['type']
        assert md['Training Data'] == DATA_NAMES[data], model['Name']


def _demo_top1(page, arm):
    """Mean test top-1 of ``arm`` in the page's results table."""
    text = (ROOT / page).read_text(encoding='utf-8')
    row = re.search(rf'^\| {re.escape(arm)} \| ([\d.]+) ± ', text, re.M)
    assert row, f'{page}: no results row for {arm}'
    return float(row.group(1))


def test_results_only_where_measured(meta):
    for model in meta['Models']:
        if model['Name'] not in MEASURED:
            assert model.get('Results') is None, model['Name']
            continue
        page, arm = MEASURED[model['Name']]
        (result,) = model['Results']
        assert result['Task'] == 'Image Classification'
        assert result['Dataset'] == model['Metadata']['Training Data']
        assert result['Metrics']['Top 1 Accuracy'] == _demo_top1(page, arm)


def _links(readme):
    return re.findall(r'\]\(([^)\s]+)\)', readme.read_text(encoding='utf-8'))


def test_readme_links_every_config_and_every_link_resolves(meta):
    readme = FOLDER / 'README.md'
    local = [link for link in _links(readme) if '://' not in link]
    broken = [link for link in local
              if not (readme.parent / link.split('#')[0]).exists()]
    assert not broken
    linked = {(readme.parent / link).resolve() for link in local}
    unlinked = [m['Config'] for m in meta['Models']
                if (ROOT / m['Config']).resolve() not in linked]
    assert not unlinked


def test_readme_layout_and_official_numbers_are_marked():
    text = (FOLDER / 'README.md').read_text(encoding='utf-8')
    assert text.startswith('# GPT4Image\n\n> [')
    assert '(https://arxiv.org/abs/2306.00693)' in text.split('\n')[2]
    assert '<!-- [ALGORITHM] -->' in text
    for heading in ('## Abstract', '## How to use it?',
                    '## Models and results', '## Citation'):
        assert f'\n{heading}\n' in text
    official = 'https://github.com/huawei-noah/Efficient-Computing/tree/' \
        'master/GPT4Image'
    for number in ('72.8', '82.3'):  # the official README's, never ours
        (row,) = [ln for ln in text.splitlines() if f'~{number}' in ln]
        assert official in row
    section = text.split('### Reported by the official repository')[1]
    assert 'not measured here' in section.split('\n')[0]


def test_model_index_imports_the_metafile():
    with open(ROOT / 'model-index.yml', encoding='utf-8') as f:
        index = yaml.safe_load(f)
    assert 'configs/gpt4image/metafile.yml' in index['Import']
    assert all((ROOT / p).is_file() for p in index['Import'])


def test_readme_first_screen_links_the_results_page():
    first_screen = '\n'.join((ROOT / 'README.md').read_text(
        encoding='utf-8').splitlines()[:25])
    assert '(configs/gpt4image/README.md)' in first_screen
