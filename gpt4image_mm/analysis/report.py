"""report.md and the PNG figures of a description analysis.

One table of metric rows for one set or, with ``--compare``, two sets side
by side; keys starting with ``_`` in a metrics dict are not table figures
(matrices, pairs, examples) and get their own sections.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from gpt4image_mm.analysis.flagged import MENTIONS, REASONS

# (key, label, kind): kind 'n' count, 'f' number, '%' share, 's' text
ROWS = (
    ('lines', 'records (lines)', 'n'),
    ('descriptions', 'descriptions (keys with a success)', 'n'),
    ('failures', 'failures (keys whose latest record failed)', 'n'),
    ('repeated_keys', 'repeated successes of a key', 'n'),
    ('contentless', 'empty texts (no letter or digit)', 'n'),
    ('refusals', 'refusals', 'n'),
    ('exact_duplicates', 'exact duplicates (repeats of a text)', 'n'),
    ('near_duplicate_pairs', 'near-duplicate pairs (cosine > 0.98)', 'n'),
    ('near_duplicate_records', 'records in near-duplicate pairs', 'n'),
    ('words_median', 'words: median', 'f'),
    ('words_p5', 'words: 5th percentile', 'f'),
    ('words_p95', 'words: 95th percentile', 'f'),
    ('tokens_median', 'encoder tokens: median', 'f'),
    ('tokens_p5', 'encoder tokens: 5th percentile', 'f'),
    ('tokens_p95', 'encoder tokens: 95th percentile', 'f'),
    ('encoder_max_length', 'encoder token limit', 'n'),
    ('encoder_truncated_share', 'cut by the encoder (share of texts)', '%'),
    ('encoder_tokens_lost_share', 'tokens the encoder drops (share)', '%'),
    ('clip77_truncated_share', 'cut at CLIP\'s 77 tokens (share of texts)',
     '%'),
    ('clip77_tokens_lost_share', 'tokens lost at 77 (share of all)', '%'),
    ('clip77_lost_per_cut_text', 'tokens lost per cut text at 77', 'f'),
    ('names_own_class_share', 'names its own class', '%'),
    ('names_other_class_share', 'names another class', '%'),
    ('names_only_other_class', 'names only another class (texts)', 'n'),
    ('loo_centroid_accuracy', 'leave-one-out nearest-centroid accuracy',
     '%'),
    ('within_class_cosine', 'mean within-class cosine', 'f'),
    ('between_class_cosine', 'mean between-class cosine', 'f'),
    ('near_duplicate_method', 'near-duplicate search', 's'),
)


def fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    if kind == 'n':
        return f'{int(value):,}'
    if kind == '%':
        return f'{100 * value:.1f} %'
    if kind == 'f':
        return f'{value:.3g}' if abs(value) < 1000 else f'{value:,.0f}'
    return str(value)


def table(sets: Sequence[Dict[str, Any]], titles: Sequence[str]) -> str:
    head = '| metric | ' + ' | '.join(titles) + ' |'
    lines = [head, '|' + ' --- |' * (len(titles) + 1)]
    for key, label, kind in ROWS:
        if all(key not in m for m in sets):
            continue
        cells = [fmt(m.get(key), kind) for m in sets]
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


MATRIX_MAX = 100  # classes up to which the centroid heatmap is drawn
LABELS_MAX = 60  # classes up to which its axes name every class
LABEL_CHARS = 24  # a longer name is shortened on the axes (legend: full)
LEGEND_CHARS = 60  # a legend line in the figure; the report has it all
CONFUSIONS_SMALL, CONFUSIONS_LARGE = 5, 20  # pairs listed in the report


def confusions_shown(classes: int) -> int:
    """How many confused pairs the report lists: more when the heatmap
    is skipped, as they then stand in for it."""
    return CONFUSIONS_SMALL if classes <= MATRIX_MAX else CONFUSIONS_LARGE


_MARKUP = re.compile(r'([\\`*_\[\]<>|&~])')


def md_text(text: str) -> str:
    """A description (data) as inert Markdown on one line: whitespace
    collapsed, every character that could start markup escaped."""
    return _MARKUP.sub(r'\\\1', ' '.join(str(text).split()))


def md_code(text: str) -> str:
    """``text`` as a code span, whatever backticks it holds."""
    text = ' '.join(str(text).split())
    fence = '`' * (max((len(r) for r in re.findall('`+', text)),
                       default=0) + 1)
    pad = ' ' if '`' in text else ''
    return f'{fence}{pad}{text}{pad}{fence}'


def shorten(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return name if len(name) <= limit else name[:limit - 1].rstrip() + '…'


def _example_line(reason: str, ex: Dict[str, Any]) -> str:
    names = ex.get('names')
    said = f' (names: {md_text(", ".join(names))})' if names else ''
    label = reason.replace('_', ' ')
    if reason in MENTIONS:
        label = f'mention ({label})'
    return f'  - {label}: {md_code(ex["key"])}{said}: {md_text(ex["text"])}'


def _repair_section(m: Dict[str, Any], title: str) -> List[str]:
    """What the repair pass would ask again, per reason with its share and
    examples, then the mentions that are reported but not asked again."""
    c = m.get('flagged')
    if not c:
        return []
    share = m.get('flagged_share', {})
    examples = m.get('_flag_examples') or {}
    keys = 'key' if c['keys'] == 1 else 'keys'
    out = [f'**{title}**: {c["keys"]:,} {keys} to ask again -> '
           f'{md_code(os.path.basename(m.get("_flagged_file", "")))} '
           '(caption.py --redo-keys); "another class" decided by '
           f'{m.get("flagged_evidence", "text")}.', '',
           '| asked again | keys | share of descriptions | why |',
           '| --- | --- | --- | --- |']
    for reason, why in REASONS.items():
        if reason in c:
            out.append(f'| {reason.replace("_", " ")} | {c[reason]:,} | '
                       f'{fmt(share.get(reason), "%")} | {why} |')
    mentions = m.get('mentions') or {}
    n = max(m.get('descriptions', 0), 1)
    for reason, count in mentions.items():
        out.append(f'| mention, not asked: {reason.replace("_", " ")} | '
                   f'{count:,} | {fmt(count / n, "%")} | {MENTIONS[reason]} |')
    shown = [_example_line(r, ex) for r in (*REASONS, *MENTIONS)
             for ex in examples.get(r, ())]
    if shown:
        out += ['', '- examples:', *shown]
    return out + ['']


def _confusion_table(m: Dict[str, Any], title: str) -> List[str]:
    pairs = m.get('_confused_pairs') or []
    if not pairs:
        return []
    out = [f'**{title}**: the most confused class pairs (leave-one-out '
           'nearest centroid)', '',
           '| class | class | confused | centroid cosine |',
           '| --- | --- | --- | --- |']
    out += [f'| {md_text(p["a"])} | {md_text(p["b"])} | {p["confused"]:,} | '
            f'{p["centroid_cosine"]:.3f} |' for p in pairs]
    return out + ['']


def _legend(m: Dict[str, Any]) -> List[str]:
    """Numbered full class names, when the heatmap shows numbers or
    shortened names."""
    legend = m.get('_figure_legend')
    if not legend:
        return []
    return ['Heatmap legend: ' + '; '.join(
        f'{k} {md_text(name)}' for k, name in enumerate(legend, 1)), '']


def render(sets: Sequence[Dict[str, Any]], titles: Sequence[str],
           figures: Sequence[str] = ()) -> str:
    """The whole report.md text."""
    parts = ['# Description analysis', '',
             ', '.join(f'**{t}**: `{m["_path"]}`' for m, t in
                       zip(sets, titles)), '']
    ids = sets[0].get('class_names_look_like_ids') if sets else None
    if ids:
        parts += [f'> The class names look like ids ({md_text(ids)}): no '
                  'description says them, so the class-naming figures '
                  'count nothing. Pass `--class-names FILE` (a '
                  '`LOC_synset_mapping.txt`, a JSON `{folder: name}` or '
                  'folder,name rows).', '']
    parts += [table(sets, titles), '']
    if any('clip77_truncated_share' in m for m in sets):
        parts += ['Token counts come from the analysed encoder\'s tokenizer; '
                  'the 77-token figures say what CLIP\'s text tower (the '
                  'paper\'s) would cut from texts of these lengths.', '']
    repair = [line for m, t in zip(sets, titles)
              for line in _repair_section(m, t)]
    if repair:
        parts += ['## Repair', '', *repair]
    confused = [line for m, t in zip(sets, titles)
                for line in _confusion_table(m, t)]
    if confused:
        parts += ['## Confused classes', '', *confused]
    if figures:
        parts += ['## Figures', '', *[f'![{os.path.basename(f)}]'
                                      f'({os.path.basename(f)})'
                                      for f in figures], '']
        parts += [line for m in sets for line in _legend(m)]
    skipped = [m['_matrix_skipped'] for m in sets if m.get('_matrix_skipped')]
    if skipped:
        parts += [f'The centroid heatmap is not drawn for {skipped[0]:,} '
                  f'classes (more than {MATRIX_MAX}): the confused pairs '
                  'above stand in for it.', '']
    return '\n'.join(parts)


def write_figures(m: Dict[str, Any], names: Sequence[str], out_dir: str,
                  tag: str) -> List[str]:
    """Centroid-similarity heatmap and word-length histogram PNGs; the
    heatmap only up to ``MATRIX_MAX`` classes (above, the report lists the
    confused pairs), its legend in ``m['_figure_legend']`` when the axes
    show numbers or shortened names."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from gpt4image_mm.utils.files import atomic_write_bytes
    paths = []
    sim: Optional[np.ndarray] = m.get('_centroid_similarity')
    if sim is not None and len(sim) > MATRIX_MAX:
        m['_matrix_skipped'] = len(sim)
    elif sim is not None and len(sim):
        fig = _heatmap(plt, sim, list(names), m)
        paths.append(_save(fig, os.path.join(
            out_dir, f'centroid_similarity{tag}.png'), atomic_write_bytes))
    words = m.get('_words')
    if words is not None and len(words):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(words, bins=50, color='tab:blue')
        ax.set_xlabel('words per description')
        ax.set_ylabel('descriptions')
        paths.append(_save(fig, os.path.join(out_dir, f'words{tag}.png'),
                           atomic_write_bytes))
    return paths


