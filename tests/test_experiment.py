"""tools/experiment.py end to end on a tiny generated image folder: all four
arms, real tools/train.py + tools/test.py runs, the cluster route
(--print-commands, then --report-only), a kill and resume, the cache (a
rerun trains nothing, --seeds 3 trains only seed 2), and the report's
paired intervals against a hand computation."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, make_image_folder
from helpers import BASE_CFG, CLASS_LEVEL_ALIGN_CFG

from gpt4image_mm.experiment.stats import t95

CLASSES = ('cat', 'dog', 'sea_lion')  # an underscore: "a photo of a sea lion."
TITLES = ('baseline', 'GPT4Image', 'class name', 'random vectors')


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    pytest.importorskip('all_minilm_l6_v2')
    from gpt4image_mm.datasets.store import write_store
    from gpt4image_mm.utils.assets import minilm_dir
    from gpt4image_mm.utils.keys import class_key
    tmp = tmp_path_factory.mktemp('exp')
    make_image_folder(tmp / 'imgs', per_class=4, size=16, classes=CLASSES)
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((len(CLASSES), 384))
    # a class-level store that names a real encoder (the classname arm
    # embeds its prompts with it)
    write_store(str(tmp / 'store'), [class_key(c) for c in CLASSES],
                vecs / np.linalg.norm(vecs, axis=1, keepdims=True),
                encoder=minilm_dir())
    (tmp / 'base.py').write_text(
        BASE_CFG.format(root=tmp / 'imgs').replace('max_epochs=2',
                                                   'max_epochs=1'))
    (tmp / 'align.py').write_text(CLASS_LEVEL_ALIGN_CFG.format(
        configs=ROOT / 'configs', store=tmp / 'store'))
    return tmp


def _cmd(tmp, *extra, seeds=2):
    return [sys.executable, str(ROOT / 'tools' / 'experiment.py'),
            '--config', 'base.py', '--gpt4image-config', 'align.py',
            '--arms', 'baseline,gpt4image,classname,random', '--seeds',
            str(seeds), '--work-dir', 'exp', '--parallel', '2', *extra]


def _run(tmp, *extra, seeds=2, rc=0):
    proc = subprocess.run(_cmd(tmp, *extra, seeds=seeds), cwd=tmp,
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert proc.returncode == rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _rows(report):
    return {ln.split('|')[1].strip(): ln for ln in report.splitlines()
            if ln.startswith('| ')}


def _correct(tmp, arm, seed):
    """0/1 per test image, from the predictions the run's test saved."""
    path = tmp / 'exp' / 'runs' / arm / f'seed{seed}' / \
        'test_metrics.predictions.json'
    p = json.loads(path.read_text())
    return (np.asarray(p['pred_label']) == np.asarray(p['gt_label'])
            ).astype(float)


