"""import-map reads other tools' caption files by their format: LLaVA /
ShareGPT conversation lists and COCO caption files, built here the way those
tools write them, land on an ImageNet-style folder's keys with exact ``#k``
numbering; an unknown file is refused naming what it holds and the formats
known."""
import json
import subprocess
import sys

import pytest
from conftest import ROOT

from gpt4image_mm.utils.descriptions import read_descriptions

WNIDS = ('n01440764', 'n01443537', 'n01484850')


def import_map(*args):
    return subprocess.run(
        [sys.executable, '-m', 'gpt4image_mm.cli', 'import-map',
         *map(str, args)], capture_output=True, text=True, timeout=120,
        cwd=ROOT)


def write_images(root, rels):
    from PIL import Image
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (4, 4), (len(rel), 0, 0)).save(root / rel,
                                                         format='JPEG')


@pytest.fixture
def imagenet(tmp_path):
    """``train/<wnid>/<wnid>_<i>.JPEG``, as ImageNet's train folder."""
    rels = [f'{w}/{w}_{i}.JPEG' for w in WNIDS for i in range(3)]
    write_images(tmp_path / 'train', rels)
    return tmp_path / 'train', sorted(rels)


def llava_records(keys):
    """LLaVA / ShareGPT4V records: an id, the image under the tool's own
    root (``train/...``), a human prompt and the gpt caption. keys[0] has a
    two-round conversation, keys[1] two records; one record is text only
    (LLaVA's instruction mixes have them)."""
    recs = []
    for n, key in enumerate(keys):
        turns = [{'from': 'human', 'value': '<image>\nDescribe this image '
                  'in detail.'},
                 {'from': 'gpt', 'value': f'Caption of {key}.'}]
        if n == 0:
            turns += [{'from': 'human', 'value': 'What else?'},
                      {'from': 'gpt', 'value': f'More about {key}.'}]
        recs.append({'id': key.rsplit('/', 1)[1].split('.')[0],
                     'image': f'train/{key}', 'conversations': turns})
    recs.insert(2, {'id': 'again', 'image': f'train/{keys[1]}',
                    'conversations': [
                        {'from': 'human', 'value': '<image>\nAnd now?'},
                        {'from': 'gpt', 'value': f'Second look at {keys[1]}.'}]})
    recs.append({'id': 'text-only', 'conversations': [
        {'from': 'human', 'value': 'Hello'}, {'from': 'gpt', 'value': 'Hi'}]})
    return recs


def test_llava_conversations_land_on_imagenet_keys(tmp_path, imagenet):
    root, keys = imagenet
    src = tmp_path / 'llava_detail.json'
    src.write_text(json.dumps(llava_records(keys), indent=4))
    out = tmp_path / 'desc.jsonl'
    proc = import_map(src, '--images', root, '--out', out)
    assert proc.returncode == 0, proc.stderr
    assert 'read as llava' in proc.stdout
    recs = read_descriptions(str(out))
    expected = {f'{keys[0]}#0', f'{keys[0]}#1', f'{keys[1]}#0',
                f'{keys[1]}#1'} | set(keys[2:])
    assert set(recs) == expected
    assert recs[f'{keys[0]}#1']['text'] == f'More about {keys[0]}.'
    assert recs[f'{keys[1]}#1']['text'] == f'Second look at {keys[1]}.'
    assert recs[keys[5]]['text'] == f'Caption of {keys[5]}.'
    assert f'{len(keys)} of {len(keys)} dataset samples now have' \
        in proc.stdout
    assert f'by path suffix {len(keys) + 1}' in proc.stdout
    # the same records as JSON Lines (ShareGPT4V-style exports)
    jl = tmp_path / 'llava.jsonl'
    jl.write_text(''.join(json.dumps(r) + '\n' for r in llava_records(keys)))
    proc = import_map(jl, '--images', root, '--out', tmp_path / 'd2.jsonl')
    assert proc.returncode == 0, proc.stderr
    assert set(read_descriptions(str(tmp_path / 'd2.jsonl'))) == expected


