"""An experiment's report: ``report.md`` (printed too), ``curves.png`` and,
with ``--shots``, ``shots.png``."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from gpt4image_mm.experiment.arms import ARMS
from gpt4image_mm.experiment.stats import (
    INTERVAL_METHOD,
    RISE_POINTS,
    RISE_WINDOW,
    comparisons,
    crossed_estimate,
    end_trend,
    headline,
    mean_std,
    pm,
    still_rising,
    t95,
)


def titles() -> Dict[str, str]:
    return {name: arm.title for name, arm in ARMS.items()}


def input_shape(config: str) -> tuple:
    """The shape of one test input after the test pipeline (C, H, W)."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    from gpt4image_mm.utils.config import load_config
    cfg = load_config(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    ds = DATASETS.build(cfg.test_dataloader.dataset)
    return tuple(ds[0]['inputs'].shape)


def deployed_cost(s: Any, arms: List[str],
                  results: List[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Parameters and FLOPs of each arm's *deployed* model (one test input).

    An aligned checkpoint is stripped of its alignment head and loaded
    strictly into the baseline architecture: that it loads is the proof
    that deployment costs nothing extra.
    """
    import torch
    from mmengine.analysis import get_model_complexity_info
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from gpt4image_mm.engine.checkpoint import strip_state_dict
    from gpt4image_mm.utils.config import load_config

    init_default_scope('mmpretrain')
    # the newest logger is "current": keep the counter's notes about
    # uncounted ops (batch norm, pooling) off the terminal
    MMLogger.get_instance('gpt4image_experiment_cost', log_level='ERROR')
    base_cfg = load_config(s.config).model
    shape = None
    out = {}
    for arm in arms:
        run = next((r for r in results if r['arm'] == arm), None)
        if run is None:
            continue
        shape = shape or input_shape(run['config'])
        model = MODELS.build(base_cfg)
        ckpt = torch.load(run['checkpoint'], map_location='cpu',
                          weights_only=True)
        model.load_state_dict(strip_state_dict(ckpt['state_dict'])[0],
                              strict=True)
        info = get_model_complexity_info(model.eval(), input_shape=shape,
                                         show_table=False, show_arch=False)
        trained = MODELS.build(load_config(run['config']).model)
        out[arm] = dict(params=_count(model), flops=float(info['flops']),
                        train_params=_count(trained))
    return out


def _count(model: Any) -> float:
    return float(sum(p.numel() for p in model.parameters()))


def human(x: float) -> str:
    for unit, div in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if x >= div:
            return f'{x / div:.2f} {unit}'
    return f'{x:.0f}'


def plot_curves(arms: List[str], results: List[Dict[str, Any]],
                path: str, title: str) -> None:
    """Validation top-1 per epoch: every seed thin, the mean thick."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for arm in arms:
        curves = [r['curve'] for r in results if r['arm'] == arm and
                  r['curve']]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        epochs = list(range(1, n + 1))
        color = ARMS[arm].color
        for c in curves:
            ax.plot(epochs, c[:n], color=color, alpha=0.25, lw=1)
        mean = [sum(c[e] for c in curves) / len(curves) for e in range(n)]
        ax.plot(epochs, mean, color=color, lw=2, marker='o', ms=3,
                label=f'{titles()[arm]} (mean of {len(curves)} seed(s))')
    ax.set_xlabel('validation')
    ax.set_ylabel('validation top-1 (%)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def by_arm(arms: List[str], results: List[Dict[str, Any]]
           ) -> Dict[str, List[Dict[str, Any]]]:
    return {a: sorted((r for r in results if r['arm'] == a),
                      key=lambda r: r['seed']) for a in arms}


def arm_table(arms: List[str], runs: Dict[str, List[Dict[str, Any]]],
              cost: Dict[str, Dict[str, float]]) -> List[str]:
    """One row per arm: classifier top-1, neck retrieval top-1, the
    convergence check, time and the deployed model's size."""
    n = max(len(rs) for rs in runs.values())
    seeds = f'mean ± std over {n} seeds' if n > 1 else '1 seed'
    lines = [f'| arm | test top-1 (%), {seeds} | neck retrieval top-1 (%) | '
             f'rise over the last {RISE_WINDOW} validations, worst seed '
             '(pts) | training time (s) | '
             'parameters at inference | FLOPs at inference | parameters '
             'while training |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    for arm in arms:
        rs, c = runs[arm], cost.get(arm)
        if not rs or c is None:
            lines.append(f'| {titles()[arm]} | no finished run |' + ' – |' * 6)
            continue
        neck = (pm([r['neck_top1'] for r in rs]) if ARMS[arm].aligned
                and all('neck_top1' in r for r in rs) else '–')
        spread = trend_cell([r['curve'] for r in rs])
        times = [r['train_seconds'] for r in rs
                 if r.get('train_seconds') is not None]
        lines.append(
            f'| {titles()[arm]} | {pm([r["top1"] for r in rs])} | {neck} | '
            f'{spread} | {pm(times, "{:.0f}") if times else "–"} | '
            f'{human(c["params"])} | {human(c["flops"])} | '
            f'{human(c["train_params"])} |')
    return lines


def trend_cell(curves: Sequence[Sequence[float]]) -> str:
    """The worst (largest) end rise of some runs, marked when rising."""
    rises = [end_trend(c) for c in curves]
    if not rises or None in rises:
        return '–'
    worst = max(rises)
    return f'{worst:+.2f}' + (' still rising' if worst >= RISE_POINTS
                              else '')


def arm_comparisons(arms: List[str],
                    runs: Dict[str, List[Dict[str, Any]]]) -> List[Any]:
    """The paired comparisons of some runs (one data size), with each
    run's per-image correctness and convergence."""
    return comparisons(
        {a: {r['seed']: r['top1'] for r in runs[a]} for a in arms},
        {a: {r['seed']: r['correct'] for r in runs[a]
             if r.get('correct') is not None} for a in arms},
        {a: {r['seed']: still_rising(r.get('curve') or []) for r in runs[a]}
         for a in arms})


def comparison_table(arms: List[str],
                     runs: Dict[str, List[Dict[str, Any]]],
                     one_seed: str) -> List[str]:
    pairs = arm_comparisons(arms, runs)
    if not pairs:
        return []
    lines = ['| comparison (test top-1) | paired difference over seeds '
             '(pts) | 95% interval (seeds + test set) | of which test set '
             '(± pts) | verdict |', '| --- | ---: | ---: | ---: | --- |']
    for p in pairs:
        est = p.estimate
        interval = (f'{est.interval[0]:+.2f} to {est.interval[1]:+.2f}'
                    if est else '–')
        image = (f'{t95(est.dof) * math.sqrt(est.image_var):.2f}'
                 if est else '–')
        lines.append(f'| {titles()[p.a]} − {titles()[p.b]} | '
                     f'{pm(p.diffs, "{:+.2f}")} | {interval} | {image} | '
                     f'{p.verdict} |')
    return lines + ['', headline(pairs, titles(), one_seed), '',
                    f'Interval: {INTERVAL_METHOD}. A verdict (better / '
                    f'worse) needs at least 3 seeds and an interval that '
                    f'excludes zero; "unconverged runs": a run of the pair '
                    f'rose {RISE_POINTS:g} point or more over its last '
                    f'{RISE_WINDOW} validations.']


def seed_table(arms: List[str],
               runs: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """Every run: test top-1 and (in brackets) the rise of its validation
    curve over the last validations (marked when still rising)."""
    lines = ['| seed | ' + ' | '.join(titles()[a] for a in arms) + ' |',
             '| ---: |' + ' ---: |' * len(arms)]
    seeds = sorted({r['seed'] for rs in runs.values() for r in rs})
    for seed in seeds:
        cells = []
        for a in arms:
            r = next((r for r in runs[a] if r['seed'] == seed), None)
            if r is None:
                cells.append('–')
                continue
            rise = end_trend(r['curve'])
            extra = '' if rise is None else f' ({rise:+.2f}' + (
                ', still rising)' if rise >= RISE_POINTS else ')')
            cells.append(f'{r["top1"]:.2f}{extra}')
        lines.append(f'| {seed} | ' + ' | '.join(cells) + ' |')
    return lines


def failure_lines(failed: List[Dict[str, Any]],
                  missing: Sequence[str]) -> List[str]:
    """Runs that failed (their log's last line) or have not run yet."""
    lines = []
    if failed:
        lines += ['Failed runs (not in the tables above):', ''] + [
            f'- {titles()[r["arm"]]}'
            f'{" " + str(r["shots"]) + "-shot" if r.get("shots") else ""} '
            f'seed {r["seed"]}: `{r["error"]}` (log: {r["log"]})'
            for r in failed] + ['']
    if missing:
        lines += ['Runs not finished yet (run them, then `--report-only`): '
                  + ', '.join(missing) + '.', '']
    return lines


def interval_band(xs: Sequence[float],
                  correct: Optional[Sequence[Any]] = None) -> tuple:
    """Mean and the half-width of its 95% interval: over seeds and test
    images where every run's per-image correctness is given (never
    zero-wide), else over seeds alone (0 for one value)."""
    mean, std = mean_std(xs)
    n = len(xs)
    if n > 1 and correct and all(c is not None for c in correct) and \
            len({len(c) for c in correct}) == 1:
        import numpy as np
        est = crossed_estimate(100.0 * np.asarray(correct, float))
        return mean, est.half_width
    return mean, (t95(n - 1) * std / math.sqrt(n) if n > 1 else 0.0)


def shots_points(arms: List[str], results: List[Dict[str, Any]],
                 full_per_class: float) -> Dict[str, List[tuple]]:
    """Per arm: (images per class, mean top-1, 95% half-width) by size."""
    out: Dict[str, List[tuple]] = {}
    for arm in arms:
        sizes = sorted({r.get('shots') or 0 for r in results
                        if r['arm'] == arm}, key=lambda k: k or 1e18)
        pts = []
        for k in sizes:
            rs = [r for r in results if r['arm'] == arm
                  and (r.get('shots') or 0) == k]
            pts.append((k or full_per_class, *interval_band(
                [r['top1'] for r in rs], [r.get('correct') for r in rs])))
        out[arm] = pts
    return out


def shots_table(points: Dict[str, List[tuple]]) -> List[str]:
    sizes = sorted({x for pts in points.values() for x, _, _ in pts})
    lines = ['| arm | ' + ' | '.join(f'{x:g} / class' for x in sizes)
             + ' |', '| --- |' + ' ---: |' * len(sizes)]
    for arm, pts in points.items():
        cell = {x: f'{m:.2f} ± {h:.2f}' for x, m, h in pts}
        lines.append(f'| {titles()[arm]} | '
                     + ' | '.join(cell.get(x, '–') for x in sizes) + ' |')
    return lines


def plot_shots(points: Dict[str, List[tuple]], path: str) -> None:
    """Test top-1 against images per class, one line per arm with its 95%
    interval band."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for arm, pts in points.items():
        xs, ms, hs = zip(*pts)
        color = ARMS[arm].color
        ax.plot(xs, ms, color=color, marker='o', label=titles()[arm])
        ax.fill_between(xs, [m - h for m, h in zip(ms, hs)],
                        [m + h for m, h in zip(ms, hs)], color=color,
                        alpha=0.15)
    ax.set_xscale('log')
    ax.set_xlabel('training images per class')
    ax.set_ylabel('test top-1 (%)')
    ax.set_title('test top-1 vs images per class (band: 95% interval)')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def analysis_lines(m: Optional[Dict[str, Any]]) -> List[str]:
    if not m:
        return []

    def pct(key: str) -> str:
        value = m.get(key)
        if value is None or value != value:  # absent or NaN (one per class)
            return 'n/a'
        return f'{100 * value:.0f} %'
    return [
        'The descriptions, measured before training '
        '(`tools/analyze_descriptions.py`, full report in '
        '[analysis/report.md](analysis/report.md)): '
        f'{m["descriptions"]} descriptions, {m["failures"]} failures, '
        f'{m["refusals"]} refusals, {m["exact_duplicates"]} exact duplicates '
        f'and {m.get("near_duplicate_pairs", 0)} near-duplicate pairs; median '
        f'{m.get("words_median", 0):.0f} words, '
        f'{pct("clip77_truncated_share")} would be cut at CLIP\'s 77 '
        f'tokens; {pct("names_own_class_share")} name their own class, '
        f'{pct("names_other_class_share")} another; leave-one-out '
        f'nearest-centroid accuracy {pct("loo_centroid_accuracy")}.', '']




def rising_lines(results: List[Dict[str, Any]]) -> List[str]:
    """The runs that stopped while their validation curve still climbed
    (a fitted rise over the last validations, not the spread: a steady
    climb of 1 point an epoch has a small spread and is far from done)."""
    rising = [r for r in results if still_rising(r.get('curve') or [])]
    if not rising:
        return []
    return [f'**Not converged**: {len(rising)} run(s) were still rising at '
            f'their last validation (least-squares rise over the last '
            f'{RISE_WINDOW} validations ≥ {RISE_POINTS:g} point); their '
            'test top-1 is a point on the way up, and a comparison that '
            'uses them says so. Train longer (`--cfg-options '
            'train_cfg.max_epochs=...`):', ''] + [
        f'- {run_title(r)}: {end_trend(r["curve"]):+.2f} points over the '
        f'last {min(RISE_WINDOW, len(r["curve"]))} validations (last '
        f'{r["curve"][-1]:.2f})' for r in rising] + ['']


def run_title(r: Dict[str, Any]) -> str:
    shots = f' {r["shots"]}-shot' if r.get('shots') else ''
    return f'{titles()[r["arm"]]}{shots} seed {r["seed"]}'


def shots_comparison_lines(arms: List[str], results: List[Dict[str, Any]],
                           one_seed: str) -> List[str]:
    """The paired comparisons at each images-per-class size."""
    lines: List[str] = []
    for k in sorted({r['shots'] for r in results if r.get('shots')}):
        by = by_arm(arms, [r for r in results if r.get('shots') == k])
        table = comparison_table([a for a in arms if by[a]], by, one_seed)
        if table:
            lines += [f'Paired comparisons at {k} images per class:', '',
                      *table, '']
    return lines


def run_record(r: Dict[str, Any]) -> Dict[str, Any]:
    """One run as plain data (report.json): no per-image arrays."""
    out = {k: v for k, v in r.items() if k != 'correct'}
    curve = r.get('curve') or []
    out['end_rise'] = end_trend(curve)
    out['still_rising'] = still_rising(curve)
    out['test_images'] = (None if r.get('correct') is None
                          else len(r['correct']))
    return out


def report_data(arms: List[str], results: List[Dict[str, Any]],
                extra: Dict[str, Any]) -> Dict[str, Any]:
    """Everything the report says, as plain data (``report.json``): a
    page or a script renders it without parsing Markdown."""
    ok = [r for r in results if r and not r.get('failed')]
    sizes = sorted({r.get('shots') or 0 for r in ok})
    comps = []
    for k in sizes:
        by = by_arm(arms, [r for r in ok if (r.get('shots') or 0) == k])
        for p in arm_comparisons([a for a in arms if by[a]], by):
            comps.append(dict(p.to_dict(), shots=k or None))
    return dict(format='gpt4image-experiment-report/1', arms=[
        dict(name=a, title=titles()[a], color=ARMS[a].color,
             aligned=ARMS[a].aligned) for a in arms],
        runs=[run_record(r) for r in results if r],
        comparisons=comps, interval_method=INTERVAL_METHOD,
        rise_rule=dict(window=RISE_WINDOW, min_rise_points=RISE_POINTS),
        **extra)
