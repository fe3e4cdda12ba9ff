"""The experiment never loses finished work and never leaves a trainer
behind: the real ``tools/experiment.py`` on a tiny image folder (1 epoch),
driven as a user (or a scheduler) would -- re-embedding the store, read-only
modes, a changed option and back, ``kill -9`` / SIGTERM and a rerun, a run
that hangs, a run whose folder another trainer holds, a hand-edited config,
a training that leaves no checkpoint, progress lines while runs train."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
from conftest import ROOT, make_image_folder
from helpers import BASE_CFG, CLASS_LEVEL_ALIGN_CFG

psutil = pytest.importorskip('psutil')

# A transform that hangs (a stuck data loader) in the runs of seed 0 only.
HANG_MODULE = '''
import sys
import time

from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class HangInSeed0(BaseTransform):
    def transform(self, results):
        if any('seed0' in arg for arg in sys.argv):
            time.sleep(3600)
        return results
'''
CLASSES = ('cat', 'dog', 'ship')
# what a --report-only run may write: its report (and the experiment lock)
REPORT_FILES = {'report.md', 'report.json', 'report.html', 'curves.png',
                'experiment.lock'}


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    pytest.importorskip('all_minilm_l6_v2')
    from gpt4image_mm.utils.assets import minilm_dir
    tmp = tmp_path_factory.mktemp('expsafe')
    make_image_folder(tmp / 'imgs', per_class=4, size=16, classes=CLASSES)
    _write_store(tmp / 'store', minilm_dir())
    base = BASE_CFG.format(root=tmp / 'imgs').replace('max_epochs=2',
                                                      'max_epochs=1')
    (tmp / 'base.py').write_text(base)
    (tmp / 'align.py').write_text(CLASS_LEVEL_ALIGN_CFG.format(
        configs=ROOT / 'configs', store=tmp / 'store'))
    (tmp / 'hang_transform.py').write_text(HANG_MODULE)
    (tmp / 'base_hang.py').write_text(
        base.replace("dict(type='LoadImageFromFile'), ",
                     "dict(type='LoadImageFromFile'), "
                     "dict(type='HangInSeed0'), ")
        + "\ncustom_imports = dict(imports=['hang_transform'], "
          "allow_failed_imports=False)\n")
    (tmp / 'noisy_arms.py').write_text(
        'print("noisy_arms: hello from a --custom-imports module")\n')
    return tmp


def _write_store(path, encoder):
    """The same class-level vectors every call (a re-embedding)."""
    from gpt4image_mm.datasets.store import write_store
    from gpt4image_mm.utils.keys import class_key
    vecs = np.random.default_rng(1).standard_normal((len(CLASSES), 384))
    write_store(str(path), [class_key(c) for c in CLASSES],
                vecs / np.linalg.norm(vecs, axis=1, keepdims=True),
                encoder=encoder, overwrite=True)


def _env(tmp):
    return dict(os.environ, PYTHONWARNINGS='ignore',
                PYTHONPATH=os.pathsep.join(
                    [str(tmp), os.environ.get('PYTHONPATH', '')]))


def _cmd(work, *extra, arms='baseline', seeds=1, config='base.py'):
    return [sys.executable, '-m', 'gpt4image_mm.cli', 'experiment',
            '--config', config, '--gpt4image-config', 'align.py', '--arms',
            arms, '--seeds', str(seeds), '--work-dir', work, *extra]


def _run(tmp, work, *extra, rc=0, **kw):
    proc = subprocess.run(_cmd(work, *extra, **kw), cwd=tmp,
                          capture_output=True, text=True, timeout=900,
                          env=_env(tmp))
    assert proc.returncode == rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _files(folder):
    """Every file under ``folder``: its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size,
                                         p.stat().st_mtime_ns)
            for p in folder.rglob('*') if p.is_file()}


def _complete_checkpoint(path):
    with zipfile.ZipFile(path) as z:  # torch's format: a zip, CRCs checked
        return z.testzip() is None


