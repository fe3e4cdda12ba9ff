"""tools/analyze_descriptions.py on a planted set, with the real MiniLM.

The generated set plants known failures, refusals, an empty text, exact and
near duplicates, over-long texts and class mix-ups; the analysis must find
exactly those, in one set and side by side with a clean one (--compare).
"""
import json
import subprocess
import sys

import pytest
from conftest import ROOT, make_image_folder

from gpt4image_mm.analysis.records import ClassNames, is_refusal
from gpt4image_mm.cli.analyze import main as analyze_main

CLEAN = {
    'cat': ['A small grey cat sleeps curled up on a red sofa.',
            'An orange tabby cat stares at a bird through the glass.',
            'The black cat with green eyes sits on a wooden fence at dusk.',
            'A fluffy white kitten, a young cat, plays with a ball of yarn.',
            'A striped cat stretches lazily in a patch of sunlight.'],
    'dog': ['A golden retriever dog fetches a stick from a lake.',
            'A tiny dog in a knitted sweater walks on a snowy street.',
            'Two spotted dalmatian dogs run along a sandy beach.',
            'A sleepy old dog rests its head on its paws by the fireplace.',
            'A muddy terrier dog digs a hole in the backyard garden.'],
    'ship': ['A large cargo ship loaded with containers leaves the harbour.',
             'An old wooden sailing ship with white sails on a calm sea.',
             'A cruise ship lit up at night is docked at the port.',
             'A grey navy ship cuts through rough waves under storm clouds.',
             'A rusty fishing ship is anchored near a rocky coastline.'],
    'airplane': ['A white passenger airplane takes off from a busy runway.',
                 'A small red propeller airplane flies over green fields.',
                 'A jet airplane leaves a long contrail in the blue sky.',
                 'An airplane is parked at the gate while bags are loaded.',
                 'A vintage airplane with two wings performs a loop at a show.']}
NAMES = list(CLEAN)
MIXUPS = {'class:cat#5': 'A brown dog runs across a grassy park chasing a '
          'tennis ball.',
          'class:dog#5': 'A dog and a cat share one blanket on the kitchen '
          'floor.'}
REFUSALS = {'class:ship#5': "I'm sorry, but I can't describe this image.",
            'class:airplane#5': 'As an AI, I am unable to see images.'}
NEAR_DUP = ('class:dog#7', 'A golden retriever dog fetches the stick from a '
            'lake.')  # dog#0 with one article changed
LONG_WORDS = {
    'airplane': 'engine wing fuselage cockpit window tail rudder flap wheel '
    'runway tower hangar cloud sky pilot cabin'.split(),
    'passengers': 'luggage seat aisle meal blanket steward ticket gate '
    'boarding terminal lounge suitcase queue passport screen belt'.split(),
    'ship': 'hull deck mast anchor harbour wave bow stern crew cargo rope '
    'port sail bridge funnel keel'.split()}


def _long_text(name, n_words, seed):
    vocab = LONG_WORDS[name]
    words = [vocab[(i * 7 + seed) % len(vocab)] for i in range(n_words)]
    return f'The {name} shows ' + ' '.join(words) + '.'


def planted_records():
    """The set and what it plants (the expected figures)."""
    recs = []
    for name, texts in CLEAN.items():
        for k, text in enumerate(texts):
            recs.append({'key': f'class:{name}#{k}', 'text': text})
    recs += [{'key': k, 'text': t} for k, t in {**MIXUPS, **REFUSALS}.items()]
    recs.append({'key': 'class:dog#6', 'text': '...'})  # empty in substance
    recs += [{'key': f'class:cat#{k}', 'text': CLEAN['cat'][0]}
             for k in (6, 7)]  # two exact duplicates of cat#0
    recs.append({'key': NEAR_DUP[0], 'text': NEAR_DUP[1]})
    # two texts past MiniLM's 256 tokens, one between 77 and 256 tokens
    recs += [{'key': 'class:airplane#6', 'text': _long_text('airplane', 300, 0)},
             {'key': 'class:airplane#7', 'text': _long_text('passengers', 280, 3)},
             {'key': 'class:ship#7', 'text': _long_text('ship', 100, 5)}]
    recs += [{'key': 'class:airplane#8', 'error': 'timeout'},
             {'key': 'class:ship#8', 'error': 'HTTP 500'},
             {'key': 'class:dog#8', 'error': 'timeout'},  # then succeeds
             {'key': 'class:dog#8', 'text': 'A puppy dog naps in a basket.'},
             {'key': 'class:dog#8', 'text': 'A puppy dog naps in a basket.'}]
    return recs


