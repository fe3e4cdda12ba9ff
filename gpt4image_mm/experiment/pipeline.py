"""``tools/experiment.py``: does the text help on *this* dataset and config?

Plan every arm x seed (x images per class) as a generated config, run them
through ``tools/train.py`` + ``tools/test.py`` (or print them for a
cluster), measure each aligned run's neck retrieval, and write the report:
``report.md`` with paired intervals over seeds and test images (and
the same as data in ``report.json``), ``curves.png`` (and ``shots.png``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import os.path as osp
import sys
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Sequence

from gpt4image_mm.experiment.arms import ARMS, CLASSNAME_PROMPT
from gpt4image_mm.experiment.cache import (
    Marker,
    banner,
    command,
    config_digest,
    file_digest,
    run_tool,
)
from gpt4image_mm.experiment.environment import environment, environment_lines
from gpt4image_mm.experiment.execute import METRICS, collect, run_all, shell_line
from gpt4image_mm.experiment.html import write_experiment_page
from gpt4image_mm.experiment.plan import (
    PRINT,
    REPORT,
    TRAIN,
    ExperimentSettings,
    Run,
    base_store,
    parse_options,
    plan_runs,
)
from gpt4image_mm.experiment.report import (
    analysis_lines,
    arm_table,
    by_arm,
    comparison_table,
    deployed_cost,
    failure_lines,
    plot_curves,
    plot_shots,
    report_data,
    rising_lines,
    seed_table,
    shots_comparison_lines,
    shots_points,
    shots_table,
    titles,
)
from gpt4image_mm.experiment.schedule import MAX_STRETCH
from gpt4image_mm.utils.errors import InputError
from gpt4image_mm.utils.files import OutputLock, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)
ONE_SEED = ('One seed cannot tell an effect from seed noise: rerun with '
            '`--seeds 5` (only the new seeds train) for paired 95% '
            'intervals.')


def neck_top1(run: Run, result: Dict[str, Any], encoder: str
              ) -> Optional[float]:
    """Test top-1 of retrieving each test image's class target through the
    alignment neck (no classifier head), cached in the run dir."""
    ckpt = result.get('checkpoint')
    if not ckpt or not osp.isfile(ckpt):
        return None
    marker = Marker(osp.join(run.work_dir, 'neck_top1.json'), dict(
        checkpoint=ckpt, size=osp.getsize(ckpt), key=run.key))
    cached = marker.load()
    if cached is not None:
        return cached['top1']
    top1 = 100 * retrieval_top1(run.config, ckpt, run.store, encoder)
    marker.save(dict(top1=top1))
    return top1


def retrieval_top1(config: str, ckpt: str, store: str, encoder: str
                   ) -> float:
    """Share of test images whose nearest class prototype (cosine, in the
    text space the neck maps into) is their own class."""
    import numpy as np

    from gpt4image_mm.apis import TextQueryInferencer
    inferencer = TextQueryInferencer(config, ckpt, device='cpu',
                                     text_encoder=encoder)
    feats, labels, names = inferencer.split_features('test')
    protos = class_prototypes(store, names)
    pred = (feats.numpy() @ protos.T).argmax(1)
    return float(np.mean(pred == np.asarray(labels)))


def class_prototypes(store: str, names: List[str]):
    """``C x D`` unit vectors: per class, the normalised mean of its rows
    (class-level stores), or of its samples' rows (per-image stores)."""
    import numpy as np

    from gpt4image_mm.datasets.store import EmbeddingStore
    from gpt4image_mm.utils.keys import base_key, class_key
    st = EmbeddingStore(store)
    rows = np.asarray(st.embeddings, dtype=np.float32)
    bases = [base_key(k) for k in st.keys()]
    out = []
    for name in names:
        mine = [i for i, b in enumerate(bases) if b == class_key(name)]
        if not mine:  # per-image keys: <class folder>/<file>
            mine = [i for i, b in enumerate(bases)
                    if b.split('/', 1)[0] == name]
        if not mine:
            raise InputError(f'{store}: no row for class {name!r}')
        out.append(rows[mine].mean(0))
    protos = np.stack(out)
    return protos / np.linalg.norm(protos, axis=1, keepdims=True)


