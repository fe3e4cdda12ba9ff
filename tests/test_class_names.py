"""Class names as words, captions from other tools, and the repair loop.

A pets-like ImageFolder: class folders ``saint_bernard``, ``Russian_Blue``,
``german_shorthaired``, ``pug`` and file names that repeat the folder
(``saint_bernard_0.jpg``), as the Oxford-IIIT Pets layout has. Captions
name the classes as words ("Saint Bernard"), as real models write them.
Every CLI runs as a subprocess, against a local OpenAI-wire server.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _openai_server import prompt_text
from conftest import ROOT

from gpt4image_mm.utils.class_names import (
    ClassNameError,
    class_display_names,
    display_name,
    read_class_name_map,
)
from gpt4image_mm.utils.descriptions import iter_records, read_descriptions

FOLDERS = ['Russian_Blue', 'german_shorthaired', 'pug', 'saint_bernard']
# display names: underscores as spaces, case kept
WORDS = {'Russian_Blue': 'Russian Blue', 'german_shorthaired':
         'german shorthaired', 'pug': 'pug', 'saint_bernard': 'saint bernard'}
PER_CLASS = 3


def tool(name, *args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / 'tools' / name), *map(str, args)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OPENAI_API_KEY='', **(env or {})))


@pytest.fixture
def pets(tmp_path):
    """The image folder, its keys and a CustomDataset config over it."""
    from PIL import Image
    rng = np.random.default_rng(0)
    root = tmp_path / 'images'
    keys = []
    for c in FOLDERS:
        (root / c).mkdir(parents=True)
        for i in range(PER_CLASS):
            arr = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f'{c}_{i}.jpg')
            keys.append(f'{c}/{c}_{i}.jpg')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("train_dataloader = dict(dataset=dict(type='CustomDataset'"
                   f", data_root={str(root)!r}, pipeline=[]))\n")
    return root, sorted(keys), cfg


def test_display_names_and_user_maps(tmp_path):
    assert display_name('saint_bernard') == 'saint bernard'
    assert display_name('Russian_Blue') == 'Russian Blue'
    assert display_name('tench, Tinca tinca') == 'tench, Tinca tinca'
    folders = ['n01440764', 'n01443537']
    js = tmp_path / 'names.json'
    js.write_text(json.dumps({'n01440764': 'tench'}))
    assert class_display_names(folders, str(js)) == ['tench', 'n01443537']
    csv = tmp_path / 'names.csv'
    csv.write_text('folder,name\nn01443537,goldfish\n')
    assert class_display_names(folders, str(csv)) == ['n01440764', 'goldfish']
    lines = tmp_path / 'names.txt'  # ImageNet's names hold synonyms
    lines.write_text('tench, Tinca tinca\ngoldfish, Carassius auratus\n')
    assert class_display_names(folders, str(lines)) == ['tench', 'goldfish']
    from gpt4image_mm.utils.class_names import class_synonyms
    assert class_synonyms(folders, str(lines)) == [
        ['tench', 'Tinca tinca'], ['goldfish', 'Carassius auratus']]
    lines.write_text('tench\n')
    with pytest.raises(ClassNameError, match='1 names.*2 classes'):
        read_class_name_map(str(lines), folders)
    js.write_text(json.dumps({'n0000000': 'typo'}))
    with pytest.raises(ClassNameError, match="'n0000000'"):
        read_class_name_map(str(js), folders)


def test_prompts_say_words_and_analysis_counts_them(tmp_path, pets, serve):
    """Class prompts sent to the server hold the words, never the folder
    names; the analysis finds every caption naming its own class."""
    root, keys, cfg = pets
    fake, url = serve()
    out = tmp_path / 'd.jsonl'
    proc = tool('caption.py', '--images', root, '--out', out, '--model', 'm',
                '--base-url', url, '--prompt', 'class', '--no-progress')
    assert proc.returncode == 0, proc.stderr
    prompts = [prompt_text(json.loads(b)) for b in fake.bodies]
    assert len(prompts) == len(keys)
    for folder, words in WORDS.items():
        said = [p for p in prompts if f'a photo of a {words}.' in p]
        assert len(said) == PER_CLASS, (folder, prompts)
    assert not any(f in p for p in prompts for f in FOLDERS if '_' in f)
    report = tmp_path / 'r'
    proc = tool('analyze_descriptions.py', out, '--config', cfg, '--out',
                report, '--no-progress', '--no-figures')
    assert proc.returncode == 0, proc.stderr
    m = json.loads((report / 'metrics.json').read_text())['descriptions']
    assert m['labelled'] == len(keys)
    assert m['names_own_class_share'] == 1.0
    assert m['names_other_class'] == 0


def test_class_names_file_overrides_the_prompt_name(tmp_path, pets, serve):
    root, keys, _ = pets
    fake, url = serve()
    names = tmp_path / 'names.csv'
    names.write_text('pug,Pug dog\n' + ''.join(
        f'{f},{w}\n' for f, w in WORDS.items() if f != 'pug'))
    out = tmp_path / 'd.jsonl'
    proc = tool('caption.py', '--images', root, '--out', out, '--model', 'm',
                '--base-url', url, '--prompt', 'class', '--no-progress',
                '--class-names', names)
    assert proc.returncode == 0, proc.stderr
    prompts = [prompt_text(json.loads(b)) for b in fake.bodies]
    assert sum('a photo of a Pug dog.' in p for p in prompts) == PER_CLASS
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'pugs': 'Pug'}))
    proc = tool('caption.py', '--images', root, '--out', tmp_path / 'e.jsonl',
                '--model', 'm', '--base-url', url, '--prompt', 'class',
                '--class-names', bad, '--dry-run')
    assert proc.returncode == 2
    assert "'pugs'" in proc.stderr and 'Traceback' not in proc.stderr


def test_bare_file_names_import_onto_every_key(tmp_path, pets):
    """Another project's {file name: caption} JSON lands on the dataset's
    relative-path keys; a list gives several descriptions of one image."""
    root, keys, cfg = pets
    src = {k.rsplit('/', 1)[1]: f'A photo of a {WORDS[k.split("/")[0]]}.'
           .replace('saint bernard', 'Saint Bernard') for k in keys}
    first = keys[0].rsplit('/', 1)[1]
    src[first] = ['One caption.', 'Another caption.']
    src['not_in_the_dataset.jpg'] = 'A stray caption.'
    path = tmp_path / 'captions.json'
    path.write_text(json.dumps(src))
    out = tmp_path / 'imported.jsonl'
    proc = tool('embed.py', 'import-map', path, '--out', out, '--images',
                root)
    assert proc.returncode == 0, proc.stderr
    assert 'unmatched 1' in proc.stdout
    assert 'not_in_the_dataset.jpg' in proc.stdout
    assert f'{len(keys)} of {len(keys)} dataset samples now have a ' \
        'description' in proc.stdout
    recs = read_descriptions(str(out))
    assert set(recs) == set(keys[1:]) | {f'{keys[0]}#0', f'{keys[0]}#1'}
    k = 'saint_bernard/saint_bernard_1.jpg'
    assert recs[k]['text'] == 'A photo of a Saint Bernard.'
    # the same source through the training config's dataset, as JSON Lines
    jl = tmp_path / 'captions.jsonl'
    jl.write_text(''.join(json.dumps({'image': k.rsplit('/', 1)[1],
                                      'caption': 'A pet.'}) + '\n'
                          for k in keys[:5]))
    out2 = tmp_path / 'imported2.jsonl'
    proc = tool('embed.py', 'import-map', jl, '--out', out2, '--config', cfg)
    assert proc.returncode == 0, proc.stderr
    assert set(read_descriptions(str(out2))) == set(keys[:5])
    assert f'5 of {len(keys)} dataset samples now have a description ' \
        f'({len(keys) - 5} without)' in proc.stdout


def test_ambiguous_name_is_an_error_naming_both_paths(tmp_path, pets):
    from PIL import Image
    root, keys, _ = pets
    for c in ('pug', 'saint_bernard'):
        Image.new('RGB', (8, 8)).save(root / c / 'shared.jpg')
    path = tmp_path / 'captions.csv'
    path.write_text('image,caption\nshared.jpg,A dog.\n'
                    'pug/shared.jpg,A pug.\npug_0.jpg,A pug.\n')
    out = tmp_path / 'imported.jsonl'
    proc = tool('embed.py', 'import-map', path, '--out', out, '--images',
                root)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith('error: ') and 'shared.jpg' in err
    assert 'pug/shared.jpg' in err and 'saint_bernard/shared.jpg' in err
    assert not out.exists()


def planted_policy():
    """The first answer for some images is bad: a refusal, an empty text,
    another class, a copy of another answer, a server error. Every later
    answer is the server's normal one (it names the image)."""
    seen = {}
    bad = iter([{'text': 'A blurry photo. Unfortunately, I cannot see the '
                          'animal clearly.'},
                {'text': '...'},
                {'text': 'A pug lying on a sofa.'},
                {'text': 'A dog on grass.'}, {'text': 'A dog on grass.'},
                {'status': 400, 'message': 'image rejected'}])

    def policy(body, n):
        from _openai_server import content_id
        cid = content_id(body)
        seen[cid] = seen.get(cid, 0) + 1
        words = prompt_text(body)
        if seen[cid] == 1 and 'Russian Blue' in words or (
                seen[cid] == 1 and 'saint bernard' in words):
            return next(bad, None)
        return None
    return policy


