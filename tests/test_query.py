"""tools/query.py on a model trained for a few iterations with real MiniLM
descriptions: text search and zero-shot classification through the neck."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, make_image_folder
from helpers import ALIGN_CFG, BASE_CFG, load_tool

# make_image_folder gives each class its own colour (cat red, dog green,
# ship blue): the planted easy case is a query naming class and colour.
COLOUR = {'cat': 'red', 'dog': 'green', 'ship': 'blue'}


def run_tool(*args, cwd, ok=True):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Image folder, MiniLM store of per-image descriptions, a checkpoint
    trained for 24 iterations. Built in this process (embed's and train's
    own ``main``, the code their CLIs run): these tests are about query.py,
    and the CLIs' subprocess runs are tested in test_embed*.py and
    test_train_e2e.py; this saves two interpreter starts."""
    from gpt4image_mm.cli.main import parse_and_run
    from gpt4image_mm.utils.assets import minilm_dir
    tmp = tmp_path_factory.mktemp('query')
    root = tmp / 'imgs'
    keys = make_image_folder(root, per_class=8)
    desc = tmp / 'd.jsonl'
    desc.write_text(''.join(json.dumps({
        'key': k, 'text': f'A {COLOUR[k.split("/")[0]]} photo of a '
        f'{k.split("/")[0]}, picture {i}.'}) + '\n' for i, k in enumerate(keys)))
    assert load_tool('embed').main([
        str(desc), '--encoder', minilm_dir(), '--out', str(tmp / 'store'),
        '--device', 'cpu', '--no-progress']) == 0
    (tmp / 'base.py').write_text(BASE_CFG.format(root=root))
    (tmp / 'align.py').write_text(ALIGN_CFG.format(
        configs=ROOT / 'configs', store=tmp / 'store').replace(
            # PyTorch's default head init: 24 iterations do not move the
            # official trunc-normal init far enough for a 384-d head (the
            # Fashion-MNIST demo pins init_std=None for the same reason)
            'out_channels=8', 'out_channels=384, init_std=None'))
    with pytest.MonkeyPatch.context() as mp:  # train() sets LOCAL_RANK
        mp.setenv('LOCAL_RANK', '0')
        parse_and_run('train', [
            str(tmp / 'align.py'), '--work-dir', str(tmp / 'work'),
            '--cfg-options', 'train_cfg.max_epochs=6',
            'train_cfg.val_interval=6',
            'default_hooks.checkpoint.interval=6'], 'train')
    return tmp


def query(trained, *args, ok=True):
    return run_tool(ROOT / 'tools' / 'query.py', 'align.py',
                    trained / 'work' / 'epoch_6.pth', '--images',
                    trained / 'imgs', '--cache-dir', trained / 'cache',
                    '--device', 'cpu', *args, cwd=trained, ok=ok)


def test_search_ranks_the_matching_class_first(trained):
    out = trained / 'hits'
    proc = query(trained, '--search', 'A red photo of a cat.', '--topk', '4',
                 '--out', out)
    res = json.loads((out / 'results.json').read_text())
    assert res['hits'][0]['path'].startswith('cat/'), proc.stdout
    assert (out / 'search.png').stat().st_size > 500
    assert 'image features: 0 cached, 24 embedded' in proc.stdout
    assert 'skipped' not in proc.stderr  # the trained folder has none
    # the second query reuses every image vector
    proc = query(trained, '--search', 'A blue photo of a ship.')
    assert 'image features: 24 cached, 0 embedded' in proc.stdout
    first = proc.stdout.split('\n')[1]
    assert first.split()[-1].startswith('ship/'), proc.stdout


def test_classify_by_class_texts(trained):
    cls = trained / 'classes.jsonl'
    cls.write_text(''.join(json.dumps({
        'key': f'class:{c}#{k}', 'text': t}) + '\n'
        for c in COLOUR for k, t in enumerate(
            [f'A {COLOUR[c]} photo of a {c}.', f'A {c} in {COLOUR[c]}.'])))
    proc = query(trained, '--classify-file', cls, '--out', trained / 'cls')
    res = json.loads((trained / 'cls' / 'results.json').read_text())
    assert res['classes'] == ['cat', 'dog', 'ship']
    assert res['top1'] is not None and res['top1'] > 0.5, proc.stdout
    assert 'top-1 by text through the neck' in proc.stdout
    # the config's own val split (the same 24 images through its loader)
    proc = run_tool(ROOT / 'tools' / 'query.py', 'align.py',
                    trained / 'work' / 'epoch_6.pth', '--split', 'val',
                    '--classify-file', cls, '--out', trained / 'split',
                    '--device', 'cpu', cwd=trained)
    split = json.loads((trained / 'split' / 'results.json').read_text())
    assert split['images'] == 24
    assert split['top1'] == pytest.approx(res['top1']), proc.stdout


def test_classify_by_class_names_says_words(trained):
    """Folder names read as words in the class texts; a user's map wins;
    results keep the names given."""
    names = trained / 'names.json'
    names.write_text(json.dumps({'ship': 'sailing_boat'}))
    query(trained, '--classify', 'cat', 'dog', 'ship', '--template',
          'A photo of a {}.', '--class-names', names, '--out',
          trained / 'named')
    res = json.loads((trained / 'named' / 'results.json').read_text())
    assert res['classes'] == ['cat', 'dog', 'ship']
    assert res['texts']['ship'] == ['A photo of a sailing boat.']
    assert res['texts']['cat'] == ['A photo of a cat.']


