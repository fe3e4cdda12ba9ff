"""The demo pipeline on a tiny slice, with the real models, so it cannot rot.

Real SmolLM2 writes one short description per class, real all-MiniLM-L6-v2
embeds them (and the classname prompts), all four arms train one epoch on
256 real Fashion-MNIST images and are tested; the report and the curves must
appear, and a rerun must reuse every cached step.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'
REPO_DATA = osp.join(REPO, 'data', 'fashion_mnist')
ARMS = 'baseline,gpt4image,classname,random'


def _demo(work_dir: str, data_root: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, 'tools/demo.py', '--quick', '--arms', ARMS,
         '--work-dir', work_dir, '--data-root', data_root], cwd=REPO,
        capture_output=True, text=True,
        env=dict(os.environ, PYTHONWARNINGS='ignore'), timeout=900)


def test_demo_quick(tmp_path):
    pytest.importorskip('gguf')
    pytest.importorskip('matplotlib')
    pytest.importorskip('all_minilm_l6_v2')
    from gpt4image_demo.fashion_mnist import is_prepared
    if is_prepared(REPO_DATA):
        data_root = REPO_DATA  # reuse the repo's prepared copy
    elif osp.isfile(osp.join(SYSTEM_DIR, 'train-images-idx3-ubyte.gz')):
        data_root = str(tmp_path / 'data')  # unzip the Debian copy here
    else:
        pytest.skip('Fashion-MNIST is not on this machine (Debian package '
                    'dataset-fashion-mnist); the test downloads nothing')
    work = str(tmp_path / 'demo')
    res = _demo(work, data_root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = open(osp.join(work, 'report.md'), encoding='utf-8').read()
    assert osp.getsize(osp.join(work, 'curves.png')) > 1000
    rows = {ln.split('|')[1].strip(): ln for ln in report.splitlines()
            if ln.startswith('| ')}
    for title in ('baseline', 'GPT4Image', 'class name', 'random vectors'):
        assert title in rows, report  # every arm has its row
    # the aligned arms: a neck retrieval top-1 (a number), none for baseline
    for title in ('GPT4Image', 'class name', 'random vectors'):
        assert float(rows[title].split('|')[3].strip()) >= 0
    assert rows['baseline'].split('|')[3].strip() == '–'
    # every deployed model has the baseline's parameters and FLOPs
    assert len({ln.split('|')[6] for t, ln in rows.items() if t in (
        'baseline', 'GPT4Image', 'class name', 'random vectors')}) == 1
    for pair in ('GPT4Image − baseline', 'class name − baseline',
                 'random vectors − baseline', 'GPT4Image − class name',
                 'GPT4Image − random vectors'):
        assert pair in rows, report
    assert 'One seed cannot tell' in report
    assert report.strip() in res.stdout  # printed to the terminal too
    # the descriptions' analysis is part of the report
    assert osp.isfile(osp.join(work, 'analysis', 'report.md'))
    assert 'leave-one-out nearest-centroid accuracy' in report
    for store in ('store', 'store_classname', 'store_random'):
        assert osp.isfile(osp.join(work, store, 'manifest.json'))

    again = _demo(work, data_root)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert 'Fashion-MNIST already prepared' in again.stdout
    assert again.stdout.count('(cached)') == 4  # every arm's run
    assert again.stdout.count('cached') >= 8  # + captions, stores, analysis
