"""tools/train.py and tools/test.py check what they are about to do before
the first iteration: a config mistake is one line and exit 2, a checkpoint
that does not fit is refused, resuming against another store is refused,
and a short epoch still shows its progress."""
import subprocess
import sys

import pytest
import torch
from conftest import CLASSES, ROOT, random_store
from helpers import write_tiny_project

TOOLS = ROOT / 'tools'


def run(tool, *args, cwd):
    proc = subprocess.run([sys.executable, TOOLS / tool, *map(str, args)],
                          cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, proc.stdout + proc.stderr, proc.stderr


def assert_one_line_exit_2(rc, out, err, *expected):
    assert rc == 2, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    assert 'Epoch(train)' not in out  # stopped before the first iteration
    last = err.strip().splitlines()[-1]
    assert last.startswith('error: '), err[-3000:]
    for text in expected:
        assert text in last, last


def _store_kind(tmp, keys, kind):
    """Replace the tiny project's store with a mistaken one."""
    store = tmp / 'store'
    if kind == 'class_keys':  # caption.py --per-class keys
        random_store(store, [f'class:{c}#0' for c in CLASSES],
                     overwrite=True)
    elif kind == 'missing':
        random_store(store, keys[:-2], overwrite=True)
    elif kind == 'other_root':  # same layout, another image folder
        random_store(store, keys, overwrite=True, source_datasets=[
            {'root': str(tmp / 'elsewhere'), 'split': None}])


# (config, --cfg-options, store change, what the one line must say)
MISTAKES = {
    'store_width': ('align.py', ['model.align_neck.out_channels=16'], None,
                    ['8-d vectors', 'out_channels is 16',
                     'out_channels=8)']),
    'class_keys_without_per_class': ('align.py', [], 'class_keys',
                                     ['per_class=True', "'class:cat#0'"]),
    'samples_without_description': ('align.py', [], 'missing',
                                    ['2 of 12 samples have no description',
                                     "'ship/2.png'"]),
    'store_of_another_image_root': ('align.py', [], 'other_root',
                                    ['elsewhere', 'check_source=False']),
    'wrong_data_path_and_no_classes': (
        'base.py', ['train_dataloader.dataset.data_root={tmp}/nope',
                    'model.head.num_classes=0'], None,
        ['No such file or directory', 'nope']),
    'empty_dataset': ('base.py', ['train_dataloader.dataset.data_root='
                                  '{tmp}/empty'], None, ['Found 0 files']),
    'num_classes_0': ('base.py', ['model.head.num_classes=0'], None,
                      ['num_classes is 0', 'number of classes (3)']),
    'head_smaller_than_labels': ('base.py', ['model.head.num_classes=2'],
                                 None, ['labels up to 2',
                                        'num_classes=3']),
}


@pytest.mark.parametrize('mistake', list(MISTAKES))
def test_config_mistake_stops_before_training(tmp_path, mistake):
    config, options, store, expected = MISTAKES[mistake]
    write_tiny_project(tmp_path)
    (tmp_path / 'empty' / 'cat').mkdir(parents=True)
    keys = sorted(f'{c}/{i}.png' for c in CLASSES for i in range(4))
    _store_kind(tmp_path, keys, store)
    options = [o.format(tmp=tmp_path) for o in options]
    rc, out, err = run('train.py', config, '--work-dir', tmp_path / 'w',
                       *(['--cfg-options', *options] if options else []),
                       cwd=tmp_path)
    assert_one_line_exit_2(rc, out, err, *expected)
    assert 'Config:' not in out  # before the Runner's config dump


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One epoch of two iterations on the tiny project, its store's
    manifest with a descriptions checksum and encoder settings as embed.py
    writes them."""
    tmp = tmp_path_factory.mktemp('trained')
    write_tiny_project(tmp)
    keys = sorted(f'{c}/{i}.png' for c in CLASSES for i in range(4))
    random_store(tmp / 'store', keys, overwrite=True,
                 source_checksum='sha256:first-texts',
                 encoder_settings={'max_length': 77, 'pooling': 'mean'})
    rc, out, _ = run('train.py', 'align.py', '--work-dir', tmp / 'work',
                     '--cfg-options', 'train_cfg.max_epochs=1', cwd=tmp)
    assert rc == 0, out[-3000:]
    return tmp, keys, out


def test_short_epoch_logs_every_iteration(trained):
    _, _, log = trained
    # 12 images, batch 6: the inherited interval of 100 logged only the end
    assert 'logging every 1 iterations instead of 100' in log
    assert 'Epoch(train) [1][1/2]' in log and 'Epoch(train) [1][2/2]' in log


def test_checkpoint_records_its_store(trained):
    tmp, _, _ = trained
    import gpt4image_mm.engine  # noqa: F401  (safe loading of MMEngine state)
    meta = torch.load(tmp / 'work' / 'epoch_1.pth', weights_only=True)['meta']
    assert meta['gpt4image_store']['source_checksum'] == 'sha256:first-texts'
    assert meta['gpt4image_store']['path'] == str(tmp / 'store')
    # plain data: tools/test.py loads it with weights_only=True
    assert type(meta['gpt4image_store']['encoder_settings']) is dict


def test_test_refuses_a_checkpoint_of_another_head_size(trained, tmp_path):
    tmp, _, _ = trained
    rc, out, err = run('test.py', tmp / 'base.py',
                       tmp / 'work' / 'epoch_1.pth', '--work-dir', tmp_path,
                       '--cfg-options', 'model.head.num_classes=4', cwd=tmp)
    assert rc == 2, out[-3000:]
    assert 'accuracy/top1' not in out and 'Traceback' not in out
    last = err.strip().splitlines()[-1]
    assert 'head.fc.weight is (3, 64) in the checkpoint but (4, 64) in the ' \
        'model' in last and 'num_classes=3' in last, last


def test_load_from_checks_the_head_size(trained, tmp_path):
    tmp, _, _ = trained
    rc, out, err = run('train.py', 'align.py', '--work-dir', tmp_path,
                       '--cfg-options', 'model.head.num_classes=4',
                       f'load_from={tmp / "work" / "epoch_1.pth"}', cwd=tmp)
    assert_one_line_exit_2(rc, out, err, 'head.fc.weight is (3, 64)',
                           "prefix='backbone.'")


def test_resume_against_a_rebuilt_store_is_refused(trained, tmp_path):
    tmp, keys, _ = trained
    # the store rebuilt from other texts, as embed.py --force does
    store = tmp_path / 'store'
    random_store(store, keys, seed=1, source_checksum='sha256:other-texts')
    resume = ['align.py', '--resume', tmp / 'work' / 'epoch_1.pth',
              '--cfg-options', f'train_dataloader.dataset.store={store}',
              'train_cfg.max_epochs=2']
    rc, out, err = run('train.py', *resume, '--work-dir', tmp_path / 'w1',
                       cwd=tmp)
    assert_one_line_exit_2(rc, out, err, str(tmp / 'store'), str(store),
                           'source_checksum sha256:first... -> '
                           'sha256:other...', '--allow-store-change')

    rc, out, _ = run('train.py', *resume, '--allow-store-change',
                     '--work-dir', tmp_path / 'w2', cwd=tmp)
    assert rc == 0, out[-3000:]
    assert 'resuming anyway (--allow-store-change)' in out
    assert 'Epoch(train) [2][2/2]' in out


def test_config_dumped_in_the_work_dir_tests_and_checks_again(
        trained, tmp_path, monkeypatch):
    """MMEngine dumps the resolved config (with the hooks train.py added)
    into the work dir; users test and resume from it."""
    tmp, _, _ = trained
    dumped = tmp / 'work' / 'align.py'
    assert 'TrainProgressHook' in dumped.read_text()
    rc, out, _ = run('test.py', dumped, tmp / 'work' / 'epoch_1.pth',
                     '--work-dir', tmp_path, cwd=tmp)
    assert rc == 0 and 'accuracy/top1' in out, out[-3000:]
    # the checks replace the dumped run's hooks (its recorded store may be
    # another one), never stack a second copy
    from mmengine.config import Config

    from gpt4image_mm.engine import preflight
    monkeypatch.chdir(tmp)
    cfg = Config.fromfile(str(dumped))
    preflight.train_checks(cfg)
    types = [h['type'] for h in cfg.custom_hooks]
    assert len(types) == len(set(types)) and 'StoreIdentityHook' in types


def test_empty_image_is_named_before_training(tmp_path):
    write_tiny_project(tmp_path)
    empty = tmp_path / 'imgs' / 'dog' / '1.png'
    empty.write_bytes(b'')
    rc, out, err = run('train.py', 'align.py', '--work-dir', tmp_path / 'w',
                       cwd=tmp_path)
    assert_one_line_exit_2(rc, out, err, f'{empty} (0 bytes)',
                           'train_dataloader.dataset', 'replace or remove')
    assert 'Config:' not in out


def test_undecodable_image_names_its_file_when_loaded(tmp_path):
    """Not empty, so the checks (which decode nothing) let it through; the
    sample that fails names its key and file in one line, exit 2."""
    write_tiny_project(tmp_path)
    broken = tmp_path / 'imgs' / 'ship' / '2.png'
    broken.write_bytes(b'not a png at all' * 8)
    rc, out, err = run('train.py', 'align.py', '--work-dir', tmp_path / 'w',
                       '--cfg-options', 'train_cfg.max_epochs=1', cwd=tmp_path)
    assert rc == 2, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: sample 'ship/2.png'"), last
    assert str(broken) in last and 'bad samples are not skipped' in last
