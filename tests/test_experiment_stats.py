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
    headline,
    last_epochs_spread,
    mean_std,
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


def test_twelve_seeds_use_t_not_the_normal_quantile():
    """With 12 seeds (11 dof) the interval is t = 2.201 wide, not 1.96:
    a difference 1.96 would call better is no significant difference."""
    diffs = [1.0, -0.22] * 6  # mean / standard error = 2.12
    sd = mean_std(diffs)[1]
    mean = sum(diffs) / 12
    assert mean - 1.96 * sd / math.sqrt(12) > 0  # the old claim
    assert Paired('a', 'b', diffs).verdict == 'no significant difference'


def test_paired_interval_is_the_t_interval():
    # diffs 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3026527 -> 2 ± 2.484
    p = Paired('gpt4image', 'baseline', [1.0, 2.0, 3.0])
    lo, hi = p.interval
    assert math.isclose(lo, 2 - 4.3026527 / math.sqrt(3), rel_tol=1e-7)
    assert math.isclose(hi, 2 + 4.3026527 / math.sqrt(3), rel_tol=1e-7)
    assert p.verdict == 'no significant difference'
    # five seeds, all near +1: t(0.975, 4) = 2.776, sd 0.0707
    tight = Paired('gpt4image', 'baseline', [1.0, 1.1, 0.9, 1.0, 1.0])
    assert tight.interval[0] > 0 and tight.verdict == 'better'
    assert Paired('a', 'b', [-1.0, -1.1, -0.9]).verdict == 'worse'
    assert Paired('a', 'b', [0.5]).interval is None
    assert mean_std([2.0]) == (2.0, 0.0)


def test_comparisons_pair_by_seed_and_ask_the_demo_questions():
    top1 = {'baseline': {0: 80.0, 1: 81.0, 2: 82.0},
            'gpt4image': {0: 81.0, 1: 82.5, 2: 83.0},
            'classname': {0: 80.5, 1: 81.0, 2: 82.5},
            'random': {0: 80.0, 1: 81.5}}  # seed 2 missing: paired on 0, 1
    pairs = {(p.a, p.b): p for p in comparisons(top1)}
    assert list(pairs) == [('gpt4image', 'baseline'),
                           ('classname', 'baseline'),
                           ('random', 'baseline'),
                           ('gpt4image', 'classname'),
                           ('gpt4image', 'random')]
    assert pairs['gpt4image', 'baseline'].diffs == [1.0, 1.5, 1.0]
    assert pairs['random', 'baseline'].diffs == [0.0, 0.5]
    text = headline(list(pairs.values()), TITLES)
    assert text.startswith('Paired over 3 seeds.')
    # a claim only where the interval excludes zero
    assert 'GPT4Image is better than baseline' in text
    assert 'No difference shown at 95% for' in text
    assert 'random vectors vs baseline' in text


def test_last_epochs_spread():
    assert last_epochs_spread([50, 88.0, 89.5, 89.0]) == pytest.approx(1.5)
    assert last_epochs_spread([88.0, 89.0]) is None


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
