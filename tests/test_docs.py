"""The documented commands run as written.

Convention (in the Markdown pages): every fenced ```bash block runs, in page
order, in one bash session from the repository root, unless the line just
above it is an HTML comment ``<!-- docs-test: MARK ... -->``:

* ``skip``: never run (installs, placeholders the test sets itself);
* a variant name (``per-image``, ``class-level``): run only in that
  variant's pass.

Placeholders are environment variables the pages ask the reader to set
(``$DATA``, ``$WORK``, ``$EPOCHS``...); the test sets them for a tiny
generated image folder, 1 epoch and tiny answers, and points ``$BASE_URL``
at the local OpenAI-wire server of ``tests/_openai_server.py``.
"""
import json
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

import pytest

from gpt4image_mm.utils.descriptions import read_descriptions

sys.path.insert(0, os.path.dirname(__file__))
from _openai_server import FakeOpenAI, make_images, start_server  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = re.compile(r'^<!--\s*docs-test:\s*([\w-]+)')
FENCE = re.compile(r'^```bash\n(.*?)^```', re.M | re.S)
VARIANTS = ('per-image', 'class-level')


def bash_blocks(path: str) -> List[Tuple[Optional[str], str]]:
    """``(mark or None, code)`` of every ```bash block of a page."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    blocks = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip('\n').rsplit('\n', 1)[-1]
        mark = MARK.match(before)
        name = mark.group(1) if mark else None
        if name not in (None, 'skip') + VARIANTS:
            raise ValueError(f'{path}: unknown docs-test mark {name!r}')
        blocks.append((name, m.group(1)))
    return blocks


def script_for(path: str, variant: Optional[str] = None) -> str:
    """The page's commands for one pass, as one fail-fast bash script."""
    code = [c for mark, c in bash_blocks(path)
            if mark is None or mark == variant]
    assert code, f'{path}: no runnable ```bash block'
    return 'set -euo pipefail\n' + '\n'.join(code)


def run_script(script: str, env: Dict[str, str], timeout: int = 900) -> str:
    proc = subprocess.run(['bash', '-c', script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'rc {proc.returncode}:\n{out[-6000:]}'
    return out


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    """DATA/train and DATA/val, two classes, 32x32 images."""
    data = tmp_path_factory.mktemp('my_images')
    for split, n in (('train', 4), ('val', 2)):
        make_images(str(data / split), classes=('bag', 'sandal'),
                    per_class=n, size=(32, 32))
    return str(data)


@pytest.fixture(scope='module')
def server():
    fake = FakeOpenAI()
    srv, url = start_server(fake)
    yield fake, url
    srv.shutdown()


def docs_env(data: str, work: str, base_url: str) -> Dict[str, str]:
    """The placeholders' values: tiny and quick."""
    env = dict(os.environ)
    env.update(
        PATH=os.path.dirname(sys.executable) + os.pathsep + env['PATH'],
        PYTHONPATH=REPO, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
        DATA=data, WORK=work, EPOCHS='1', SIZE='32', MAX_TOKENS='8',
        PER_CLASS='1', SEEDS='1',
        BASE_URL=base_url, VLM='local-vlm')
    env.pop('OPENAI_API_KEY', None)  # a local server needs none
    return env


def _top1(path: str) -> float:
    with open(path, encoding='utf-8') as f:
        return json.load(f)['accuracy/top1']


def check_trained_and_stripped(work: str) -> None:
    """Step 4 of own_dataset.md: the stripped model tests the same."""
    assert _top1(os.path.join(work, 'metrics_trained.json')) == _top1(
        os.path.join(work, 'metrics_deploy.json'))


def check_experiment(run: str) -> None:
    """The page's last step: the experiment ran on the paths the page
    wrote, every arm trained and tested, the analysis is in the report."""
    with open(os.path.join(run, 'experiment', 'report.json'),
              encoding='utf-8') as f:
        report = json.load(f)
    assert sorted(r['arm'] for r in report['runs']) == [
        'baseline', 'classname', 'gpt4image', 'random']
    assert report['settings']['gpt4image_config'] == os.path.join(
        run, 'gpt4image_resnet18_mine.py')
    assert report['analysis']['descriptions'] == 8


@pytest.mark.parametrize('variant', VARIANTS)
def test_own_dataset_page(variant, image_folder, server, tmp_path):
    fake, url = server
    work = str(tmp_path / 'work')
    page = os.path.join(REPO, 'docs', 'own_dataset.md')
    # per-image also runs the page's experiment (4 arms x 1 seed)
    run_script(script_for(page, variant),
               docs_env(image_folder, work, url), timeout=1800)
    run = os.path.join(work, variant.replace('-', '_'))  # its own folder
    check_trained_and_stripped(run)
    if variant == 'per-image':
        check_experiment(run)
    with open(os.path.join(run, 'descriptions.jsonl'),
              encoding='utf-8') as f:
        keys = {json.loads(line)['key'] for line in f}
    if variant == 'per-image':
        assert keys == {f'{c}/{i}.{e}' for c in ('bag', 'sandal')
                        for i, e in ((0, 'jpg'), (1, 'png'), (2, 'jpg'),
                                     (3, 'png'))}
        assert fake.answered  # the server was really asked
    else:
        assert keys == {'class:bag#0', 'class:sandal#0'}


def test_readme_quick_start(image_folder, server, tmp_path):
    fake, url = server
    work = str(tmp_path / 'work')
    os.makedirs(work)
    config = tmp_path / 'mine.py'  # what docs/own_dataset.md step 1 writes
    config.write_text(
        "_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']\n"
        "train_dataloader = dict(dataset=dict(_delete_=True, "
        f"type='CustomDataset', data_root={image_folder + '/train'!r}))\n")
    env = docs_env(image_folder, work, url)
    env['CONFIG'] = str(config)
    run_script(script_for(os.path.join(REPO, 'README.md')), env)
    classes = read_descriptions(os.path.join(work, 'class_descriptions.jsonl'))
    assert sorted(classes) == ['class:bag#0', 'class:sandal#0']
    images = read_descriptions(os.path.join(work, 'image_descriptions.jsonl'))
    assert len(images) == 8 and all('/' in k for k in images)


def test_own_dataset_page_stops_without_train_folder(tmp_path):
    """Step 1 names the missing folder before writing any config."""
    page = os.path.join(REPO, 'docs', 'own_dataset.md')
    env = docs_env(str(tmp_path / 'nowhere'), str(tmp_path / 'work'),
                   'http://127.0.0.1:9/v1')
    proc = subprocess.run(['bash', '-c', script_for(page, 'per-image')],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert f"error: {tmp_path / 'nowhere'}/train does not exist" in \
        proc.stderr
    assert not (tmp_path / 'work').exists()


def test_marks_are_read(tmp_path):
    page = tmp_path / 'p.md'
    page.write_text('<!-- docs-test: skip -->\n```bash\nexit 1\n```\n'
                    '<!-- docs-test: per-image -->\n```bash\necho img\n```\n'
                    '```bash\necho all\n```\n```python\nx\n```\n')
    assert script_for(str(page), 'class-level').endswith('echo all\n')
    assert 'echo img' in script_for(str(page), 'per-image')
    page.write_text('<!-- docs-test: skip-me -->\n```bash\nexit 1\n```\n')
    with pytest.raises(ValueError, match='unknown docs-test mark'):
        bash_blocks(str(page))
