"""report.html of an experiment, beside its report.md.

The page shows what report.md says (its tables, sentences and figures,
rendered from the same text, so the two never disagree), the paired
intervals drawn as a forest plot against zero (inline SVG), and per run
links to its generated config, its logs and its metrics. Every text is
escaped and the page shares the analysis page's head
(:func:`gpt4image_mm.analysis.html.page_shell`): a Content-Security-Policy
that allows no remote load and no script.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import re
from html import escape
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote

from gpt4image_mm.analysis.html import page_shell

logger = logging.getLogger(__name__)

PAGE = 'report.html'
_CODE = re.compile(r'`([^`]+)`')
_BOLD = re.compile(r'\*\*([^*]+)\*\*')
_LINK = re.compile(r'\[([^\]]+)\]\(([^)\s]+)\)')
_IMAGE = re.compile(r'^!\[([^\]]*)\]\(([^)\s]+)\)$')


def local_href(target: str) -> Optional[str]:
    """``target`` as a link inside the page's folder, or None: only
    relative paths (no scheme such as ``javascript:``, no ``//host``)."""
    if not target or target.startswith(('/', '\\')) or ':' in target.split(
            '/')[0]:
        return None
    return quote(target, safe='/._-~#')


def _inline(text: str) -> str:
    """Escape a line, then turn the report's code spans, bold and local
    links into markup (on the escaped text, so nothing else becomes
    markup)."""
    out = escape(text)
    out = _CODE.sub(lambda m: f'<code>{m.group(1)}</code>', out)
    out = _BOLD.sub(lambda m: f'<b>{m.group(1)}</b>', out)

    def link(m: re.Match) -> str:
        href = local_href(m.group(2).replace('&amp;', '&'))
        return (f'<a href="{escape(href)}">{m.group(1)}</a>' if href
                else m.group(0))
    return _LINK.sub(link, out)


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip('|').split('|')]


def markdown_blocks(text: str) -> List[str]:
    """report.md's blocks as HTML: headings, bullet lists, pipe tables,
    images and paragraphs (the subset the report writer uses)."""
    blocks: List[str] = []
    lines = text.split('\n')
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith('#'):
            level = min(len(line) - len(line.lstrip('#')), 3)
            blocks.append(f'<h{level}>{_inline(line.lstrip("#").strip())}'
                          f'</h{level}>')
            i += 1
        elif line.startswith('|'):
            rows = []
            while i < len(lines) and lines[i].startswith('|'):
                rows.append(_cells(lines[i]))
                i += 1
            body = [r for r in rows[1:] if not all(
                set(c) <= set('-: ') for c in r)]
            head = ''.join(f'<th>{_inline(c)}</th>' for c in rows[0])
            trs = ''.join('<tr>' + ''.join(f'<td>{_inline(c)}</td>'
                                           for c in r) + '</tr>'
                          for r in body)
            blocks.append(f'<table><thead><tr>{head}</tr></thead><tbody>'
                          f'{trs}</tbody></table>')
        elif line.startswith('- '):
            items = []
            while i < len(lines) and lines[i].startswith('- '):
                items.append(f'<li>{_inline(lines[i][2:])}</li>')
                i += 1
            blocks.append(f'<ul>{"".join(items)}</ul>')
        elif _IMAGE.match(line.strip()):
            alt, src = _IMAGE.match(line.strip()).groups()
            href = local_href(src)
            blocks.append(f'<figure><img src="{escape(href)}" alt="'
                          f'{escape(alt)}"></figure>' if href
                          else f'<p>{escape(line)}</p>')
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[
                    i].startswith(('#', '|', '- ')):
                para.append(lines[i])
                i += 1
            blocks.append(f'<p>{_inline(" ".join(para))}</p>')
    return blocks


def forest_plot(rows: Sequence[Dict[str, Any]], width: int = 720) -> str:
    """Each comparison's mean difference and 95% interval as an inline
    SVG against a zero line; ``rows``: ``label``, ``mean``, ``lo``/``hi``
    (None for one seed) and ``verdict``."""
    if not rows:
        return ''
    left, right, row_h, top = 260, 30, 30, 28
    values = [0.0] + [v for r in rows for v in (r['mean'], r['lo'], r['hi'])
                      if v is not None]
    lo, hi = min(values), max(values)
    pad = max(hi - lo, 0.2) * 0.08
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (width - left - right)

    height = top + row_h * len(rows) + 34
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" role="img" aria-label="paired differences '
             'with 95% intervals">',
             f'<line x1="{x(0):.1f}" y1="{top - 10}" x2="{x(0):.1f}" '
             f'y2="{height - 30}" stroke="#888" stroke-dasharray="4 3"/>',
             f'<text x="{x(0):.1f}" y="{top - 14}" font-size="11" '
             'text-anchor="middle" fill="#555">0</text>']
    for k, r in enumerate(rows):
        y = top + row_h * k + row_h / 2
        color = {'better': '#1a7f37', 'worse': '#cf222e'}.get(r['verdict'],
                                                              '#555')
        parts.append(f'<text x="{left - 10}" y="{y + 4:.1f}" font-size="12" '
                     f'text-anchor="end">{escape(r["label"])}</text>')
        if r['lo'] is not None:
            parts.append(f'<line x1="{x(r["lo"]):.1f}" y1="{y:.1f}" '
                         f'x2="{x(r["hi"]):.1f}" y2="{y:.1f}" stroke="'
                         f'{color}" stroke-width="2"/>')
            for end in (r['lo'], r['hi']):
                parts.append(f'<line x1="{x(end):.1f}" y1="{y - 5:.1f}" '
                             f'x2="{x(end):.1f}" y2="{y + 5:.1f}" stroke="'
                             f'{color}" stroke-width="2"/>')
        parts.append(f'<circle cx="{x(r["mean"]):.1f}" cy="{y:.1f}" r="5" '
                     f'fill="{color}"><title>{escape(r["title"])}</title>'
                     '</circle>')
    axis_y = height - 22
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" '
                 f'y2="{axis_y}" stroke="#333"/>')
    for tick in _ticks(lo, hi):
        label = f'{tick:+g}' if tick else '0'
        parts.append(f'<line x1="{x(tick):.1f}" y1="{axis_y}" x2="'
                     f'{x(tick):.1f}" y2="{axis_y + 4}" stroke="#333"/>'
                     f'<text x="{x(tick):.1f}" y="{axis_y + 16}" '
                     f'font-size="11" text-anchor="middle">{label}</text>')
    parts.append('</svg>')
    return ''.join(parts)