def test_experiment_end_to_end(project):
    tmp, work = project, project / 'exp'
    # the cluster route: the runs as shell lines, two of them run "by the
    # scheduler", the report collects what is there and names the rest
    lines = _run(tmp, '--print-commands').strip().splitlines()
    assert len(lines) == 8 and all('-m gpt4image_mm.cli train' in ln
                                   for ln in lines)
    classname = (work / 'classname.jsonl').read_text()
    assert 'a photo of a sea lion.' in classname
    for line in lines[:2]:  # baseline and gpt4image, seed 0
        subprocess.run(['bash', '-c', line], check=True, timeout=600,
                       capture_output=True)
    out = _run(tmp, '--report-only', rc=1)
    assert 'Runs not finished yet' in out and 'random vectors seed 1' in out
    assert len(_run(tmp, '--print-commands').strip().splitlines()) == 6

    # a killed experiment: the runs it finished stay, the rest resume
    proc = subprocess.Popen(_cmd(tmp), cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while len(list(work.glob('runs/*/seed*/done.json'))) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent for p in work.glob('runs/*/seed*/done.json')}
    out = _run(tmp)
    assert out.count('(cached)') >= len(finished) >= 3
    report = (work / 'report.md').read_text()
    rows = _rows(report)
    for title in TITLES:
        assert title in rows, report
    for title in TITLES[1:]:  # aligned arms: a neck retrieval top-1
        assert float(rows[title].split('|')[3].split('±')[0]) >= 0
    assert rows['baseline'].split('|')[3].strip() == '–'
    # the deployed models are the plain one: same parameters and FLOPs
    assert len({rows[t].split('|')[6] for t in TITLES}) == 1
    assert 'threads per run' in report and 'torch' in rows

    # the paired intervals, by hand from the saved per-image predictions:
    # seed term + test-set term, Welch-Satterthwaite dof
    for a, b, title in (('gpt4image', 'baseline', 'GPT4Image − baseline'),
                        ('gpt4image', 'random',
                         'GPT4Image − random vectors')):
        x = np.stack([100.0 * (_correct(tmp, a, s) - _correct(tmp, b, s))
                      for s in (0, 1)])
        n = x.shape[1]
        seed_var = np.var(x.mean(1), ddof=1) / 2
        image_var = np.var(x.mean(0), ddof=1) / n or 3 / n * 1e4 / n
        dof = (seed_var + image_var) ** 2 / (
            seed_var ** 2 / 1 + image_var ** 2 / (n - 1))
        half = t95(min(10000, math.floor(dof))) * math.sqrt(
            seed_var + image_var)
        interval = rows[title].split('|')[3].strip()
        assert interval == f'{x.mean() - half:+.2f} to ' \
            f'{x.mean() + half:+.2f}', report

    # the cache: a rerun trains nothing; --seeds 3 trains only seed 2
    ckpts = {p: p.stat().st_mtime_ns for p in work.glob('runs/*/*/*.pth')}
    out = _run(tmp)
    assert out.count('(cached)') == 8
    assert {p: p.stat().st_mtime_ns for p in ckpts} == ckpts
    out = _run(tmp, seeds=3)
    assert out.count('(cached)') == 8
    trained = [ln for ln in out.splitlines() if ln.startswith('[')
               and 'done,' in ln and '(cached)' not in ln]
    assert len(trained) == 4 and all('seed 2' in ln for ln in trained)
    assert sorted(p.parent.parent.name for p in work.glob(
        'runs/*/seed2/done.json')) == ['baseline', 'classname', 'gpt4image',
                                       'random']
    assert 'Paired over 3 seeds' in (work / 'report.md').read_text()
    # a generated config is an ordinary config (a user reruns it by hand)
    cfg = (work / 'runs' / 'random' / 'seed1' / 'config.py').read_text()
    assert 'store_random' in cfg and 'seed=1' in cfg


@pytest.mark.parametrize('mistake,named', [
    ('store', 'nowhere'),  # a store that does not exist
    ('width', 'out_channels'),  # a neck narrower than the store's vectors
])
def test_config_mistake_is_one_line_before_any_run(project, tmp_path,
                                                   mistake, named):
    bad = project / f'bad_{mistake}.py'  # beside base.py, its _base_
    text = (project / 'align.py').read_text()
    bad.write_text(text.replace(str(project / 'store'), str(
        tmp_path / 'nowhere')) if mistake == 'store' else text.replace(
            'out_channels=384', 'out_channels=16'))
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'experiment.py'), '--config',
         str(project / 'base.py'), '--gpt4image-config', str(bad),
         '--work-dir', str(tmp_path / 'w')], cwd=project,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert named in proc.stderr and len(proc.stderr.strip().splitlines()
                                        ) == 1, proc.stderr
    # the generated configs may be there (they are what was checked), no
    # run started: no log, no checkpoint, nothing done
    work = tmp_path / 'w'
    assert not [p for p in work.glob('runs/**/*')
                if p.suffix in ('.log', '.pth') or p.name == 'done.json']


