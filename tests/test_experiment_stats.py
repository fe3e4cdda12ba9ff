"""The experiment's statistics and control targets, checked against
numbers worked out by hand (the report's claims rest on them)."""
import math

import numpy as np
import pytest

from gpt4image_mm.experiment import parse_arms
from gpt4image_mm.experiment.arms import (
    write_classname_descriptions,
    write_random_store,
)
from gpt4image_mm.experiment.stats import (
    Paired,
    comparisons,
    crossed_estimate,
    end_trend,
    headline,
    image_term_half_width,
    image_term_table,
    last_epochs_spread,
    mean_std,
    still_rising,
    t95,
)

TITLES = {'baseline': 'baseline', 'gpt4image': 'GPT4Image',
          'classname': 'class name', 'random': 'random vectors'}


def test_t_quantile_is_exact():
    # published two-sided 95% quantiles (t at 0.975), 1 to 120 dof: the
    # old table stopped at 10 and used the normal 1.96 beyond
    for dof, t in ((1, 12.7062047), (2, 4.3026527), (3, 3.1824463), (4, 2.7764451),
                   (10, 2.2281389), (11, 2.2009852), (30, 2.0422725),
                   (120, 1.9799304)):
        assert math.isclose(t95(dof), t, rel_tol=1e-7), dof


def _correct(n, right):
    """0/1 correctness of ``n`` test images, right on the first ``right``."""
    c = np.zeros(n, np.int8)
    c[:right] = 1
    return c


def test_two_seeds_that_agree_get_a_real_interval_and_no_verdict():
    """The zero-width interval of two seeds that happen to agree: +7.00 to
    +7.00 on 100 test images, "better". The test set is finite: the 7
    images on which the arms disagree are a sample too."""
    a, b = _correct(100, 70), _correct(100, 63)
    p = Paired('gpt4image', 'baseline', [7.0, 7.0],
               np.stack([100.0 * (a - b)] * 2))
    lo, hi = p.interval
    assert lo < 7.0 < hi and hi - lo > 5  # McNemar: 7 discordant of 100
    # the test-set term alone is McNemar's variance of the mean difference
    d = 100.0 * (a - b)
    assert p.estimate.image_var == pytest.approx(d.var(ddof=1) / 100)
    assert p.estimate.seed_var == 0
    assert p.verdict == '2 seeds: too few for a verdict'
    assert not p.decided
    text = headline([p], TITLES)
    assert 'Too few seeds for a verdict' in text and 'is better' not in text
    assert 'finite test set' in text


def test_arms_that_agree_on_every_image_still_get_an_interval():
    """No discordant image: the rule-of-three bound (3 / n) keeps the
    interval open instead of +0.00 to +0.00."""
    same = np.zeros((3, 200))
    p = Paired('random', 'baseline', [0.0] * 3, same)
    lo, hi = p.interval
    assert lo < 0 < hi
    assert p.estimate.image_var == pytest.approx(3 / 200 * 100 ** 2 / 200)
    assert p.verdict == 'no significant difference'


def test_the_interval_covers_what_seeds_alone_miss():
    """Simulated experiments (3 seeds, 200 test images whose difficulty
    persists across seeds, a true difference of 2 points): the interval
    over seeds and images covers the truth about 95% of the time, the
    seeds-only t interval far less (it treats the test set as fixed)."""
    rng = np.random.default_rng(0)
    covered = covered_by_seeds = 0
    reps, seeds, n = 400, 3, 200
    for _ in range(reps):
        p = rng.beta(0.012, 0.188, n)  # a wins on ~6% of images, b on ~4%
        q = rng.beta(0.008, 0.192, n)
        x = np.empty((seeds, n))
        for s in range(seeds):
            pp = np.clip(p * (1 + rng.normal(0, 0.1)), 0, 1)
            u = rng.random(n)
            x[s] = 100.0 * ((u < pp).astype(float)
                            - ((u >= pp) & (u < pp + q)).astype(float))
        lo, hi = crossed_estimate(x).interval
        covered += lo <= 2.0 <= hi
        m, sd = mean_std(list(x.mean(1)))
        half = t95(seeds - 1) * sd / math.sqrt(seeds)
        covered_by_seeds += m - half <= 2.0 <= m + half
    assert covered / reps >= 0.92
    assert covered_by_seeds / reps < 0.8


def test_verdicts_need_three_seeds_and_say_when_runs_were_unconverged():
    n = 1000
    rows = [100.0 * (_correct(n, 900 + k) - _correct(n, 850))
            for k in (0, 2, 4)]
    p = Paired('gpt4image', 'baseline', [5.0, 5.2, 5.4], np.stack(rows))
    assert p.interval[0] > 0 and p.verdict == 'better'
    late = Paired('gpt4image', 'baseline', [5.0, 5.2, 5.4], np.stack(rows),
                  ['baseline seed 1'])
    assert late.verdict == 'better (unconverged runs)' and late.decided
    text = headline([late], TITLES)
    assert 'GPT4Image is better than baseline' in text
    assert 'Not converged (baseline seed 1 still rising' in text
    # without per-image predictions there is no interval, hence no verdict
    assert Paired('a', 'b', [1.0, 1.1, 0.9]).interval is None
    assert Paired('a', 'b', [0.5]).verdict == 'one seed: no interval'
    assert mean_std([2.0]) == (2.0, 0.0)