def test_finished_runs_are_never_lost(project):
    """Re-embedding the same descriptions changes no run; --report-only and
    --print-commands change no file; a changed option keeps the runs it
    supersedes and trains only what changed; the old settings move them
    back, nothing trained. The first run also shows progress per run."""
    from gpt4image_mm.utils.assets import minilm_dir
    tmp, work = project, project / 'exp'
    both = 'baseline,gpt4image'
    first = _run(tmp, 'exp', '--parallel', '2', arms=both).stdout
    finished = _files(work)
    assert any(p.endswith('epoch_1.pth') for p in finished)

    time.sleep(1.1)  # a new `created` stamp in the manifest
    _write_store(tmp / 'store', minilm_dir())  # same vectors, embedded again
    report = _run(tmp, 'exp', '--report-only', arms=both).stdout
    assert 'Runs not finished yet' not in report, report
    now = _files(work)
    assert {p: v for p, v in now.items() if p not in REPORT_FILES} == {
        p: v for p, v in finished.items() if p not in REPORT_FILES}

    lr = ['--cfg-options', 'optim_wrapper.optimizer.lr=0.01']
    proc = _run(tmp, 'exp', '--print-commands', *lr, arms=both, rc=2)
    assert proc.stdout == '' and 'Traceback' not in proc.stderr
    assert '--supersede' in proc.stderr, proc.stderr
    assert _files(work) == {**now, 'experiment.lock': _files(work)[
        'experiment.lock']}  # nothing changed, nothing deleted

    # a changed option (baseline only): its old run is kept aside
    out = _run(tmp, 'exp', *lr).stdout
    aside = list(work.glob('runs/baseline/seed0.superseded-*'))
    assert len(aside) == 1, out
    for path, stat in finished.items():
        if path.startswith('runs/baseline/seed0/'):
            moved = aside[0] / path[len('runs/baseline/seed0/'):]
            assert moved.stat().st_size == stat[0], path
    assert _complete_checkpoint(aside[0] / 'epoch_1.pth')
    assert (work / 'runs/gpt4image/seed0/epoch_1.pth').stat(
        ).st_mtime_ns == finished['runs/gpt4image/seed0/epoch_1.pth'][1]
    # the old settings again: moved back, nothing trains
    out = _run(tmp, 'exp', arms=both).stdout
    assert out.count('(cached)') == 2, out
    assert (work / 'runs/baseline/seed0/epoch_1.pth').stat(
        ).st_mtime_ns == finished['runs/baseline/seed0/epoch_1.pth'][1]
    assert len(list(work.glob('runs/baseline/seed0.superseded-*'))) == 1

    # progress while the runs trained: a start line, then the epoch,
    # validation top-1 and ETA of each run before its result line
    lines = first.splitlines()
    for name in ('baseline seed 0', 'GPT4Image seed 0'):
        started = next(i for i, ln in enumerate(lines)
                       if f'{name}: started' in ln)
        progress = next(i for i, ln in enumerate(lines)
                        if f'{name}: epoch 1/1' in ln and 'ETA' in ln)
        result = next(i for i, ln in enumerate(lines)
                      if f'{name}: test top-1' in ln)
        assert started < progress < result, first
    assert any('val top-1' in ln for ln in lines), first


def _trainers(folder):
    """Live ``gpt4image train`` processes of the run folder ``folder``."""
    out = []
    for p in psutil.process_iter(['cmdline']):
        cmd = p.info['cmdline'] or []
        if 'train' in cmd and any(str(folder) in a for a in cmd) and \
                'gpt4image_mm.cli' in cmd:
            out.append(p)
    return out


