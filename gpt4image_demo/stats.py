"""Seed statistics of the demo: mean ± std, paired differences with 95%
Student-t intervals, and sentences that claim only what the intervals say."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple


def mean_std(xs: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(xs)
    mean = sum(xs) / n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var)


def pm(xs: Sequence[float], fmt: str = '{:.2f}') -> str:
    """``mean ± std``, or the value alone for one seed."""
    mean, std = mean_std(xs)
    if len(xs) == 1:
        return fmt.format(mean)
    return f'{fmt.format(mean)} ± {fmt.format(std).lstrip("+")}'


def t_within(t: float, dof: int) -> float:
    """P(|T| <= t) for Student's t with integer ``dof``, exactly.

    The finite sums of Abramowitz & Stegun 26.7.3 (odd dof) and 26.7.4
    (even dof) in theta = atan(t / sqrt(dof)): no series to truncate, so no
    dependency (scipy) is needed for an exact quantile."""
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2:
        term, total = math.cos(theta), 0.0
        for j in range((dof - 1) // 2):  # (dof - 1) / 2 terms; none for 1
            total += term
            term *= c2 * (2 * j + 2) / (2 * j + 3)
        return 2 / math.pi * (theta + math.sin(theta) * total)
    term, total = 1.0, 0.0
    for j in range(dof // 2):
        total += term
        term *= c2 * (2 * j + 1) / (2 * j + 2)
    return math.sin(theta) * total


def t_quantile(level: float, dof: int) -> float:
    """The t with P(|T| <= t) = ``level`` (two-sided), by bisection of
    :func:`t_within` to float precision."""
    if dof < 1 or not 0 < level < 1:
        raise ValueError(f'need dof >= 1 and 0 < level < 1, got {dof}, '
                         f'{level}')
    lo, hi = 0.0, 1.0
    while t_within(hi, dof) < level:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_within(mid, dof) < level else (lo, mid)
    return hi


def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile (12.706 at 1 dof, 2.201 at 11)."""
    return t_quantile(0.95, dof)


@dataclass
class Paired:
    """``a - b`` over the seeds both have, with its 95% interval."""

    a: str
    b: str
    diffs: List[float]

    @property
    def mean(self) -> float:
        return mean_std(self.diffs)[0]

    @property
    def interval(self) -> Optional[Tuple[float, float]]:
        n = len(self.diffs)
        if n < 2:
            return None
        margin = t95(n - 1) * mean_std(self.diffs)[1] / math.sqrt(n)
        return self.mean - margin, self.mean + margin

    @property
    def verdict(self) -> str:
        """better / worse only where the interval excludes zero."""
        ci = self.interval
        if ci is None:
            return 'one seed: no interval'
        if ci[0] > 0:
            return 'better'
        if ci[1] < 0:
            return 'worse'
        return 'no significant difference'


def comparisons(top1: Dict[str, Dict[int, float]]) -> List[Paired]:
    """Every arm against the baseline, then GPT4Image against each control
    (the questions the demo answers), paired by seed."""
    pairs = [(arm, 'baseline') for arm in top1 if arm != 'baseline']
    if 'gpt4image' in top1:
        pairs += [('gpt4image', c) for c in ('classname', 'random')
                  if c in top1]
    out = []
    for a, b in pairs:
        seeds = sorted(set(top1[a]) & set(top1[b]))
        out.append(Paired(a, b, [top1[a][s] - top1[b][s] for s in seeds]))
    return out


def headline(pairs: List[Paired], titles: Dict[str, str]) -> str:
    """One paragraph: a claim for each comparison whose interval excludes
    zero, and plainly "no difference shown" for the others."""
    if pairs and len(pairs[0].diffs) < 2:
        return ('One seed cannot tell an effect from seed noise: run '
                '`make demo SEEDS=5` (and `ARMS=all` for the controls) for '
                'paired 95% intervals.')
    said, none = [], []
    for p in pairs:
        lo, hi = p.interval
        text = (f'{titles[p.a]} vs {titles[p.b]}: {p.mean:+.2f} points '
                f'(95% interval {lo:+.2f} to {hi:+.2f})')
        (said if p.verdict in ('better', 'worse') else none).append(
            (p, text))
    parts = [f'{titles[p.a]} is {p.verdict} than {titles[p.b]}: '
             + t.split(': ', 1)[1] + '.' for p, t in said]
    if none:
        parts.append('No difference shown at 95% for ' + '; '.join(
            t for _, t in none) + '.')
    n = len(pairs[0].diffs)
    return f'Paired over {n} seeds. ' + ' '.join(parts)


def last_epochs_spread(curve: Sequence[float], k: int = 3) -> Optional[float]:
    """max - min of validation top-1 over the last ``k`` epochs: the
    convergence check of the recipe (at most 1.5 points: the demo's
    converged-recipe criterion)."""
    if len(curve) < k:
        return None
    tail = curve[-k:]
    return max(tail) - min(tail)
