"""Seed statistics of the demo: mean ± std, paired differences with 95%
Student-t intervals, and sentences that claim only what the intervals say."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

# Two-sided 95% Student-t quantiles by degrees of freedom 1..10 (tables);
# 1.96 (normal) beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262,
        2.228)


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


def t95(dof: int) -> float:
    return _T95[dof - 1] if dof <= len(_T95) else 1.96


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
    convergence check of the recipe (issue #10: at most 1.5 points)."""
    if len(curve) < k:
        return None
    tail = curve[-k:]
    return max(tail) - min(tail)