def step_analysis(work_dir: str, descriptions: str, store: str,
                  per_class: bool, config: Optional[str] = None,
                  options: Sequence[str] = (),
                  class_names: Optional[str] = None) -> Dict[str, Any]:
    """The descriptions' quality (``tools/analyze_descriptions.py``), with
    the dataset's config (its classes and every image's label: "names its
    own class" is measured, not n/a) and the user's class names."""
    out = osp.join(work_dir, 'analysis')
    banner('analysis', f'tools/analyze_descriptions.py -> {out}/report.md')
    marker = Marker(osp.join(work_dir, 'steps', 'analysis.json'), dict(
        descriptions=file_digest(descriptions),
        store=file_digest(osp.join(store, 'manifest.json')),
        config=config and config_digest(config), options=list(options),
        class_names=class_names and file_digest(class_names)))
    cached = marker.load()
    if cached is not None:
        logger.info('cached')
        return cached
    dataset = ['--config', config] if config else []
    if config and options:
        dataset += ['--cfg-options', *options]
    run_tool(command('analyze') + [
        descriptions, *(['--per-class'] if per_class else []), *dataset,
        *(['--class-names', class_names] if class_names else []),
        '--store', store, '--out', out, '--no-progress'],
             log=osp.join(work_dir, 'analysis.log'), cwd=os.getcwd())
    with open(osp.join(out, 'metrics.json'), encoding='utf-8') as f:
        metrics = json.load(f)['descriptions']
    marker.save(metrics)
    return metrics


def settings_lines(s: ExperimentSettings) -> List[str]:
    """What was compared, for the report's head."""
    per = 'the config\'s store' if not s.store else f'`{s.store}`'
    return [
        f'- plain config: `{s.config}`; GPT4Image config: '
        f'`{s.gpt4image_config}` ({per})',
        f'- arms: {", ".join(titles()[a] for a in s.arms)}; every aligned '
        'arm trains the GPT4Image config and differs only in its store '
        f'(`classname`: "{CLASSNAME_PROMPT}" by the store\'s encoder, '
        '`random`: a seeded random unit vector per class)',
        '- class names in texts: '
        + (f'`{s.class_names}`' if s.class_names else 'the dataset\'s, '
           'underscores as spaces'),
        f'- seeds: 0..{s.seeds - 1}, the same for every arm'
        + (f'; images per class: {", ".join(map(str, s.shots))} (a seeded '
           'subset, the same for every arm and seed) and the full set'
           if s.shots else ''),
        f'- options for every arm: `{" ".join(s.cfg_options)}`'
        if s.cfg_options else '- options for every arm: none',
        '- neck retrieval top-1: each test image, mapped through the '
        'trained alignment neck, retrieves the nearest class target of its '
        'arm (mean of the class\'s store rows); no classifier head',
        '- runs: generated configs in `runs/<arm>/seed<k>/config.py`; '
        'rerun one by hand with `tools/train.py` on it',
    ]