def test_repair_loop_end_to_end(tmp_path, pets, serve):
    """analyze flags the planted records, --redo-keys asks exactly those
    again, and a second analysis finds nothing left to fix."""
    root, keys, cfg = pets
    fake, url = serve(policy=planted_policy())
    out = tmp_path / 'd.jsonl'
    common = ['--images', root, '--out', out, '--model', 'm', '--base-url',
              url, '--prompt', 'class', '--no-progress', '--concurrency', '1']
    proc = tool('caption.py', *common)
    assert proc.returncode == 1, proc.stderr  # the server error is left
    report = tmp_path / 'r1'
    proc = tool('analyze_descriptions.py', out, '--config', cfg, '--out',
                report, '--no-progress', '--no-figures')
    assert proc.returncode == 0, proc.stderr
    m = json.loads((report / 'metrics.json').read_text())['descriptions']
    assert m['flagged'] == {'failure': 1, 'refusal': 1, 'empty': 1,
                            'other_class': 1, 'exact_duplicate': 1,
                            'keys': 5}
    flagged = (report / 'flagged_keys.txt').read_text().split('\n')[:-1]
    texts = {r['key']: r.get('text') for _, r in iter_records(str(out))}
    planted = {k for k, t in texts.items() if t in (
        None, '...', 'A pug lying on a sofa.',
        'A blurry photo. Unfortunately, I cannot see the animal clearly.')}
    dup = [k for k, t in texts.items() if t == 'A dog on grass.']
    assert set(flagged) == planted | {max(dup, key=list(texts).index)}
    assert 'flagged_keys.txt' in (report / 'report.md').read_text()
    # the repair pass: priced first, then asked, exactly those keys
    proc = tool('caption.py', *common, '--redo-keys',
                report / 'flagged_keys.txt', '--dry-run')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)['requests'] == 5
    before = len(fake.bodies)
    proc = tool('caption.py', *common, '--redo-keys',
                report / 'flagged_keys.txt')
    assert proc.returncode == 0, proc.stderr
    assert len(fake.bodies) - before == 5
    redos = [r for _, r in iter_records(str(out)) if r.get('redo')]
    assert sorted(r['key'] for r in redos) == sorted(flagged)
    report2 = tmp_path / 'r2'
    proc = tool('analyze_descriptions.py', out, '--config', cfg, '--out',
                report2, '--no-progress', '--no-figures')
    assert proc.returncode == 0, proc.stderr
    m = json.loads((report2 / 'metrics.json').read_text())['descriptions']
    assert m['flagged']['keys'] == 0
    assert m['descriptions'] == len(keys) and m['failures'] == 0
    assert m['refusals'] == m['contentless'] == m['exact_duplicates'] == 0
    assert m['names_other_class'] == 0
    assert (report2 / 'flagged_keys.txt').read_text() == ''
    fixed = read_descriptions(str(out))
    assert all(fixed[k]['text'].startswith('Image ') for k in flagged)
    # a key of another dataset is refused, not skipped in silence
    stray = tmp_path / 'stray.txt'
    stray.write_text('somewhere/else.jpg\n')
    proc = tool('caption.py', *common, '--redo-keys', stray)
    assert proc.returncode == 2 and 'somewhere/else.jpg' in proc.stderr


