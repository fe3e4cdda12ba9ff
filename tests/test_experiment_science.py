"""What an experiment may conclude: the class names its texts say, the
analysis it runs with the dataset's labels, intervals that count the test
set, verdicts only from enough seeds, subset runs that train to the end
of their curve and a report that flags the ones that did not.

Tiny ImageNet-style folders (wnid class folders), real ``experiment``
commands as subprocesses."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, make_image_folder
from helpers import BASE_CFG

WNIDS = ('n01440764', 'n01443537', 'n01484850')
NAMES = {'n01440764': 'tench', 'n01443537': 'goldfish',
         'n01484850': 'great white shark'}
ALIGN = '''
_base_ = ['base.py', '{configs}/_base_/gpt4image.py']
model = dict(_base_.gpt4image_cnn,
             align_neck=dict(type='AlignmentNeck', out_channels=384))
train_dataloader = dict(dataset=dict(
    _delete_=True, type='DescriptionDataset',
    dataset=_base_.train_dataloader.dataset, store='{store}'))
'''


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """A wnid folder (3 classes x 4 images), a per-image store that names
    a real encoder, the two configs and a class-name map."""
    pytest.importorskip('all_minilm_l6_v2')
    from gpt4image_mm.datasets.store import write_store
    from gpt4image_mm.utils.assets import minilm_dir
    tmp = tmp_path_factory.mktemp('science')
    keys = make_image_folder(tmp / 'imgs', per_class=4, size=16,
                             classes=WNIDS)
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((len(keys), 384))
    write_store(str(tmp / 'store'), keys,
                vecs / np.linalg.norm(vecs, axis=1, keepdims=True),
                encoder=minilm_dir())
    (tmp / 'base.py').write_text(
        BASE_CFG.format(root=tmp / 'imgs').replace('max_epochs=2',
                                                   'max_epochs=1'))
    (tmp / 'align.py').write_text(ALIGN.format(configs=ROOT / 'configs',
                                               store=tmp / 'store'))
    (tmp / 'names.json').write_text(json.dumps(NAMES))
    return tmp


def experiment(tmp, *args, rc=0, timeout=900):
    proc = subprocess.run(
        [sys.executable, '-m', 'gpt4image_mm.cli', 'experiment', '--config',
         'base.py', '--gpt4image-config', 'align.py', *args], cwd=tmp,
        capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert proc.returncode == rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def planted_descriptions(path, keys):
    """Per-image descriptions: of each class's 4 images, 2 name their own
    class, 1 names another class only, 1 names none (truth: 50 % own,
    25 % another)."""
    texts = {0: 'a {own} near the water', 1: 'a close view of a {own}',
             2: 'a {other} in a tank', 3: 'a blurry dark picture'}
    with open(path, 'w', encoding='utf-8') as f:
        for key in keys:
            wnid, i = key.split('/')[0], int(key.split('/')[1][0])
            other = NAMES[WNIDS[(WNIDS.index(wnid) + 1) % 3]]
            f.write(json.dumps(dict(key=key, text=texts[i].format(
                own=NAMES[wnid], other=other))) + '\n')


def test_class_names_reach_the_classname_texts_and_the_analysis(project):
    """--class-names: the classname arm says "a photo of a tench." (keys
    keep the wnids), and the analysis step, run with the dataset's config,
    measures the planted naming shares instead of n/a."""
    keys = sorted(f'{w}/{i}.png' for w in WNIDS for i in range(4))
    planted_descriptions(project / 'desc.jsonl', keys)
    out = experiment(project, '--arms', 'baseline,classname', '--seeds',
                     '1', '--work-dir', 'exp_names', '--class-names',
                     'names.json', '--descriptions', 'desc.jsonl',
                     '--report-only', rc=1)  # nothing trained yet
    work = project / 'exp_names'
    texts = {json.loads(ln)['key']: json.loads(ln)['text'] for ln in
             (work / 'classname.jsonl').read_text().splitlines()}
    assert texts == {'class:n01440764#0': 'a photo of a tench.',
                     'class:n01443537#0': 'a photo of a goldfish.',
                     'class:n01484850#0': 'a photo of a great white shark.'}
    metrics = json.loads((work / 'analysis' / 'metrics.json').read_text())
    m = metrics['descriptions']
    assert m['names_own_class_share'] == pytest.approx(0.5)
    assert m['names_other_class_share'] == pytest.approx(0.25)
    assert '50 % name their own class, 25 % another' in out
    assert 'class names in texts: `names.json`' in out


def test_a_class_name_file_that_does_not_fit_stops_before_planning(
        project, tmp_path):
    bad = tmp_path / 'names.json'
    bad.write_text(json.dumps({'n09999999': 'unicorn'}))
    proc = subprocess.run(
        [sys.executable, '-m', 'gpt4image_mm.cli', 'experiment', '--config',
         'base.py', '--gpt4image-config', 'align.py', '--work-dir',
         str(tmp_path / 'w'), '--class-names', str(bad)], cwd=project,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert 'n09999999' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'w' / 'runs').exists()


def test_two_seeds_that_agree_get_an_interval_and_no_verdict(project):
    """Two seeds forced to the same run (``randomness.seed=0`` for every
    seed: bitwise the same training) give identical paired differences.
    The interval still has the test set's width, and 2 seeds give no
    better / worse."""
    experiment(project, '--arms', 'baseline,random', '--seeds', '2',
               '--parallel', '2', '--work-dir', 'exp_agree',
               '--cfg-options', 'randomness.seed=0')
    work = project / 'exp_agree'
    report = json.loads((work / 'report.json').read_text())
    (comp,) = report['comparisons']
    assert comp['diffs'][0] == comp['diffs'][1]  # the seeds agree
    lo, hi = comp['interval']
    assert hi - lo > 1.0 and comp['test_images'] == 12
    assert comp['verdict'] == '2 seeds: too few for a verdict'
    text = (work / 'report.md').read_text()
    assert 'Too few seeds for a verdict (at least 3)' in text
    assert ' better than ' not in text and ' worse than ' not in text
    # every run's test step saved which images it got right
    preds = json.loads((work / 'runs' / 'random' / 'seed1' /
                        'test_metrics.predictions.json').read_text())
    assert len(preds['pred_label']) == 12
    assert preds['sample_idx'] == list(range(12))


def test_a_shots_run_keeps_the_full_runs_optimizer_steps(project):
    """--shots 2 of 4 images per class: an epoch is 1 batch of 6 instead
    of 2, so the subset run trains 2x the epochs, validates and saves
    every 2 epochs and stretches its lr schedule (the generated config is
    what trains)."""
    (project / 'base_long.py').write_text(
        (project / 'base.py').read_text().replace(
            'max_epochs=1', 'max_epochs=3') + '\nparam_scheduler = [\n'
        "    dict(type='LinearLR', start_factor=0.1, by_epoch=True, end=1),\n"
        "    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, "
        'T_max=2)]\n')
    lines = experiment(project, '--config', 'base_long.py', '--arms',
                       'baseline', '--seeds', '1', '--shots', '2',
                       '--work-dir', 'exp_shots', '--print-commands')
    assert len(lines.strip().splitlines()) == 2
    from gpt4image_mm.utils.config import load_config
    runs = project / 'exp_shots' / 'runs' / 'baseline'
    full = load_config(str(runs / 'seed0' / 'config.py'))
    sub = load_config(str(runs / 'shots2' / 'seed0' / 'config.py'))
    assert full.train_cfg.max_epochs == 3 and sub.train_cfg.max_epochs == 6
    assert sub.train_cfg.val_interval == 2
    assert sub.default_hooks.checkpoint.interval == 2
    warmup, cosine = sub.param_scheduler
    assert warmup.end == 2 and (cosine.begin, cosine.T_max) == (2, 4)


def test_the_report_flags_a_shots_run_still_rising(project):
    """A 2-shot run whose validation curve climbs steadily to its last
    epoch (last-3 spread 1.0 point) is listed as not converged, and the
    verdict of the comparison it is in says so."""
    from gpt4image_mm.experiment.report import (
        report_data,
        rising_lines,
        shots_comparison_lines,
    )
    rng = np.random.default_rng(0)
    settled = [30.0, 60.0, 80.0, 85.0, 85.5, 85.2, 85.4, 85.3]
    climbing = [20.1, 28.3, 33.0, 36.2, 40.4, 42.5, 45.9, 46.4, 46.9]
    results = []
    for seed in range(3):
        base = (rng.random(1000) < 0.45).astype(np.int8)
        better = base.copy()
        better[np.flatnonzero(base == 0)[:100]] = 1  # +10 points
        for arm, correct, curve in (('baseline', base, climbing),
                                    ('gpt4image', better, settled)):
            results.append(dict(arm=arm, seed=seed, shots=2,
                                top1=100.0 * correct.mean(),
                                correct=correct, curve=curve))
    lines = '\n'.join(rising_lines(results))
    assert 'Not converged**: 3 run(s)' in lines
    assert 'baseline 2-shot seed 0: +6.76 points' in lines
    assert 'GPT4Image 2-shot' not in lines
    text = '\n'.join(shots_comparison_lines(['baseline', 'gpt4image'],
                                            results, 'one seed'))
    assert 'Paired comparisons at 2 images per class' in text
    assert 'better (unconverged runs)' in text
    assert 'Not converged (baseline seed 0, baseline seed 1, baseline ' \
        'seed 2 still rising at the end' in text
    data = report_data(['baseline', 'gpt4image'], results, {})
    assert [r['still_rising'] for r in data['runs']] == [True, False] * 3
    assert data['comparisons'][0]['verdict'] == 'better (unconverged runs)'
    json.dumps(data)  # plain data, for a page


def test_the_stretch_rule():
    """The demo's recipe (6,000 images, batch 64: 94 steps an epoch, 20
    epochs): 200 images make 4 steps an epoch, so matching the full run's
    1,880 steps needs 23.5x the epochs, capped at 10x; an iteration-based
    recipe is left alone."""
    from mmengine.config import Config

    from gpt4image_demo.pipeline import DemoSettings, schedule_options
    from gpt4image_mm.experiment.schedule import (
        fit_schedule_to_subset,
        stretch_factor,
    )
    assert stretch_factor(6000, 200, 64) == 10
    assert stretch_factor(6000, 1000, 64) == 6  # 94 / 16 steps
    assert stretch_factor(12, 6, 6) == 2 and stretch_factor(12, 12, 6) == 1
    assert schedule_options(DemoSettings(num_train=200)) == [
        'train_cfg.max_epochs=200', 'train_cfg.val_interval=10',
        'default_hooks.checkpoint.interval=10', 'param_scheduler.T_max=200']
    assert schedule_options(DemoSettings(num_train=200, epochs=5)) == []
    iters = Config(dict(train_dataloader=dict(batch_size=8),
                        train_cfg=dict(by_epoch=False, max_iters=1000),
                        param_scheduler=dict(type='CosineAnnealingLR',
                                             by_epoch=False, T_max=1000)))
    assert fit_schedule_to_subset(iters, 6000, 60) == 1
    assert iters.train_cfg.max_iters == 1000