def _heatmap(plt: Any, sim: np.ndarray, names: List[str],
             m: Dict[str, Any]) -> Any:
    """The centroid cosine matrix; names on the axes up to ``LABELS_MAX``
    classes (numbered and shortened when long, the full names in a legend
    beside it), class numbers above that."""
    n = len(sim)
    size = min(4 + 0.2 * n, 16)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(sim, cmap='viridis', vmin=min(0.0, float(sim.min())),
                   vmax=1.0)
    long = any(len(x) > LABEL_CHARS for x in names)
    if n <= LABELS_MAX:
        labels = [f'{k}. {shorten(x, LABEL_CHARS)}' if long else x
                  for k, x in enumerate(names, 1)]
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
        if long:
            fig.text(1.0, 0.5, '\n'.join(
                f'{k}. {shorten(x, LEGEND_CHARS)}'
                for k, x in enumerate(names, 1)), fontsize=6, va='center',
                ha='left', transform=fig.transFigure)
    else:
        ticks = list(range(0, n, 10))
        ax.set_xticks(ticks, [str(k + 1) for k in ticks], fontsize=7)
        ax.set_yticks(ticks, [str(k + 1) for k in ticks], fontsize=7)
        ax.set_xlabel('class (number: see the legend in report.md)')
    if long or n > LABELS_MAX:
        m['_figure_legend'] = list(names)
    ax.set_title('class centroid cosine similarity')
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def _save(fig: Any, path: str, write: Any) -> str:
    """PNG bytes of ``fig`` cropped to everything drawn (titles, rotated
    labels, the legend beside it), so nothing is cut at the edge."""
    import io

    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110, bbox_inches='tight',
                pad_inches=0.15)
    plt.close(fig)
    write(path, buf.getvalue())
    return path
