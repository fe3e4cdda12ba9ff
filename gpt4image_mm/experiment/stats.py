"""Seed statistics of an experiment: mean ± std, paired differences with
95% intervals that count both sources of noise a comparison has (the
seeds *and* the finite test set), and sentences that claim only what the
intervals and the runs support."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

MIN_VERDICT_SEEDS = 3  # fewer seeds: an interval, never better / worse
MAX_DOF = 10_000  # t(0.975, 10^4) = 1.9602; larger dof change nothing
RISE_WINDOW = 5  # validations the convergence trend is fitted over
RISE_POINTS = 1.0  # a fitted rise at least this large: "still rising"
INTERVAL_METHOD = (
    'paired over seeds and test images: the variance of the mean '
    'difference is the seed term (variance of the per-seed differences / '
    'seeds) plus the test-set term (variance over test images of the '
    'seed-averaged per-image difference / images, McNemar\'s paired '
    'variance; with no image on which the arms disagree, the rule-of-three '
    'bound of 3 / images discordant); Student-t with Welch-Satterthwaite '
    'degrees of freedom (at most 10,000)')


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


@functools.cache
def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile (t at 0.975), exact for any dof."""
    return t_quantile(0.975, dof)


@dataclass
class Estimate:
    """A mean over seeds x test images with its two variance terms."""

    mean: float
    seed_var: float  # variance of the mean from the seeds
    image_var: float  # variance of the mean from the finite test set
    dof: int

    @property
    def half_width(self) -> float:
        return t95(self.dof) * math.sqrt(self.seed_var + self.image_var)

    @property
    def interval(self) -> Tuple[float, float]:
        h = self.half_width
        return self.mean - h, self.mean + h


def crossed_estimate(scores: np.ndarray) -> Estimate:
    """The mean of a seeds x test-images matrix (points: 100 x correct, or
    100 x a paired difference of correctness) and its variance.

    The test images are the same for every seed, so the seeds cannot
    average their noise away: the seed term is the variance of the
    per-seed means / seeds, the test-set term the variance over images of
    the seed-averaged score / images (for a paired difference, McNemar's
    variance). Their sum counts the seed x image noise twice: conservative.
    An all-equal column (no image on which two arms disagree) is replaced
    by the rule-of-three bound, so the interval is never zero-wide.
    """
    x = np.asarray(scores, dtype=np.float64)
    seeds, images = x.shape
    if seeds < 2 or images < 2:
        raise ValueError('crossed_estimate needs >= 2 seeds and >= 2 images')
    seed_var = float(np.var(x.mean(1), ddof=1)) / seeds
    image_var = float(np.var(x.mean(0), ddof=1)) / images
    if image_var == 0:  # no discordant image seen: <= 3/n at 95%
        image_var = (3 / images) * 100 ** 2 / images
    return Estimate(float(x.mean()), seed_var, image_var,
                    satterthwaite(seed_var, seeds, image_var, images))


def satterthwaite(seed_var: float, seeds: int, image_var: float,
                  images: int) -> int:
    """Welch-Satterthwaite degrees of freedom of the two terms (rounded
    down: conservative; capped at :data:`MAX_DOF`)."""
    total = seed_var + image_var
    denom = seed_var ** 2 / (seeds - 1) + image_var ** 2 / (images - 1)
    dof = total ** 2 / denom if denom > 0 else MAX_DOF
    return int(max(1, min(MAX_DOF, math.floor(dof))))


def image_term_half_width(images: int, discordant: float,
                        difference: float = 0.0) -> float:
    """95% half-width (points) of the test-set term alone: a paired
    difference on ``images`` test images where the two arms disagree on a
    ``discordant`` share of them (McNemar's variance, normal quantile).
    What a hundred seeds that agree perfectly still cannot remove."""
    d = difference / 100
    var = (discordant - d * d) / images
    return 1.959964 * 100 * math.sqrt(max(var, 0.0))