def test_repair_answer_supersedes_in_every_reader(tmp_path):
    """A ``"redo": true`` success replaces the key's earlier one for the
    dataset reader, embed.py's reader and caption.py merge; an unmarked
    second text stays an error."""
    from gpt4image_mm.captioning.merge import merge
    from gpt4image_mm.embedding.embed import load_description_texts
    from gpt4image_mm.utils.descriptions import DescriptionFileError
    path = tmp_path / 'd.jsonl'
    recs = [{'key': 'a', 'text': 'old'}, {'key': 'b', 'text': 'kept'},
            {'key': 'a', 'text': 'new', 'redo': True}]
    path.write_text(''.join(json.dumps(r) + '\n' for r in recs))
    assert read_descriptions(str(path))['a']['text'] == 'new'
    loaded = load_description_texts(str(path))
    assert dict(zip(loaded.keys, loaded.texts)) == {'a': 'new', 'b': 'kept'}
    merged = tmp_path / 'm.jsonl'
    merge(str(merged), [str(path)])
    assert read_descriptions(str(merged))['a']['text'] == 'new'
    path.write_text(''.join(json.dumps(r) + '\n' for r in recs[:2] + [
        {'key': 'a', 'text': 'other'}]))
    with pytest.raises(DescriptionFileError, match='duplicate key'):
        read_descriptions(str(path))