def write_jsonl(path, recs):
    path.write_text(''.join(json.dumps(r) + '\n' for r in recs))
    return path


@pytest.fixture(scope='module')
def planted(tmp_path_factory):
    """The planted set and a clean one, each embedded into a MiniLM store
    by the project's own embed step."""
    from gpt4image_mm.embedding.embed import embed_descriptions
    from gpt4image_mm.embedding.encoders import build_text_encoder
    from gpt4image_mm.utils.assets import minilm_dir
    tmp = tmp_path_factory.mktemp('analysis')
    encoder = build_text_encoder(minilm_dir(), device='cpu')
    dirty = write_jsonl(tmp / 'dirty.jsonl', planted_records())
    clean = write_jsonl(tmp / 'clean.jsonl', [
        {'key': f'class:{n}#{k}', 'text': t}
        for n, texts in CLEAN.items() for k, t in enumerate(texts)])
    for path in (dirty, clean):
        embed_descriptions(str(path), encoder, str(path.with_suffix('')),
                           progress=False)
    return tmp


def test_planted_set_is_found_exactly(planted, capsys):
    out = planted / 'report'
    rc = analyze_main([str(planted / 'dirty.jsonl'), '--per-class',
                       '--store', str(planted / 'dirty'), '--out', str(out),
                       '--no-progress'])
    assert rc == 0
    m = json.loads((out / 'metrics.json').read_text())['descriptions']
    n_lines = len(planted_records())
    assert m['lines'] == n_lines
    assert m['descriptions'] == 20 + 2 + 2 + 1 + 2 + 1 + 3 + 1
    assert m['failures'] == 2 and m['failure_records'] == 3
    assert m['repeated_keys'] == 1  # dog#8's success written twice
    assert m['refusals'] == 2 and m['contentless'] == 1
    assert m['exact_duplicates'] == 2
    assert m['near_duplicate_pairs'] == 1
    assert m['near_duplicate_records'] == 2
    assert m['encoder_max_length'] == 256
    assert m['encoder_truncated'] == 2  # the two 280+-word texts
    assert m['clip77_truncated'] == 3  # and the 100-word one
    assert m['names_other_class'] == 2  # the two mix-ups
    assert m['labelled'] == m['descriptions']
    # the cat/dog mix-ups make that the most confused pair
    top = m['confused_pairs'][0]
    assert {top['a'], top['b']} == {'cat', 'dog'}
    assert 0 < m['between_class_cosine'] < m['within_class_cosine'] < 1
    report = (out / 'report.md').read_text()
    assert 'refusal' in report and 'class:ship#5' in report
    assert (out / 'centroid_similarity.png').stat().st_size > 1000
    assert '| refusals | 2 |' in capsys.readouterr().out


def test_compare_two_sets(planted):
    out = planted / 'cmp'
    rc = analyze_main([str(planted / 'dirty.jsonl'), '--per-class',
                       '--store', str(planted / 'dirty'),
                       '--compare', str(planted / 'clean.jsonl'),
                       '--compare-store', str(planted / 'clean'),
                       '--out', str(out), '--no-progress', '--no-figures'])
    assert rc == 0
    m = json.loads((out / 'metrics.json').read_text())
    a, b = m['A'], m['B']
    assert (a['refusals'], b['refusals']) == (2, 0)
    assert (a['exact_duplicates'], b['exact_duplicates']) == (2, 0)
    assert (a['near_duplicate_pairs'], b['near_duplicate_pairs']) == (1, 0)
    assert (a['names_other_class'], b['names_other_class']) == (2, 0)
    assert b['names_own_class_share'] == 1.0
    # the mix-ups and refusals cost class signal
    assert a['loo_centroid_accuracy'] < b['loo_centroid_accuracy']
    report = (out / 'report.md').read_text()
    assert '| metric | A | B |' in report
    assert '| refusals | 2 | 0 |' in report