def _start_and_wait_for_trainer(tmp, work, run, dumped=False):
    """Start the experiment; wait for its trainer's first log lines (and,
    with ``dumped``, for MMEngine to have rewritten the run's config.py)."""
    proc = subprocess.Popen(_cmd(work), cwd=tmp, env=_env(tmp),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (_trainers(run) and (run / 'train.log').is_file()
               and (run / 'train.log').stat().st_size
               and (not dumped or list(run.glob('*/vis_data/config.py')))):
        assert proc.poll() is None and time.time() < deadline, \
            proc.stderr.read()
        time.sleep(0.2)
    return proc, _trainers(run)


def test_a_killed_experiment_leaves_no_trainer(project):
    """kill -9 and SIGTERM end the experiment's trainer with it; the rerun
    finds one trainer per run folder, keeps the earlier log and ends with
    complete checkpoints."""
    tmp, work = project, 'exp_kill'
    run = tmp / work / 'runs' / 'baseline' / 'seed0'
    survivors = []
    try:
        proc, children = _start_and_wait_for_trainer(tmp, work, run)
        first_log = (run / 'train.log').read_bytes()
        proc.kill()
        proc.wait()
        _, survivors = psutil.wait_procs(children, timeout=20)
        assert not survivors, 'the trainer outlived kill -9 of the experiment'

        # killed once its config.py was rewritten by MMEngine: the rerun
        # resumes it (no "edited by hand")
        proc, children = _start_and_wait_for_trainer(tmp, work, run,
                                                      dumped=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        assert 'rerun the same command' in proc.stderr.read().lower()
        _, survivors = psutil.wait_procs(children, timeout=20)
        assert not survivors, 'the trainer outlived SIGTERM to the experiment'

        most, stop = [0], threading.Event()

        def count() -> None:
            while not stop.is_set():
                most[0] = max(most[0], len(_trainers(run)))
                time.sleep(0.2)

        watcher = threading.Thread(target=count)
        watcher.start()
        try:
            _run(tmp, work)
        finally:
            stop.set()
            watcher.join()
        assert most[0] == 1
    finally:
        for p in survivors:
            p.kill()
    assert (run / 'train.log').read_bytes().startswith(first_log)
    ckpt = (run / 'last_checkpoint').read_text().strip()
    assert _complete_checkpoint(ckpt)
    assert json.loads((run / 'test_metrics.json').read_text())[
        'accuracy/top1'] >= 0


def test_bad_runs_fail_alone(project):
    """One experiment, four runs: seed 0 hangs (killed by --run-timeout),
    seed 1's config was edited by hand (refused), seed 2's folder is held
    by another live trainer (refused, holder named); seed 3 finishes.
    --parallel above the cores is capped with a line; --print-commands
    prints the shell lines alone; a torn test_metrics.json is no result."""
    tmp, work = project, 'exp_bad'
    runs = tmp / work / 'runs' / 'baseline'
    args = ('--custom-imports', 'noisy_arms')
    proc = _run(tmp, work, '--print-commands', *args, seeds=4,
                config='base_hang.py')
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and all(ln.startswith('cd ') for ln in lines), \
        proc.stdout
    assert 'noisy_arms: hello' in proc.stderr

    edited = runs / 'seed1' / 'config.py'
    edited.write_text(edited.read_text().replace('lr=0.05', 'lr=0.5'))
    with open(runs / 'seed2' / 'run.lock', 'w') as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps(dict(pid=os.getpid(), experiment_pid=0,
                                   host='here', since='now')))
        held.flush()
        proc = _run(tmp, work, '--run-timeout', '120', '--parallel', '64',
                    seeds=4, config='base_hang.py', rc=1)
    out = proc.stdout
    assert 'Traceback' not in proc.stderr + out
    cores = len(os.sched_getaffinity(0))
    assert f'--parallel 64: this machine gives this process {cores}' in out
    report = (tmp / work / 'report.md').read_text()
    failed = report.split('Failed runs')[1]
    assert 'seed 0: `no output for 120 s (--run-timeout)' in failed, report
    assert 'seed 1: `' in failed and 'edited' in failed, report
    assert f'seed 2: `{runs / "seed2"} is being trained by pid ' \
        f'{os.getpid()}' in failed, report
    assert (runs / 'seed3' / 'done.json').is_file(), report
    assert not list((runs / 'seed1').glob('*.pth'))
    assert not list((runs / 'seed2').glob('*.pth'))
    assert not _trainers(runs / 'seed0')  # the hung one was killed

    # a test killed while writing its metrics: no result, no traceback
    (runs / 'seed0' / 'test_metrics.json').write_text('{"accuracy/to')
    proc = _run(tmp, work, '--report-only', seeds=4, config='base_hang.py',
                rc=1)
    assert 'baseline seed 0' in proc.stdout.split('Runs not finished')[1], \
        proc.stdout


def test_no_checkpoint_is_a_failure_not_a_crash(project):
    """Training that saves no checkpoint: that run fails with a line that
    says why (not a TypeError that aborts the experiment)."""
    proc = _run(project, 'exp_nockpt', '--cfg-options',
                'default_hooks.checkpoint.interval=5',
                'default_hooks.checkpoint.save_last=False', rc=1)
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    report = (project / 'exp_nockpt' / 'report.md').read_text()
    assert 'training ended without a checkpoint' in report, report


def test_a_config_of_mmpretrain_plans(project):
    """``--config mmpretrain::...`` (the package's config loader): the runs
    are planned on the shipped config with the user's data."""
    data = ['--cfg-options'] + [
        f'{split}_dataloader.dataset.{k}'
        for split in ('train', 'val', 'test') for k in (
            f'data_root={project / "inet"}', 'classes=[cat,dog,ship]')]
    if not (project / 'inet' / 'train').is_dir():
        for split in ('train', 'val', 'test'):
            make_image_folder(project / 'inet' / split, per_class=2,
                              classes=CLASSES)
    proc = _run(project, 'exp_mm', '--print-commands', *data,
                config='mmpretrain::resnet/resnet18_8xb32_in1k.py')
    assert len(proc.stdout.splitlines()) == 1, proc.stderr[-3000:]
    cfg = (project / 'exp_mm/runs/baseline/seed0/config.py').read_text()
    assert "type='ResNet'" in cfg and str(project / 'inet') in cfg
