"""The demo's report: ``report.md`` (printed too) and ``curves.png``."""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, List, Optional

from gpt4image_mm.files import atomic_write_text

from .arms import ARMS, CLASSNAME_PROMPT
from .cache import banner
from .stats import comparisons, headline, last_epochs_spread, pm

TITLES = {name: arm.title for name, arm in ARMS.items()}


def deployed_cost(s: Any, arms: List[str],
                  results: List[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Parameters and FLOPs of each arm's *deployed* model (1 x 28 x 28).

    An aligned checkpoint is stripped of its alignment head and loaded
    strictly into the baseline architecture: that it loads is the proof
    that deployment costs nothing extra.
    """
    import torch
    from mmengine.analysis import get_model_complexity_info
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from gpt4image_mm.checkpoint import strip_state_dict

    init_default_scope('mmpretrain')
    # the newest logger is "current": keep the counter's notes about
    # uncounted ops (batch norm, pooling) off the terminal
    MMLogger.get_instance('gpt4image_demo_cost', log_level='ERROR')
    base_cfg = Config.fromfile(s.baseline_config).model
    out = {}
    for arm in arms:
        run = next(r for r in results if r['arm'] == arm)
        model = MODELS.build(base_cfg)
        ckpt = torch.load(run['checkpoint'], map_location='cpu',
                          weights_only=True)
        model.load_state_dict(strip_state_dict(ckpt['state_dict'])[0],
                              strict=True)
        info = get_model_complexity_info(model.eval(), input_shape=(1, 28, 28),
                                         show_table=False, show_arch=False)
        trained = MODELS.build(Config.fromfile(
            s.gpt4image_config if ARMS[arm].aligned else
            s.baseline_config).model)
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
                path: str) -> None:
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
                label=f'{TITLES[arm]} (mean of {len(curves)} seed(s))')
    ax.set_xlabel('epoch')
    ax.set_ylabel('validation top-1 (%)')
    ax.set_title('Fashion-MNIST: the demo\'s arms')
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
    n = len(runs[arms[0]])
    seeds = f'mean ± std over {n} seeds' if n > 1 else '1 seed'
    lines = [f'| arm | test top-1 (%), {seeds} | neck retrieval top-1 (%) | '
             'last-3-epoch spread, worst seed (pts) | training time (s) | '
             'parameters at inference | FLOPs at inference | parameters '
             'while training |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    for arm in arms:
        rs, c = runs[arm], cost[arm]
        neck = (pm([r['neck_top1'] for r in rs]) if ARMS[arm].aligned
                and all('neck_top1' in r for r in rs) else '–')
        spreads = [last_epochs_spread(r['curve']) for r in rs]
        spread = ('–' if None in spreads else f'{max(spreads):.2f}')
        lines.append(
            f'| {TITLES[arm]} | {pm([r["top1"] for r in rs])} | {neck} | '
            f'{spread} | {pm([r["train_seconds"] for r in rs], "{:.0f}")} | '
            f'{human(c["params"])} | {human(c["flops"])} | '
            f'{human(c["train_params"])} |')
    return lines


def comparison_table(arms: List[str],
                     runs: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    pairs = comparisons({a: {r['seed']: r['top1'] for r in runs[a]}
                         for a in arms})
    if not pairs:
        return []
    lines = ['| comparison (test top-1) | paired difference (pts) | '
             '95% interval | verdict |', '| --- | ---: | ---: | --- |']
    for p in pairs:
        ci = p.interval
        interval = f'{ci[0]:+.2f} to {ci[1]:+.2f}' if ci else '–'
        lines.append(f'| {TITLES[p.a]} − {TITLES[p.b]} | '
                     f'{pm(p.diffs, "{:+.2f}")} | {interval} | {p.verdict} |')
    return lines + ['', headline(pairs, TITLES)]


def seed_table(arms: List[str],
               runs: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """Every run: test top-1 and (in brackets) its last-3-epoch spread."""
    lines = ['| seed | ' + ' | '.join(TITLES[a] for a in arms) + ' |',
             '| ---: |' + ' ---: |' * len(arms)]
    for i, base in enumerate(runs[arms[0]]):
        cells = []
        for a in arms:
            r = runs[a][i]
            spread = last_epochs_spread(r['curve'])
            extra = f' ({spread:.2f})' if spread is not None else ''
            cells.append(f'{r["top1"]:.2f}{extra}')
        lines.append(f'| {base["seed"]} | ' + ' | '.join(cells) + ' |')
    return lines


def settings_lines(s: Any, arms: List[str], descriptions: str) -> List[str]:
    from mmengine.config import Config
    cfg = Config.fromfile(s.gpt4image_config)
    loss = cfg.model.align_loss
    ds = cfg.train_dataloader.dataset.dataset
    return [
        f'- data: Fashion-MNIST, first {s.num_train or ds.get("indices")} '
        f'training images, {s.epochs or cfg.train_cfg.max_epochs} epochs, '
        f'batch {cfg.train_dataloader.batch_size}; test top-1 on '
        f'{s.num_test or 10000} test images, validation curve on the first '
        f'{s.num_val or cfg.val_dataloader.dataset.get("indices", 10000)}',
        f'- model: `{s.baseline_config}`; aligned arms: '
        f'`{s.gpt4image_config}` (same recipe + alignment head)',
        f'- arms: {", ".join(TITLES[a] for a in arms)}; `gpt4image` aligns '
        f'to {s.k} descriptions per class by SmolLM2-135M-Instruct (local, '
        f'≤{s.max_tokens} tokens, class-conditioned prompts, '
        f'`{descriptions}`), `classname` to "{CLASSNAME_PROMPT}", `random` '
        'to a fixed random unit vector per class',
        '- text encoder: all-MiniLM-L6-v2 (384-d, frozen, offline)',
        f'- alignment: {loss.get("mode", "clip")} InfoNCE, tau '
        f'{loss.temperature}, weight {loss.loss_weight}, positives '
        f'{loss.get("positives", "instance")!r}',
        f'- seeds: 0..{s.seeds - 1}, the same for every arm',
        '- neck retrieval top-1: each test image, mapped through the '
        'trained alignment neck, retrieves the nearest class target of its '
        'arm (mean of the store rows of the class); no classifier head',
    ]


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


def sample_descriptions(path: str, chars: int = 160) -> List[str]:
    from gpt4image_mm.descriptions import read_descriptions
    from gpt4image_mm.keys import base_key
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


def write_report(s: Any, arms: List[str], results: List[Dict[str, Any]],
                 descriptions: str,
                 analysis: Optional[Dict[str, Any]] = None) -> str:
    banner('5/5 report', f'{s.work_dir}/report.md and curves.png')
    runs = by_arm(arms, results)
    plot_curves(arms, results, osp.join(s.work_dir, 'curves.png'))
    lines = [
        '# GPT4Image demo: Fashion-MNIST, CPU', '',
        *settings_lines(s, arms, descriptions), '',
        *arm_table(arms, runs, deployed_cost(s, arms, results)), '',
        *comparison_table(arms, runs), '',
        'Test top-1 per run (last-3-epoch spread of validation top-1 in '
        'brackets):', '', *seed_table(arms, runs), '',
        '![validation top-1 per epoch](curves.png)', '',
        *analysis_lines(analysis),
        'A description per class, as the LLM wrote it:', '',
        *sample_descriptions(descriptions), '',
    ]
    text = '\n'.join(lines)
    atomic_write_text(osp.join(s.work_dir, 'report.md'), text)
    return text