def test_per_image_labels_from_config(tmp_path):
    """Per-image keys take their class from the dataset config."""
    root = tmp_path / 'imgs'
    keys = make_image_folder(root, per_class=2)
    (tmp_path / 'cfg.py').write_text(
        "train_dataloader = dict(dataset=dict(type='CustomDataset', "
        f"data_root='{root}', pipeline=[]))\n")
    texts = {'cat/0.png': 'A cat on a mat.', 'cat/1.png': 'A dog on a mat.',
             'dog/0.png': 'A big dog.', 'dog/1.png': 'Two dogs play.',
             'ship/0.png': 'A ship at sea.', 'ship/1.png': 'Waves only.'}
    assert sorted(texts) == keys
    desc = write_jsonl(tmp_path / 'd.jsonl', [
        {'key': k, 'text': t} for k, t in texts.items()])
    out = tmp_path / 'r'
    assert analyze_main([str(desc), '--config', str(tmp_path / 'cfg.py'),
                         '--out', str(out), '--no-progress']) == 0
    m = json.loads((out / 'metrics.json').read_text())['descriptions']
    assert m['labelled'] == 6
    assert m['names_own_class_share'] == pytest.approx(4 / 6)
    assert m['names_other_class'] == 1
    assert 'tokens_median' not in m  # no store, no --encoder: no tokens


def test_bad_record_is_one_line_exit_2(tmp_path):
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"key": "class:cat#0", "text": "A cat."}\n{oops\n')
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'analyze_descriptions.py'),
         str(bad), '--out', str(tmp_path / 'r'), '--no-progress'],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith('error: ') and f'{bad}:2' in lines[-1]
    assert not (tmp_path / 'r' / 'report.md').exists()


def test_class_name_matching():
    names = ClassNames(['T-shirt/top', 'Shirt', 'tench, Tinca tinca'])
    assert names.found('a white t-shirt') == {0}
    assert names.found('two shirts and a tench') == {1, 2}
    assert names.found('a shirtless man') == set()
    assert is_refusal("I'm sorry, I cannot see the image.")
    assert is_refusal('The photo is dark. Unfortunately, I cannot tell.')
    assert not is_refusal('A sorry-looking dog in the rain.')


def test_lsh_near_duplicates_match_all_pairs():
    """Above --near-dup-exact-max the LSH search finds the same pairs."""
    import numpy as np

    from gpt4image_mm.analysis.embeddings import near_duplicates
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((6000, 32)).astype(np.float32)
    twins = rng.choice(6000, (40, 2), replace=False)
    for a, b in twins:  # cosine ~0.995 with its twin
        emb[b] = emb[a] + 0.1 * rng.standard_normal(32) * np.linalg.norm(
            emb[a]) / np.sqrt(32)
    emb = emb.astype(np.float16)
    exact = near_duplicates(emb)
    lsh = near_duplicates(emb, exact_max=0)
    assert exact['near_duplicate_method'] == 'all pairs'
    assert lsh['near_duplicate_method'].startswith('LSH')
    assert exact['near_duplicate_pairs'] == 40
    assert lsh['near_duplicate_pairs'] == 40
    assert lsh['near_duplicate_records'] == 80


def test_no_near_dups_skips_the_search(planted):
    out = planted / 'skip'
    assert analyze_main([str(planted / 'dirty.jsonl'), '--per-class',
                         '--store', str(planted / 'dirty'), '--out', str(out),
                         '--no-progress', '--no-figures', '--encoder', 'none',
                         '--no-near-dups']) == 0
    m = json.loads((out / 'metrics.json').read_text())['descriptions']
    assert m['near_duplicate_method'] == 'skipped'
    assert 'near_duplicate_pairs' not in m and 'tokens_median' not in m
    assert m['exact_duplicates'] == 2  # the text figures are unchanged