# -- the class names a rerun says are the ones its records name ----------
def caption_cmd(root, out, url, *extra):
    return [sys.executable, '-m', 'gpt4image_mm.cli', 'caption', '--images',
            str(root), '--out', str(out), '--model', 'm', '--base-url', url,
            '--prompt', 'class', '--no-progress', *map(str, extra)]


def caption(root, out, url, *extra):
    return subprocess.run(caption_cmd(root, out, url, *extra),
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OPENAI_API_KEY='',
                                   PYTHONPATH=str(ROOT)))


def test_changed_class_names_are_asked_again_on_resume(tmp_path, pets,
                                                       serve):
    """Corrected names on a rerun: the keys of the renamed class (only
    those) are asked again with the new name, their new answers supersede
    the old ones, and old and new records carry different prompt ids."""
    root, keys, _ = pets
    fake, url = serve()
    out = tmp_path / 'd.jsonl'
    first = caption(root, out, url)
    assert first.returncode == 0, first.stderr
    assert fake.n_requests == len(keys)
    names = tmp_path / 'names.json'
    names.write_text(json.dumps({'pug': 'Pug dog'}))
    again = caption(root, out, url, '--class-names', names)
    assert again.returncode == 0, again.stderr
    renamed = [k for k in keys if k.startswith('pug/')]
    assert fake.n_requests == len(keys) + len(renamed)
    said = [prompt_text(json.loads(b)) for b in fake.bodies[len(keys):]]
    assert all('a photo of a Pug dog.' in p for p in said)
    assert f'{len(renamed)} answer(s) were given for other class names' in \
        again.stderr
    assert json.loads(again.stdout.splitlines()[-1])['names_changed'] == \
        len(renamed)
    recs = [r for _, r in iter_records(str(out))]
    ids = {k: [r['prompt_id'] for r in recs if r['key'] == k] for k in keys}
    for k in renamed:
        old, new = ids[k]
        assert old != new and old.startswith('class-v1/name-')
        assert new.startswith('class-v1/name-')
    assert all(len(ids[k]) == 1 for k in keys if k not in renamed)
    fixed = read_descriptions(str(out))
    assert all('Pug dog' in fixed[k]['text'] for k in renamed)
    # the same names once more: nothing is left to ask
    third = caption(root, out, url, '--class-names', names)
    assert third.returncode == 0, third.stderr
    assert fake.n_requests == len(keys) + len(renamed)


def test_two_folders_with_one_name_are_refused(tmp_path, pets, serve):
    root, keys, _ = pets
    fake, url = serve()
    names = tmp_path / 'names.json'
    names.write_text(json.dumps({'pug': 'dog', 'saint_bernard': 'Dog'}))
    proc = caption(root, tmp_path / 'd.jsonl', url, '--class-names', names)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and 'Traceback' not in proc.stderr
    assert err[0].startswith(f'error: {names}: ')
    assert "'pug' and 'saint_bernard' both have the name 'dog'" in err[0]
    assert fake.n_requests == 0 and not (tmp_path / 'd.jsonl').exists()