def test_split_classes_without_text_name_the_fix(trained):
    """Texts keyed by words while the split's classes are folder names
    (ImageNet's wnids): the error names the split's names and
    --class-names; bare --classify takes the split's names, and the run
    records the texts it embedded."""
    ckpt = trained / 'work' / 'epoch_6.pth'
    proc = run_tool(ROOT / 'tools' / 'query.py', 'align.py', ckpt,
                    '--split', 'val', '--classify', 'tabby', 'puppy',
                    'boat', '--device', 'cpu', cwd=trained, ok=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no text for 3 of the 3 classes of the "
                           "val split, e.g. 'cat'"), line
    assert '--class-names FILE' in line and 'cat, dog, ship' in line
    names = trained / 'split_names.json'
    names.write_text(json.dumps({'cat': 'tabby cat'}))
    # no names after --classify: the split's own, said in words
    run_tool(ROOT / 'tools' / 'query.py', 'align.py', ckpt, '--split', 'val',
             '--classify', '--template',
             'a photo of a {}.', '--class-names', names, '--out',
             trained / 'split_texts', '--device', 'cpu', cwd=trained)
    res = json.loads((trained / 'split_texts' / 'results.json').read_text())
    assert res['texts'] == {'cat': ['a photo of a tabby cat.'],
                            'dog': ['a photo of a dog.'],
                            'ship': ['a photo of a ship.']}
    assert res['template'] == 'a photo of a {}.'
    assert res['class_names_file'] == str(names)
    assert res['images'] == 24


def test_inferencer_api_and_cache_invalidation(trained, tmp_path):
    from gpt4image_mm.apis import TextQueryInferencer
    inf = TextQueryInferencer(str(trained / 'align.py'),
                              str(trained / 'work' / 'epoch_6.pth'),
                              device='cpu', cache_dir=str(tmp_path))
    # the config's top-level input normalisation reaches the model, as in
    # the Runner (it was silently dropped: features of unnormalised pixels)
    assert inf.model.data_preprocessor.mean.flatten().tolist() == [128.] * 3
    img = str(trained / 'imgs' / 'ship' / '0.png')
    res = inf([img], texts={c: [f'A {COLOUR[c]} photo of a {c}.']
                            for c in COLOUR})
    assert set(res[0]) == {'pred_scores', 'pred_label', 'pred_score',
                           'pred_class'}
    vec = inf([img])[0]['embedding']
    assert abs(float((vec ** 2).sum()) - 1) < 1e-4
    _, feats, counts = inf.folder_features(str(trained / 'imgs'))
    assert counts == {'cached': 0, 'embedded': 24, 'skipped': {}}
    # a folder's images are decoded by the project's opener: the same
    # vector as the inferencer's own (mmcv) loading of the path
    paths, _, _ = inf.folder_features(str(trained / 'imgs'))
    assert torch.allclose(feats[paths.index('ship/0.png')],
                          torch.from_numpy(vec), atol=1e-5)
    (trained / 'imgs' / 'ship' / '0.png').touch()  # a changed file
    _, again, counts = inf.folder_features(str(trained / 'imgs'))
    assert counts == {'cached': 23, 'embedded': 1, 'skipped': {}}
    assert torch.allclose(feats, again, atol=1e-5)


def test_stripped_checkpoint_is_refused(trained):
    # strip's own code; its CLI runs as a subprocess in test_train_e2e.py
    from gpt4image_mm.engine.checkpoint import strip_checkpoint
    assert strip_checkpoint(str(trained / 'work' / 'epoch_6.pth'),
                            str(trained / 'deploy.pth')) > 0
    proc = run_tool(ROOT / 'tools' / 'query.py', 'align.py',
                    trained / 'deploy.pth', '--images', trained / 'imgs',
                    '--search', 'a cat', cwd=trained, ok=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith('error: ') and 'deploy.pth' in line
    assert 'align_neck' in line


def test_unreadable_image_is_skipped_and_named(trained, tmp_path):
    import shutil
    folder = tmp_path / 'imgs'
    shutil.copytree(trained / 'imgs', folder)
    (folder / 'cat' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'x' * 40)
    proc = run_tool(ROOT / 'tools' / 'query.py', 'align.py',
                    trained / 'work' / 'epoch_6.pth', '--images', folder,
                    '--search', 'A red photo of a cat.', '--topk', '30',
                    '--cache-dir', tmp_path / 'cache', '--device', 'cpu',
                    '--out', tmp_path / 'hits', cwd=trained)
    assert 'skipped: cat/broken.png' in proc.stderr
    assert 'image features: 0 cached, 24 embedded' in proc.stdout
    hits = json.loads((tmp_path / 'hits' / 'results.json').read_text())
    assert len(hits['hits']) == 24
    assert 'cat/broken.png' not in {h['path'] for h in hits['hits']}
    # never cached: still named (and retried) on the next query (that the
    # trained folder's queries name none: test_search_ranks_...)
    proc = run_tool(ROOT / 'tools' / 'query.py', 'align.py',
                    trained / 'work' / 'epoch_6.pth', '--images', folder,
                    '--search', 'a cat', '--cache-dir', tmp_path / 'cache',
                    '--device', 'cpu', cwd=trained)
    assert 'skipped: cat/broken.png' in proc.stderr
    assert 'image features: 24 cached, 0 embedded' in proc.stdout