def image_term_table(sizes: Sequence[int] = (100, 1000, 10000),
                   shares: Sequence[float] = (0.02, 0.05, 0.10, 0.20)
                   ) -> str:
    """docs/experiment.md's table: the test-set term's half-width by test
    images (columns) and discordant share (rows)."""
    lines = ['| arms disagree on | ' + ' | '.join(
        f'{n:,} test images' for n in sizes) + ' |',
        '| --- |' + ' ---: |' * len(sizes)]
    for q in shares:
        lines.append(f'| {100 * q:g} % of the images | ' + ' | '.join(
            f'± {image_term_half_width(n, q):.2f} pts' for n in sizes) + ' |')
    return '\n'.join(lines)


@dataclass
class Paired:
    """``a - b`` over the seeds both have: per-seed differences (points),
    and where the runs saved their test predictions, the seeds x images
    matrix of per-image differences of correctness (points) the interval
    is computed from. ``unconverged``: runs of either arm whose validation
    curve was still rising at its end."""

    a: str
    b: str
    diffs: List[float]
    per_image: Optional[np.ndarray] = None
    unconverged: List[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return mean_std(self.diffs)[0]

    @property
    def seeds(self) -> int:
        return len(self.diffs)

    @property
    def estimate(self) -> Optional[Estimate]:
        if self.seeds < 2 or self.per_image is None:
            return None
        return crossed_estimate(self.per_image)

    @property
    def interval(self) -> Optional[Tuple[float, float]]:
        est = self.estimate
        return None if est is None else est.interval

    @property
    def verdict(self) -> str:
        """better / worse only where the interval excludes zero, from at
        least :data:`MIN_VERDICT_SEEDS` seeds; and said to be on
        unconverged runs where it is."""
        if self.seeds < 2:
            return 'one seed: no interval'
        ci = self.interval
        if ci is None:
            return 'no per-image test predictions: no interval'
        if self.seeds < MIN_VERDICT_SEEDS:
            return f'{self.seeds} seeds: too few for a verdict'
        if ci[0] > 0:
            word = 'better'
        elif ci[1] < 0:
            word = 'worse'
        else:
            return 'no significant difference'
        return f'{word} (unconverged runs)' if self.unconverged else word

    @property
    def decided(self) -> bool:
        return self.verdict.split(' ')[0] in ('better', 'worse')

    def to_dict(self, titles: Optional[Dict[str, str]] = None) -> Dict:
        """The comparison as plain data (report.json)."""
        est = self.estimate
        return dict(
            a=self.a, b=self.b, seeds=self.seeds, diffs=list(self.diffs),
            mean=self.mean, interval=list(est.interval) if est else None,
            seed_variance=est.seed_var if est else None,
            test_set_variance=est.image_var if est else None,
            dof=est.dof if est else None,
            test_images=None if self.per_image is None
            else int(self.per_image.shape[1]),
            verdict=self.verdict, unconverged=list(self.unconverged))


def comparisons(top1: Dict[str, Dict[int, float]],
                correct: Optional[Dict[str, Dict[int, np.ndarray]]] = None,
                unconverged: Optional[Dict[str, Dict[int, bool]]] = None
                ) -> List[Paired]:
    """Every arm against the baseline, then GPT4Image against each control
    (``classname``, ``random`` and any other arm), paired by seed.

    ``correct``: per arm and seed, the 0/1 correctness of every test image
    (the same images in the same order for every run); without it for
    every seed of a pair, the pair has no interval. ``unconverged``: per
    arm and seed, whether the run was still rising at its end."""
    pairs = [(arm, 'baseline') for arm in top1 if arm != 'baseline']
    if 'gpt4image' in top1:
        pairs += [('gpt4image', c) for c in top1
                  if c not in ('baseline', 'gpt4image')]
    correct, unconverged = correct or {}, unconverged or {}
    out = []
    for a, b in pairs:
        seeds = sorted(set(top1[a]) & set(top1[b]))
        out.append(Paired(
            a, b, [top1[a][s] - top1[b][s] for s in seeds],
            _paired_matrix(correct, a, b, seeds),
            [f'{arm} seed {s}' for s in seeds for arm in (a, b)
             if unconverged.get(arm, {}).get(s)]))
    return out


def _paired_matrix(correct: Dict[str, Dict[int, np.ndarray]], a: str,
                   b: str, seeds: List[int]) -> Optional[np.ndarray]:
    """seeds x images of 100 x (a correct - b correct), or None where a
    run has no predictions or the runs saw different test sets."""
    rows = []
    for s in seeds:
        ca, cb = correct.get(a, {}).get(s), correct.get(b, {}).get(s)
        if ca is None or cb is None or len(ca) != len(cb):
            return None
        rows.append(100.0 * (np.asarray(ca, float) - np.asarray(cb, float)))
    if not rows or len({len(r) for r in rows}) != 1:
        return None
    return np.stack(rows)


ONE_SEED = ('One seed cannot tell an effect from seed noise: run '
            '`make demo SEEDS=5` (and `ARMS=all` for the controls) for '
            'paired 95% intervals.')


def headline(pairs: List[Paired], titles: Dict[str, str],
             one_seed: str = ONE_SEED) -> str:
    """One paragraph: a claim for each comparison that earned a verdict,
    the interval alone for the others, and why they have none."""
    if pairs and pairs[0].seeds < 2:
        return one_seed
    said, none, missing = [], [], []
    for p in pairs:
        if p.interval is None:
            missing.append(f'{titles[p.a]} vs {titles[p.b]}')
            continue
        lo, hi = p.interval
        text = (f'{titles[p.a]} vs {titles[p.b]}: {p.mean:+.2f} points '
                f'(95% interval {lo:+.2f} to {hi:+.2f})')
        (said if p.decided else none).append((p, text))
    parts = []
    for p, t in said:
        word = p.verdict.split(' ')[0]
        parts.append(f'{titles[p.a]} is {word} than {titles[p.b]}: '
                     + t.split(': ', 1)[1] + '.' + (
                         f' Not converged ({", ".join(p.unconverged)} still '
                         'rising at the end): a longer schedule may change '
                         'it.' if p.unconverged else ''))
    few = [t for p, t in none if p.seeds < MIN_VERDICT_SEEDS]
    shown = [t for p, t in none if p.seeds >= MIN_VERDICT_SEEDS]
    if shown:
        parts.append('No difference shown at 95% for ' + '; '.join(shown)
                     + '.')
    if few:
        parts.append(f'Too few seeds for a verdict (at least '
                     f'{MIN_VERDICT_SEEDS}): ' + '; '.join(few) + '.')
    if missing:
        parts.append('No interval for ' + ', '.join(missing) + ': their '
                     'runs saved no per-image test predictions.')
    n = max(p.seeds for p in pairs) if pairs else 0
    return (f'Paired over {n} seeds and the test images (interval: seeds '
            'and the finite test set). ' + ' '.join(parts))


def last_epochs_spread(curve: Sequence[float], k: int = 3) -> Optional[float]:
    """max - min of validation top-1 over the last ``k`` epochs: the
    convergence check of a recipe (the demo's: at most 1.5 points)."""
    if len(curve) < k:
        return None
    tail = curve[-k:]
    return max(tail) - min(tail)


def end_trend(curve: Sequence[float], window: int = RISE_WINDOW
              ) -> Optional[float]:
    """Rise (points) of the least-squares line through the last
    ``window`` validations, from the first of them to the last: how much
    the curve was still climbing when training stopped. None for fewer
    than 3 validations."""
    tail = [float(v) for v in curve[-window:]]
    if len(tail) < 3:
        return None
    x = np.arange(len(tail), dtype=np.float64)
    slope = float(np.polyfit(x, np.asarray(tail), 1)[0])
    return slope * (len(tail) - 1)


def still_rising(curve: Sequence[float], window: int = RISE_WINDOW,
                 min_rise: float = RISE_POINTS) -> bool:
    """Whether a run stopped while its validation curve was still
    climbing: the fitted rise over its last validations is at least
    ``min_rise`` points (a flat but noisy end is not flagged; a steady
    climb with a small last-epoch spread is)."""
    rise = end_trend(curve, window)
    return rise is not None and rise >= min_rise