# -- ImageNet's own name files on a folder of wnids ------------------------
WNIDS = {'n01440764': 'tench, Tinca tinca',
         'n01443537': 'goldfish, Carassius auratus',
         'n01484850': 'great white shark, white shark, man-eater, '
                      'man-eating shark, Carcharodon carcharias',
         'n03710637': 'maillot',
         'n03710721': 'maillot, tank suit'}
SHOWN = {'n01440764': 'tench', 'n01443537': 'goldfish',
         'n01484850': 'great white shark', 'n03710637': 'maillot',
         'n03710721': 'tank suit'}  # a shared first synonym gives way


@pytest.fixture
def wnid_folder(tmp_path):
    """``train/<wnid>/<image>.JPEG``-style folder, ImageNet's two files
    (the whole-dataset files list more synsets than the folder holds)."""
    from _openai_server import make_images
    root = tmp_path / 'train'
    keys = make_images(str(root), classes=tuple(WNIDS), per_class=1)
    rows = dict(WNIDS, n01491361='tiger shark, Galeocerdo cuvieri')
    loc = tmp_path / 'LOC_synset_mapping.txt'
    loc.write_text(''.join(f'{w} {n}\n' for w, n in sorted(rows.items())))
    index = tmp_path / 'imagenet_class_index.json'
    index.write_text(json.dumps({str(i): [w, n.split(',')[0].replace(
        ' ', '_')] for i, (w, n) in enumerate(sorted(rows.items()))}))
    return root, keys, loc, index


def test_imagenet_name_files_name_a_wnid_folder(tmp_path, wnid_folder,
                                               serve):
    root, keys, loc, index = wnid_folder
    fake, url = serve()
    for n, names in enumerate((loc, index)):
        start = fake.n_requests
        proc = caption(root, tmp_path / f'd{n}.jsonl', url, '--class-names',
                       names)
        assert proc.returncode == 0, proc.stderr
        assert 'are ids' not in proc.stderr
        said = {prompt_text(json.loads(b)) for b in fake.bodies[start:]}
        expected = SHOWN if names == loc else dict(
            SHOWN, n03710721='maillot')  # the index file has one name each
        if names == index:  # two classes called maillot: said, not refused
            assert "2 classes share the name 'maillot'" in proc.stderr
        assert said == {f'This is a photo of a {w}. Describe this image in '
                        f'detail, focusing on the {w}.'
                        for w in expected.values()}
    # no names given: the wnids are said, and caption says so once
    proc = caption(root, tmp_path / 'e.jsonl', url, '--dry-run')
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if 'are ids' in ln]
    assert len(warned) == 1 and '--class-names' in warned[0]
    assert warned[0].startswith('warning: 5 of 5 class names are ids')
    # every synonym, for the analysis: the display name first
    from gpt4image_mm.utils.class_names import class_synonyms
    assert class_synonyms(sorted(WNIDS), str(loc)) == [
        ['tench', 'Tinca tinca'], ['goldfish', 'Carassius auratus'],
        ['great white shark', 'white shark', 'man-eater',
         'man-eating shark', 'Carcharodon carcharias'], ['maillot'],
        ['tank suit', 'maillot']]


def test_an_unknown_class_names_format_is_refused(tmp_path, wnid_folder,
                                                  serve):
    root, keys, _, _ = wnid_folder
    fake, url = serve()
    names = tmp_path / 'names.json'
    names.write_text(json.dumps(['tench', 'goldfish']))
    proc = caption(root, tmp_path / 'd.jsonl', url, '--class-names', names)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'error: {names}: ')
    assert 'unknown class-name format: found a JSON list' in err[0]
    for known in ('LOC_synset_mapping.txt', 'imagenet_class_index.json',
                  '{"<folder>": "<name>"}', 'one name per line'):
        assert known in err[0]
    text = tmp_path / 'names.txt'
    text.write_text('tench\ngoldfish\n')
    with pytest.raises(ClassNameError, match='unknown class-name format: '
                       'found 2 names, one per line.*the dataset has 5 '
                       'classes; known formats: .*LOC_synset_mapping.txt'):
        class_display_names(sorted(WNIDS), str(text))
    assert fake.n_requests == 0
