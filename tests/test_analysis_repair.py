"""The repair loop queues only what is wrong; figures fit real class names.

A texture-like set (class names are everyday words) plants captions that
name another class's word besides their own in another form ("bands" for
``banded``, "weave" for ``woven``): reported as mentions, never queued. A
caption naming only another class is queued; with a store, only when its
embedding agrees (real all-MiniLM-L6-v2). Figures are rendered for
40-character names and for 1,000 classes, and checked for nothing cut at
the canvas edge. Every run is the real command in a subprocess.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import random_store

TEXTURE = {
    'banded': ['Broad horizontal bands of rust and cream cross the surface.',
               'A banded agate stone with parallel layers of colour.',
               'Wide bands of blue and white repeat across the fabric.',
               'Layered sandstone shows banding in orange and tan.',
               'Evenly spaced bands of dark and light paint on a wall.'],
    'woven': ['A tightly woven basket of pale wicker strips.',
              'Coarse woven burlap with threads crossing over and under.',
              'Close-up of a woven rattan chair seat.',
              'The weave of a linen cloth, warp and weft visible.',
              'Interlaced reeds form a woven mat.'],
    'dotted': ['Small black dots scattered evenly on white paper.',
               'A dotted fabric with tiny round spots of red.',
               'Polka dots of many colours on a yellow background.',
               'Rows of raised dots on a plastic sheet.',
               'White dots sprinkled over a navy blue scarf.'],
    'cracked': ['Dry mud split into cracked plates under the sun.',
                'Old paint cracked into a web of fine fissures.',
                'A cracked concrete pavement with deep splits.',
                'Parched earth full of cracks and broken clay.',
                'Cracked glaze on an antique ceramic vase.'],
}
# own class in another word form, plus another class's word: mentions
MENTIONS = {
    'class:banded#5': 'Horizontal bands of ochre and grey run across a '
                      'woven cloth.',
    'class:woven#5': 'A loose weave of threads dotted with knots.'}
# names only another class, and reads like it: queued with or without store
WRONG = ('class:dotted#5', 'A woven basket of pale straw.')
# names only another class, but reads like its own: queued on text alone,
# a mention once the store is asked
READS_OWN = ('class:cracked#5', 'Parched mud splits into dry plates with '
             'deep fissures, dotted with pebbles.')


def write_jsonl(path, recs):
    path.write_text(''.join(json.dumps(r) + '\n' for r in recs))
    return path


def analyze(*args):
    return subprocess.run([sys.executable, '-m', 'gpt4image_mm.cli',
                           'analyze', *map(str, args), '--no-progress'],
                          capture_output=True, text=True, timeout=600)


def metrics(out):
    return json.loads((out / 'metrics.json').read_text())['descriptions']


@pytest.fixture(scope='module')
def texture(tmp_path_factory):
    """The texture set and its MiniLM store (the project's embed step)."""
    from gpt4image_mm.embedding.embed import embed_descriptions
    from gpt4image_mm.embedding.encoders import build_text_encoder
    from gpt4image_mm.utils.assets import minilm_dir
    tmp = tmp_path_factory.mktemp('texture')
    recs = [{'key': f'class:{c}#{k}', 'text': t}
            for c, texts in TEXTURE.items() for k, t in enumerate(texts)]
    recs += [{'key': k, 'text': t} for k, t in (*MENTIONS.items(), WRONG,
                                                READS_OWN)]
    desc = write_jsonl(tmp / 'd.jsonl', recs)
    embed_descriptions(str(desc), build_text_encoder(minilm_dir(),
                                                     device='cpu'),
                       str(tmp / 'store'), progress=False)
    return tmp


def test_texture_words_as_adjectives_are_mentions_not_repairs(texture):
    out = texture / 'text'
    proc = analyze(texture / 'd.jsonl', '--per-class', '--out', out,
                   '--no-figures')
    assert proc.returncode == 0, proc.stderr
    flagged = (out / 'flagged_keys.txt').read_text().split()
    assert flagged == [WRONG[0], READS_OWN[0]]
    m = metrics(out)
    assert m['flagged']['other_class'] == 2 and m['flagged']['keys'] == 2
    assert m['flagged_share']['other_class'] == pytest.approx(2 / 24)
    assert m['mentions'] == {'other_and_own': 2}
    assert m['flagged_evidence'] == 'text'
    assert m['names_own_class_share'] == pytest.approx(22 / 24)
    examples = m['flagged_examples']
    assert {e['key'] for e in examples['other_and_own']} == set(MENTIONS)
    assert examples['other_class'][0] == {'key': WRONG[0], 'text': WRONG[1],
                                          'names': ['woven']}
    report = (out / 'report.md').read_text()
    assert '| other class | 2 | 8.3 % |' in report
    assert '| mention, not asked: other and own | 2 | 8.3 % |' in report
    assert f'`{WRONG[0]}` (names: woven): {WRONG[1]}' in report


def test_store_evidence_keeps_captions_that_read_like_their_class(texture):
    out = texture / 'store_report'
    proc = analyze(texture / 'd.jsonl', '--per-class', '--store',
                   texture / 'store', '--out', out, '--no-figures',
                   '--encoder', 'none')
    assert proc.returncode == 0, proc.stderr
    assert (out / 'flagged_keys.txt').read_text().split() == [WRONG[0]]
    m = metrics(out)
    assert m['flagged']['other_class'] == 1
    assert m['mentions'] == {'other_and_own': 2, 'other_nearer_own': 1}
    assert m['flagged_evidence'] == 'text and store'
    assert m['flagged_examples']['other_nearer_own'][0]['key'] == \
        READS_OWN[0]
    assert 'mention (other nearer own)' in (out / 'report.md').read_text()


def test_word_forms_and_synonym_lists():
    from gpt4image_mm.analysis.records import ClassNames
    from gpt4image_mm.analysis.wordforms import stem
    assert {stem(w) for w in ('banded', 'bands', 'banding')} == {'band'}
    assert {stem(w) for w in ('woven', 'weave', 'weaving')} == {'weav'}
    assert {stem(w) for w in ('dotted', 'dots', 'dot')} == {'dot'}
    assert {stem(w) for w in ('speed', 'speeds', 'speeding')} == {'speed'}
    names = ClassNames(['banded', 'woven', ['tench', 'Tinca tinca'],
                        ['great white shark', 'white shark', 'man-eater'],
                        'striped'])
    assert names.names[2:4] == ['tench', 'great white shark']
    assert names.found('Banding on a woven mat') == {0, 1}
    assert names.found('Two Tinca tincas and a man eater') == {2, 3}
    assert names.found('a white shark') == {3}
    assert names.found('a stripy weave') == {1, 4}
    assert names.found('a bandage, a stripper') == set()


def test_id_like_class_names_are_named_once_with_the_fix(tmp_path):
    desc = write_jsonl(tmp_path / 'd.jsonl', [
        {'key': f'class:n0144076{i}#{k}', 'text': f'A fish, photo {k}.'}
        for i in range(4) for k in range(2)])
    out = tmp_path / 'r'
    proc = analyze(desc, '--per-class', '--out', out, '--no-figures')
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in proc.stderr.splitlines()
             if ' ids' in ln and '--class-names' in ln]
    assert len(notes) == 1 and 'n01440760' in notes[0], proc.stderr
    report = (out / 'report.md').read_text()
    assert report.count('look like ids') == 1 and '--class-names' in report
    assert metrics(out)['class_names_look_like_ids'].startswith('n0144076')