def coco_file(images, captions, annotations_first=False):
    """A COCO captions file as the COCO API writes it (captions_*.json):
    info, licenses, images with their metadata, annotations with ids."""
    imgs = [{'license': 3, 'file_name': name, 'coco_url':
             f'http://images.cocodataset.org/train2017/{name}',
             'height': 480, 'width': 640,
             'date_captured': '2013-11-14 16:28:13', 'flickr_url': '',
             'id': image_id} for image_id, name in images]
    anns = [{'image_id': image_id, 'id': 1000 + n, 'caption': text}
            for n, (image_id, text) in enumerate(captions)]
    doc = {'info': {'description': 'COCO 2017 Dataset', 'version': '1.0',
                    'year': 2017}, 'licenses': [{'url': '', 'id': 3,
                                                 'name': 'by'}]}
    if annotations_first:
        doc.update(annotations=anns, images=imgs)
    else:
        doc.update(images=imgs, annotations=anns)
    return json.dumps(doc)


def test_coco_captions_give_k_keys(tmp_path):
    """A flat train2017 folder; five captions per image give #0..#4 (in
    file order, interleaved as COCO's are), one caption a plain key, and an
    image the dataset lacks is one unmatched name, whatever its captions."""
    names = [f'{i:012d}.jpg' for i in (9, 25, 30)]
    write_images(tmp_path / 'train2017', names)
    images = [(9, names[0]), (25, names[1]), (30, names[2]),
              (42, '000000000042.jpg')]
    captions = [(i, f'Image {i}, caption {k}.') for k in range(5)
                for i in (9, 25)] + [(30, 'The only caption.'),
                                     (42, 'Not in the dataset.'),
                                     (42, 'Nor this one.')]
    for order in (False, True):
        src = tmp_path / f'captions_train2017_{order}.json'
        src.write_text(coco_file(images, captions, annotations_first=order))
        out = tmp_path / f'coco_{order}.jsonl'
        proc = import_map(src, '--images', tmp_path / 'train2017',
                          '--out', out)
        assert proc.returncode == 0, proc.stderr
        assert 'read as coco' in proc.stdout and 'unmatched 1' in proc.stdout
        recs = read_descriptions(str(out))
        assert set(recs) == {f'{n}#{k}' for n in names[:2]
                             for k in range(5)} | {names[2]}
        assert recs[f'{names[1]}#3']['text'] == 'Image 25, caption 3.'
        assert recs[names[2]]['text'] == 'The only caption.'
    # the same file with a root prefix in its names: by path suffix
    prefixed = [(i, f'coco/train2017/{n}') for i, n in images]
    src = tmp_path / 'prefixed.json'
    src.write_text(coco_file(prefixed, captions))
    proc = import_map(src, '--images', tmp_path / 'train2017', '--out',
                      tmp_path / 'p.jsonl', '--format', 'coco')
    assert proc.returncode == 0, proc.stderr
    assert 'by path suffix 11' in proc.stdout
    assert len(read_descriptions(str(tmp_path / 'p.jsonl'))) == 11
    assert 'unmatched 1' in proc.stdout


def test_unknown_format_names_what_it_found_and_the_formats(tmp_path,
                                                            imagenet):
    root, _ = imagenet
    cases = {
        'nested.json': (json.dumps({'a.JPEG': {'caption': 'x'}}),
                        "first entry 'a.JPEG' holds an object"),
        'list.json': (json.dumps([[1, 2]]), 'first item is a list'),
        'blob.bin': ('\0' * 64, 'binary data'),
        'words.txt': ('just some words\nand more\n', 'one column'),
    }
    for name, (text, found) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        proc = import_map(path, '--images', root, '--out',
                          tmp_path / 'x.jsonl')
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: ')
        assert str(path) in lines[0] and found in lines[0], lines[0]
        for fmt in ('json', 'jsonl', 'csv', 'llava', 'coco', '--format'):
            assert fmt in lines[0]
        assert not (tmp_path / 'x.jsonl').exists()


def test_format_forces_a_reading(tmp_path, imagenet):
    """--format jsonl reads conversation records as plain records and says
    what they lack; --format llava reads them."""
    root, keys = imagenet
    src = tmp_path / 'conv.txt'
    src.write_text(''.join(json.dumps(r) + '\n'
                           for r in llava_records(keys)[:2]))
    proc = import_map(src, '--images', root, '--out', tmp_path / 'a.jsonl',
                      '--format', 'jsonl')
    assert proc.returncode == 2
    assert 'conv.txt: line 1 needs an image field' in proc.stderr
    assert '--format llava' in proc.stderr
    proc = import_map(src, '--images', root, '--out', tmp_path / 'b.jsonl',
                      '--format', 'llava')
    assert proc.returncode == 0, proc.stderr
    assert set(read_descriptions(str(tmp_path / 'b.jsonl'))) == {
        f'{keys[0]}#0', f'{keys[0]}#1', keys[1]}