def test_shots_run_end_to_end(project):
    """--shots K: every arm also trains on K images per class; a shots run
    is an ordinary generated config that trains and tests by itself."""
    tmp = project
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'experiment.py'), '--config',
         'base.py', '--gpt4image-config', 'align.py', '--arms',
         'baseline,gpt4image', '--seeds', '1', '--shots', '2',
         '--work-dir', 'exp_shots', '--print-commands'], cwd=tmp,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4  # 2 arms x (full set, 2 shots)
    run = tmp / 'exp_shots' / 'runs' / 'gpt4image' / 'shots2' / 'seed0'
    line = next(ln for ln in lines if str(run) in ln)
    subprocess.run(['bash', '-c', line], check=True, timeout=600,
                   capture_output=True)
    assert 'accuracy/top1' in (run / 'test_metrics.json').read_text()
    # 2 images per class of the 12: one batch of 6 per epoch
    log = '\n'.join(p.read_text() for p in run.glob('*/*.log'))
    assert 'Epoch(train) [1][1/1]' in log, log[-3000:]


def test_a_failed_run_is_named_and_the_others_go_on(project):
    """A run that fails (here: a generated config a user broke by hand) is
    named in the report with its log's last line; the others finish."""
    tmp = project
    cmd = [sys.executable, str(ROOT / 'tools' / 'experiment.py'), '--config',
           'base.py', '--gpt4image-config', 'align.py', '--arms', 'baseline',
           '--seeds', '2', '--work-dir', 'exp_fail']
    proc = subprocess.run(cmd + ['--print-commands'], cwd=tmp,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    broken = tmp / 'exp_fail' / 'runs' / 'baseline' / 'seed1' / 'config.py'
    broken.write_text(broken.read_text() + '\nthis line is not python\n')
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = tmp / 'exp_fail' / 'runs' / 'baseline'
    assert (runs / 'seed0' / 'done.json').is_file()
    assert not (runs / 'seed1' / 'done.json').exists()
    report = (tmp / 'exp_fail' / 'report.md').read_text()
    failed = report.split('Failed runs')[1]
    assert 'baseline seed 1: `' in failed and 'edited' in failed, report


def test_shots_subset_and_plot(project, tmp_path):
    """--shots: K images per class, seeded, the same for every call (every
    arm and seed); the report's points carry the 95% t band."""
    from gpt4image_mm.experiment.plan import ExperimentSettings, shot_indices
    from gpt4image_mm.experiment.report import (
        plot_shots,
        shots_points,
        shots_table,
    )
    s = ExperimentSettings(config=str(project / 'base.py'),
                           gpt4image_config=str(project / 'align.py'))
    picked = shot_indices(s, 2)
    assert picked == shot_indices(s, 2) and len(picked) == 6
    assert sorted(i // 4 for i in picked) == [0, 0, 1, 1, 2, 2]  # 4 / class
    results = [dict(arm=a, seed=sd, shots=k, top1=v) for a, k, sd, v in (
        ('baseline', 2, 0, 50.0), ('baseline', 2, 1, 60.0),
        ('baseline', None, 0, 90.0), ('baseline', None, 1, 92.0))]
    points = shots_points(['baseline'], results, full_per_class=4.0)
    (x1, m1, h1), (x2, m2, h2) = points['baseline']
    assert (x1, m1, x2, m2) == (2, 55.0, 4.0, 91.0)
    # sd of (50, 60) = 7.0711; t(0.975, 1) = 12.7062: half-width 63.53
    assert h1 == pytest.approx(12.7062047 * 7.0710678 / math.sqrt(2))
    assert shots_table(points)[2] == '| baseline | 55.00 ± 63.53 | ' \
        '91.00 ± 12.71 |'
    plot_shots(points, str(tmp_path / 'shots.png'))
    assert (tmp_path / 'shots.png').stat().st_size > 1000