def test_image_term_table_for_the_docs():
    """docs/experiment.md's figures: 10% discordant images give a 95%
    half-width of 6.2 points on 100 test images, 1.96 on 1,000, 0.62 on
    10,000, whatever the number of seeds."""
    assert image_term_half_width(100, 0.10) == pytest.approx(6.198, abs=1e-3)
    assert image_term_half_width(1000, 0.10) == pytest.approx(1.960,
                                                              abs=1e-3)
    assert image_term_half_width(10000, 0.10) == pytest.approx(0.620,
                                                               abs=1e-3)
    table = image_term_table()
    assert '| 10 % of the images | ± 6.20 pts | ± 1.96 pts | ± 0.62 pts |' \
        in table


def test_comparisons_pair_by_seed_and_ask_the_demo_questions():
    top1 = {'baseline': {0: 80.0, 1: 81.0, 2: 82.0},
            'gpt4image': {0: 81.0, 1: 82.5, 2: 83.0},
            'classname': {0: 80.5, 1: 81.0, 2: 82.5},
            'random': {0: 80.0, 1: 81.5}}  # seed 2 missing: paired on 0, 1
    # per-image correctness (200 images) consistent with each top-1
    correct = {a: {s: _correct(200, round(v * 2)) for s, v in by.items()}
               for a, by in top1.items()}
    pairs = {(p.a, p.b): p for p in comparisons(top1, correct)}
    assert list(pairs) == [('gpt4image', 'baseline'),
                           ('classname', 'baseline'),
                           ('random', 'baseline'),
                           ('gpt4image', 'classname'),
                           ('gpt4image', 'random')]
    assert pairs['gpt4image', 'baseline'].diffs == [1.0, 1.5, 1.0]
    assert pairs['random', 'baseline'].diffs == [0.0, 0.5]
    assert pairs['gpt4image', 'baseline'].per_image.shape == (3, 200)
    text = headline(list(pairs.values()), TITLES)
    assert text.startswith('Paired over 3 seeds and the test images')
    # a claim only where the interval excludes zero
    assert 'GPT4Image is better than baseline' in text
    assert 'No difference shown at 95% for' in text
    assert 'random vectors vs baseline' in text
    # two seeds (random vs baseline): an interval, no verdict
    assert pairs['random', 'baseline'].verdict == \
        '2 seeds: too few for a verdict'


def test_last_epochs_spread():
    assert last_epochs_spread([50, 88.0, 89.5, 89.0]) == pytest.approx(1.5)
    assert last_epochs_spread([88.0, 89.0]) is None


def test_a_curve_still_climbing_is_flagged_though_its_spread_is_small():
    """Validation top-1 climbing 40.4 -> 46.9 over the last 5 epochs: the
    last 3 epochs span 1.0 point (reads as settled), the fitted rise over
    the last 5 is 6.76 points (it is not)."""
    climbing = [20.1, 28.3, 33.0, 36.2, 40.4, 42.5, 45.9, 46.4, 46.9]
    assert last_epochs_spread(climbing) == pytest.approx(1.0)
    assert end_trend(climbing) == pytest.approx(6.76)
    assert still_rising(climbing)
    settled = [60.0, 85.0, 88.0, 89.5, 88.2, 89.1, 88.6]  # noise, no trend
    assert not still_rising(settled)
    assert end_trend([50.0, 60.0]) is None and not still_rising([50.0])


def test_parse_arms():
    assert parse_arms('random,baseline') == ['baseline', 'random']
    assert parse_arms(None) == ['baseline', 'gpt4image']
    assert parse_arms('all')[:4] == ['baseline', 'gpt4image', 'classname',
                                     'random']
    with pytest.raises(ValueError, match='unknown arm'):
        parse_arms('baseline,clip')
    with pytest.raises(ValueError, match='must include baseline'):
        parse_arms('gpt4image,random')


def test_a_user_registers_an_arm():
    from gpt4image_mm.experiment import ARMS, register_arm

    @register_arm('other_llm', 'other LLM', color='tab:red')
    def other(ctx):
        return ctx.base_store
    try:
        assert ARMS['other_llm'].aligned and ARMS['other_llm'].title == \
            'other LLM'
        assert parse_arms('baseline,other_llm') == ['baseline', 'other_llm']
    finally:
        del ARMS['other_llm']


def test_control_targets(tmp_path):
    from gpt4image_mm.datasets.store import EmbeddingStore
    from gpt4image_mm.utils.descriptions import read_descriptions
    names = ['T-shirt/top', 'Trouser', 'Bag', 'ankle_boot']
    recs = read_descriptions(write_classname_descriptions(
        str(tmp_path / 'c.jsonl'), names))
    assert {k: r['text'] for k, r in recs.items()} == {
        'class:T-shirt/top#0': 'a photo of a T-shirt/top.',
        'class:Trouser#0': 'a photo of a Trouser.',
        'class:Bag#0': 'a photo of a Bag.',
        'class:ankle_boot#0': 'a photo of a ankle boot.'}
    a = EmbeddingStore(write_random_store(str(tmp_path / 'r1'), names, 384))
    b = EmbeddingStore(write_random_store(str(tmp_path / 'r2'), names, 384))
    rows = np.asarray(a.embeddings, np.float32)
    assert a.keys() == ['class:T-shirt/top', 'class:Trouser', 'class:Bag',
                        'class:ankle_boot']
    assert rows.shape == (4, 384)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-3)
    assert np.array_equal(rows, np.asarray(b.embeddings, np.float32))
