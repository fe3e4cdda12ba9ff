"""Seed statistics of an experiment: mean ± std, paired differences with
exact 95% Student-t intervals, and sentences that claim only what the
intervals say."""
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


def t_central_probability(t: float, dof: int) -> float:
    """P(|T| < t) for Student's t with an integer ``dof``: the closed-form
    finite series (Abramowitz & Stegun 26.7.3-4), exact up to rounding."""
    theta = math.atan(t / math.sqrt(dof))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2 == 0:  # sin(theta) * (1 + c2/2 + 1*3/(2*4) c2^2 + ...)
        term = total = 1.0
        for k in range(1, dof // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return s * total
    if dof == 1:
        return 2 * theta / math.pi
    term = total = 1.0  # 1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...
    for k in range(1, (dof - 1) // 2):
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + s * math.sqrt(c2) * total)


def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``dof`` degrees of
    freedom, by bisection on :func:`t_central_probability` (no scipy)."""
    if not 0.5 < p < 1 or dof < 1:
        raise ValueError(f't_quantile needs 0.5 < p < 1 and dof >= 1, got '
                         f'p={p}, dof={dof}')
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while t_central_probability(hi, dof) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_central_probability(mid, dof) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile (t at 0.975), exact for any dof."""
    return t_quantile(0.975, dof)


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
    (``classname``, ``random`` and any other arm), paired by seed."""
    pairs = [(arm, 'baseline') for arm in top1 if arm != 'baseline']
    if 'gpt4image' in top1:
        pairs += [('gpt4image', c) for c in top1
                  if c not in ('baseline', 'gpt4image')]
    out = []
    for a, b in pairs:
        seeds = sorted(set(top1[a]) & set(top1[b]))
        out.append(Paired(a, b, [top1[a][s] - top1[b][s] for s in seeds]))
    return out


ONE_SEED = ('One seed cannot tell an effect from seed noise: run '
            '`make demo SEEDS=5` (and `ARMS=all` for the controls) for '
            'paired 95% intervals.')


def headline(pairs: List[Paired], titles: Dict[str, str],
             one_seed: str = ONE_SEED) -> str:
    """One paragraph: a claim for each comparison whose interval excludes
    zero, and plainly "no difference shown" for the others."""
    if pairs and len(pairs[0].diffs) < 2:
        return one_seed
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
    convergence check of a recipe (the demo's: at most 1.5 points)."""
    if len(curve) < k:
        return None
    tail = curve[-k:]
    return max(tail) - min(tail)
