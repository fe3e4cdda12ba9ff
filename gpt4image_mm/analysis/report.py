"""report.md and the PNG figures of a description analysis.

One table of metric rows for one set or, with ``--compare``, two sets side
by side; keys starting with ``_`` in a metrics dict are not table figures
(matrices, pairs, examples) and get their own sections.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

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


def _notes(m: Dict[str, Any], title: str) -> List[str]:
    out = []
    for finding, keys in sorted((m.get('_examples') or {}).items()):
        out.append(f'- {title}: {finding.replace("_", " ")}, e.g. '
                   + ', '.join(f'`{k}`' for k in keys))
    if m.get('flagged'):
        c = m['flagged']
        parts = ', '.join(f'{k.replace("_", " ")} {v}' for k, v in c.items()
                          if k != 'keys' and v)
        out.append(f'- {title}: {c["keys"]} keys to ask again'
                   + (f' ({parts})' if parts else '') + ' -> `'
                   + os.path.basename(m.get('_flagged_file', '')) + '` '
                   '(caption.py --redo-keys)')
    for p in m.get('_confused_pairs') or []:
        out.append(f'- {title}: `{p["a"]}` <-> `{p["b"]}` confused '
                   f'{p["confused"]} times (centroid cosine '
                   f'{p["centroid_cosine"]:.3f})')
    return out


def render(sets: Sequence[Dict[str, Any]], titles: Sequence[str],
           figures: Sequence[str] = ()) -> str:
    """The whole report.md text."""
    parts = ['# Description analysis', '',
             ', '.join(f'**{t}**: `{m["_path"]}`' for m, t in
                       zip(sets, titles)), '', table(sets, titles), '']
    if any('clip77_truncated_share' in m for m in sets):
        parts += ['Token counts come from the analysed encoder\'s tokenizer; '
                  'the 77-token figures say what CLIP\'s text tower (the '
                  'paper\'s) would cut from texts of these lengths.', '']
    notes = [n for m, t in zip(sets, titles) for n in _notes(m, t)]
    if notes:
        parts += ['## Findings', '', *notes, '']
    if figures:
        parts += ['## Figures', '', *[f'![{os.path.basename(f)}]'
                                      f'({os.path.basename(f)})'
                                      for f in figures], '']
    return '\n'.join(parts)


def write_figures(m: Dict[str, Any], names: Sequence[str], out_dir: str,
                  tag: str) -> List[str]:
    """Centroid-similarity heatmap and word-length histogram PNGs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from gpt4image_mm.utils.files import atomic_write_bytes
    paths = []
    sim: Optional[np.ndarray] = m.get('_centroid_similarity')
    if sim is not None and len(sim):
        size = min(4 + 0.35 * len(sim), 20)
        fig, ax = plt.subplots(figsize=(size, size))
        im = ax.imshow(sim, cmap='viridis', vmin=min(0.0, float(sim.min())),
                       vmax=1.0)
        if len(sim) <= 60:  # labels stay legible up to about this many
            ax.set_xticks(range(len(sim)), names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(sim)), names, fontsize=7)
        ax.set_title('class centroid cosine similarity')
        fig.colorbar(im, ax=ax, fraction=0.046)
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


def _save(fig: Any, path: str, write: Any) -> str:
    import io

    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format='png', dpi=110)
    plt.close(fig)
    write(path, buf.getvalue())
    return path