def _frame_is_blank(png, width=3):
    """Nothing drawn in the outer ``width`` pixels: no title, label or
    legend runs off the canvas."""
    from PIL import Image
    img = np.asarray(Image.open(png).convert('L'))
    frame = np.concatenate([img[:width].ravel(), img[-width:].ravel(),
                            img[:, :width].ravel(), img[:, -width:].ravel()])
    return img.shape, bool((frame == 255).all())


def _class_set(tmp_path, names, per_class=2):
    keys = [f'class:{n}#{k}' for n in names for k in range(per_class)]
    desc = write_jsonl(tmp_path / 'd.jsonl', [
        {'key': k, 'text': f'A photo, number {i}.'} for i, k in
        enumerate(keys)])
    random_store(tmp_path / 'store', keys, dim=8)
    return desc


def test_figures_fit_long_class_names(tmp_path):
    """Long names, 28 to 83 characters: ImageNet's with their synonyms
    (joined by ' - ': a comma would make them synonyms, shown by the
    first)."""
    imagenet = ['great white shark, white shark, man-eater, man-eating shark, '
             'Carcharodon carcharias', 'tiger shark, Galeocerdo cuvieri',
             'electric ray, crampfish, numbfish, torpedo',
             'loggerhead, loggerhead turtle, Caretta caretta',
             'hammerhead, hammerhead shark', 'ostrich, Struthio camelus']
    names = [n.replace(', ', ' - ') for n in imagenet]
    assert max(map(len, names)) == 87 and len(names[2]) == 45
    desc = _class_set(tmp_path, names)
    out = tmp_path / 'r'
    proc = analyze(desc, '--per-class', '--store', tmp_path / 'store',
                   '--out', out, '--no-near-dups')
    assert proc.returncode == 0, proc.stderr
    for png in ('centroid_similarity.png', 'words.png'):
        shape, blank = _frame_is_blank(out / png)
        assert blank, f'{png} is cut at its edge ({shape})'
    report = (out / 'report.md').read_text()
    legend = report.split('Heatmap legend: ', 1)[1].split('\n', 1)[0]
    assert legend.split('; ')[0] == '1 ' + sorted(names)[0]
    assert len(legend.split('; ')) == len(names)


def test_figures_for_a_thousand_classes(tmp_path):
    names = [f'class {i:04d} of a long synonym list here'
             for i in range(1000)]
    desc = _class_set(tmp_path, names)
    out = tmp_path / 'r'
    proc = analyze(desc, '--per-class', '--store', tmp_path / 'store',
                   '--out', out, '--no-near-dups', '--encoder', 'none')
    assert proc.returncode == 0, proc.stderr
    shape, blank = _frame_is_blank(out / 'words.png')
    assert blank
    # no unreadable 1,000 x 1,000 heatmap: the confused pairs instead
    assert not (out / 'centroid_similarity.png').exists()
    report = (out / 'report.md').read_text()
    assert 'not drawn for 1,000 classes' in report
    table = report.split('## Confused classes', 1)[1].split('\n## ', 1)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith('|')]
    assert len(rows) == 2 + 20  # header, rule and 20 pairs
    assert len(json.loads((out / 'metrics.json').read_text())[
        'descriptions']['confused_pairs']) == 20