def write_report(s: ExperimentSettings, runs: List[Run],
                 results: List[Dict[str, Any]], env: Dict[str, Any],
                 head: Optional[List[str]] = None,
                 tail: Optional[List[str]] = None,
                 analysis: Optional[Dict[str, Any]] = None,
                 one_seed: str = ONE_SEED) -> str:
    """``report.md`` (+ ``curves.png``, ``shots.png``); returns its text."""
    banner('report', f'{s.work_dir}/report.md and curves.png')
    ok = [r for r in results if r and not r.get('failed')]
    failed = [r for r in results if r and r.get('failed')]
    missing = [run.name for run, r in zip(runs, results) if r is None]
    full = [r for r in ok if not r.get('shots')]
    by = by_arm(s.arms, full)
    lines = [f'# {s.title}', '', *(head or settings_lines(s)), '']
    cost: Dict[str, Any] = {}
    if full:
        plot_curves(s.arms, full, osp.join(s.work_dir, 'curves.png'),
                    s.title)
        cost = deployed_cost(s, s.arms, full)
        lines += [*arm_table(s.arms, by, cost), '',
                  *comparison_table([a for a in s.arms if by[a]], by,
                                    one_seed), '',
                  'Test top-1 per run (in brackets: the rise of the '
                  'validation curve over its last validations):', '',
                  *seed_table(s.arms, by), '',
                  '![validation top-1 per validation](curves.png)', '']
    points: Dict[str, Any] = {}
    if s.shots and ok:
        points = shots_points(s.arms, ok, _full_per_class(runs))
        plot_shots(points, osp.join(s.work_dir, 'shots.png'))
        lines += ['Test top-1 (%) by training images per class, mean ± 95% '
                  'interval half-width (seeds and test set):', '',
                  *shots_table(points), '', '![test top-1 vs images per '
                  'class](shots.png)', '',
                  *shots_comparison_lines(s.arms, ok, one_seed),
                  SCHEDULE_NOTE, '']
    lines += [*rising_lines(ok), *failure_lines(failed, missing),
              *analysis_lines(analysis), *(tail or []),
              *environment_lines(env), '']
    text = '\n'.join(lines)
    atomic_write_text(osp.join(s.work_dir, 'report.md'), text)
    atomic_write_json(osp.join(s.work_dir, 'report.json'), report_data(
        s.arms, results, dict(
            title=s.title, settings=asdict(s), head=head or
            settings_lines(s), missing=missing, cost=cost,
            shots_points={a: [list(p) for p in pts]
                          for a, pts in points.items()},
            analysis=analysis, environment=env)), indent=1, default=str)
    write_experiment_page(s, runs, results, text)
    return text


SCHEDULE_NOTE = (
    'A run on K images per class keeps the full run\'s optimizer steps: '
    'its epochs, validation / checkpoint intervals and epoch-based lr '
    'schedule are multiplied by round(full-set / subset iterations per '
    f'epoch), at most {MAX_STRETCH}x (docs/experiment.md, "Fewer '
    'images").')


def attach_predictions(runs: List[Run],
                       results: List[Optional[Dict[str, Any]]]) -> None:
    """Each finished run's per-image correctness (0/1 in test-set order)
    from the predictions its test step saved beside its metrics."""
    import numpy as np

    from gpt4image_mm.engine.hooks.prediction_hook import (
        PREDICTIONS_FORMAT,
        predictions_path,
    )
    for run, r in zip(runs, results):
        if not r or r.get('failed'):
            continue
        path = predictions_path(osp.join(run.work_dir, METRICS))
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
        except (OSError, ValueError):
            logger.info('%s: no per-image predictions (%s)', run.name, path)
            continue
        if data.get('format') != PREDICTIONS_FORMAT:
            logger.info('%s: %s is not %s', run.name, path,
                        PREDICTIONS_FORMAT)
            continue
        r['correct'] = (np.asarray(data['pred_label']) ==
                        np.asarray(data['gt_label'])).astype(np.int8)


def check_class_names(s: ExperimentSettings) -> None:
    """A ``--class-names`` file that does not fit the dataset's classes is
    one line before anything is planned or trained."""
    if s.class_names:
        from gpt4image_mm.experiment.plan import _class_names
        from gpt4image_mm.utils.class_names import class_display_names
        class_display_names(_class_names(s), s.class_names)


def _full_per_class(runs: List[Run]) -> float:
    """Mean training images per class of the full set (the plot's x)."""
    from gpt4image_mm.datasets.from_config import build_split_dataset
    from gpt4image_mm.utils.keys import class_names
    full = next(r for r in runs if not r.shots)
    ds = build_split_dataset(full.config, 'train')
    return len(ds) / len(class_names(ds))