def _ticks(lo: float, hi: float) -> List[float]:
    """About five round tick values between ``lo`` and ``hi``."""
    import math
    raw = (hi - lo) / 5
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= step * m)
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 10) for k in range(
        int((hi - first) / step) + 1)]


def comparison_rows(arms: Sequence[str], results: Sequence[Optional[Dict[
        str, Any]]]) -> List[Dict[str, Any]]:
    """The report's paired comparisons (full-data runs) as plot rows."""
    from gpt4image_mm.experiment.report import arm_comparisons, titles
    ok = [r for r in results if r and not r.get('failed')
          and not r.get('shots')]
    by_arm = {a: [r for r in ok if r['arm'] == a] for a in arms}
    names = titles()
    rows = []
    # the report's own comparisons: the same intervals as report.md
    for p in arm_comparisons([a for a in arms if by_arm[a]], by_arm):
        if not p.diffs:
            continue
        ci = p.interval
        label = f'{names[p.a]} − {names[p.b]}'
        rows.append(dict(
            label=label, mean=p.mean, lo=ci[0] if ci else None,
            hi=ci[1] if ci else None, verdict=p.verdict,
            title=f'{label}: {p.mean:+.2f} pts' + (
                f', 95% interval {ci[0]:+.2f} to {ci[1]:+.2f}' if ci else
                ' (no interval)')))
    return rows


def _link(work_dir: str, path: Optional[str], text: str) -> str:
    if not path or not osp.isfile(path):
        return '–'
    href = local_href(osp.relpath(path, work_dir).replace(os.sep, '/'))
    return f'<a href="{escape(href)}">{escape(text)}</a>' if href else '–'


def runs_table(work_dir: str, runs: Sequence[Any],
               results: Sequence[Optional[Dict[str, Any]]]) -> str:
    """Per run: its result and links to its config, logs and metrics."""
    from gpt4image_mm.experiment.execute import METRICS
    rows = []
    for run, r in zip(runs, results):
        if r is None:
            result = 'not run yet'
        elif r.get('failed'):
            result = f'failed: {r.get("error", "")}'
        else:
            result = f'{r["top1"]:.2f}'
        links = ' '.join(_link(work_dir, p, t) for p, t in (
            (run.config, 'config'),
            (osp.join(run.work_dir, 'train.log'), 'train log'),
            (osp.join(run.work_dir, 'test.log'), 'test log'),
            (osp.join(run.work_dir, METRICS), 'metrics')))
        rows.append(f'<tr><td>{escape(run.name)}</td><td>{escape(result)}'
                    f'</td><td>{links}</td></tr>')
    return ('<table><thead><tr><th>run</th><th>test top-1 (%)</th><th>'
            'files</th></tr></thead><tbody>' + ''.join(rows)
            + '</tbody></table>')


def render_page(title: str, report_md: str, forest: str, runs: str,
                extra: str = '') -> str:
    """The page: report.md's blocks, the forest plot after the
    comparisons, then the runs."""
    blocks = markdown_blocks(report_md)
    at = next((k + 1 for k, b in enumerate(blocks)
               if b.startswith('<table><thead><tr><th>comparison')),
              None)
    plot = ('<h2>Paired differences (95% intervals) against zero</h2>'
            f'<figure>{forest}</figure>' if forest else '')
    if at is None:
        blocks.append(plot)
    else:
        blocks.insert(at, plot)
    body = '\n'.join(blocks) + extra + '<h2>Runs</h2>' + runs
    return page_shell(title, body)


def write_experiment_page(s: Any, runs: Sequence[Any],
                          results: Sequence[Optional[Dict[str, Any]]],
                          report_md: str) -> str:
    """``report.html`` beside the experiment's report.md; returns its
    path (also logged, so the command shows it)."""
    from gpt4image_mm.utils.files import atomic_write_text
    extra = ''
    if osp.isfile(osp.join(s.work_dir, 'analysis', 'report.html')):
        extra = ('<p>The descriptions, with their images: <a href="'
                 'analysis/report.html">analysis/report.html</a>.</p>')
    text = render_page(s.title, report_md,
                       forest_plot(comparison_rows(s.arms, results)),
                       runs_table(s.work_dir, runs, results), extra)
    path = osp.join(s.work_dir, PAGE)
    atomic_write_text(path, text)
    logger.info('page: %s', path)
    return path


__all__ = ['write_experiment_page', 'forest_plot', 'markdown_blocks']