def run_experiment(s: ExperimentSettings, print_commands: bool = False,
                   report_only: bool = False,
                   head: Optional[List[str]] = None,
                   tail: Optional[List[str]] = None,
                   one_seed: str = ONE_SEED) -> int:
    """All of it; the exit code (0: every run finished and reported)."""
    start = time.time()
    s.work_dir = osp.abspath(s.work_dir)
    os.makedirs(s.work_dir, exist_ok=True)
    with OutputLock(osp.join(s.work_dir, 'experiment.lock'),
                    f'experiment {s.work_dir}', 'experiment.py'):
        if not (print_commands or report_only):  # read-only: no file changes
            atomic_write_json(osp.join(s.work_dir, 'settings.json'),
                              asdict(s), indent=2)
        # --print-commands: stdout holds the shell lines alone (a pipe)
        with contextlib.redirect_stdout(sys.stderr if print_commands
                                        else sys.stdout):
            banner('plan', f'{len(s.arms)} arm(s) x {s.seeds} seed(s)'
                   + (f' x {1 + len(s.shots)} data sizes' if s.shots else '')
                   + f' -> {s.work_dir}/runs/')
            check_class_names(s)
            runs = plan_runs(s, PRINT if print_commands else
                             REPORT if report_only else TRAIN)
            todo = [run for run in runs if collect(run) is None]
        if print_commands:
            print('\n'.join(shell_line(run) for run in todo), flush=True)
            return 0
        threads = s.threads or max(1, (os.cpu_count() or 1) //
                                   max(1, s.parallel))
        if report_only:
            results = [collect(run) for run in runs]
        else:
            banner('runs', f'{len(runs)} runs, {s.parallel} at a time, '
                   f'{threads} thread(s) each; logs in '
                   f'{s.work_dir}/runs/<arm>/seed<k>/train.log')
            results = run_all(runs, s.parallel, threads, s.run_timeout)
        _add_neck(s, runs, results)
        attach_predictions(runs, results)
        analysis = _analysis(s)
        text = write_report(s, runs, results, environment(threads), head,
                            tail, analysis, one_seed)
    print('\n' + text)
    logger.info('experiment finished in %.0f s: %s/report.md',
                time.time() - start, s.work_dir)
    return 0 if all(r and not r.get('failed') for r in results) else 1


def _add_neck(s: ExperimentSettings, runs: List[Run],
              results: List[Optional[Dict[str, Any]]]) -> None:

    from gpt4image_mm.utils.config import load_config
    encoder = None
    for run, r in zip(runs, results):
        if not run.store or not r or r.get('failed'):
            continue
        if encoder is None:
            store = base_store(s, load_config(s.gpt4image_config))
            with open(osp.join(store, 'manifest.json'),
                      encoding='utf-8') as f:
                encoder = json.load(f)['encoder']
        top1 = neck_top1(run, r, encoder)
        if top1 is not None:
            r['neck_top1'] = top1


def _analysis(s: ExperimentSettings) -> Optional[Dict[str, Any]]:
    if not s.descriptions:
        return None

    from gpt4image_mm.experiment.plan import description_dataset
    from gpt4image_mm.utils.config import load_config
    cfg = load_config(s.gpt4image_config)
    cfg.merge_from_dict(parse_options(s.cfg_options))
    store = base_store(s, cfg)
    node = description_dataset(cfg)
    return step_analysis(s.work_dir, s.descriptions, store,
                         bool(node.get('per_class')), s.config,
                         analysis_options(s.cfg_options), s.class_names)


def analysis_options(options: List[str]) -> List[str]:
    """The experiment's options that shape the plain config's training
    set (what the analysis labels), not its schedule or model."""
    return [o for o in options if o.split('=', 1)[0].startswith(
        'train_dataloader.')]


__all__ = ['ARMS', 'ExperimentSettings', 'run_experiment']
