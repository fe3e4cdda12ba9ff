"""Importers: the GPT4Image release (torchvision ImageFolder order) keyed to
the dataset's own keys, and CSV/JSON key -> text maps."""
import json
import random

import pytest
import torch
from helpers import load_tool

from gpt4image_mm.embedding.importers import (
    ImportSourceError,
    image_folder_keys,
    imagefolder_order,
    import_map,
)
from gpt4image_mm.utils.descriptions import read_descriptions
from gpt4image_mm.utils.keys import dataset_keys

# names where sorting joined paths differs from ImageFolder's order
FILES = ['a/2.png', 'a/10.png', 'a/sub/0.png', 'a/sub-x/0.png',
         'a-b/0.png', 'a_b/1.png', 'B/0.PNG', 'a/notes.txt']


def make_tree(root):
    from PIL import Image
    for rel in FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith('.txt'):
            path.write_text('not an image')
        else:
            Image.new('RGB', (4, 4)).save(path, format='PNG')


def torchvision_keys(root):
    from torchvision.datasets import ImageFolder
    ds = ImageFolder(str(root), loader=lambda p: p)
    return [p[len(str(root)) + 1:] for p, _ in ds.samples]


def test_imagefolder_order_matches_torchvision(tmp_path):
    make_tree(tmp_path / 'imgs')
    ref = torchvision_keys(tmp_path / 'imgs')
    assert len(ref) == 7
    assert image_folder_keys(str(tmp_path / 'imgs')) == ref
    shuffled = ref[:]
    random.Random(0).shuffle(shuffled)
    assert [shuffled[i] for i in imagefolder_order(shuffled)] == ref
    assert sorted(ref) != ref  # plain sorting would pair texts wrongly


def test_release_keyed_to_a_config_dataset(tmp_path):
    make_tree(tmp_path / 'imgs')
    ref = torchvision_keys(tmp_path / 'imgs')
    release = tmp_path / 'release.pt'
    torch.save([f'description of {k}' for k in ref], release)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        "default_scope = 'mmpretrain'\n"
        "train_dataloader = dict(batch_size=2, dataset=dict(\n"
        f"    type='CustomDataset', data_root={str(tmp_path / 'imgs')!r},\n"
        "    pipeline=[]))\n")
    tool = load_tool()
    out = tmp_path / 'desc.jsonl'
    assert tool.main(['import-gpt4image', str(release), '--config', str(cfg),
                      '--out', str(out)]) == 0
    recs = read_descriptions(str(out))
    assert len(recs) == 7
    for key, rec in recs.items():
        assert rec['text'] == f'description of {key}'
    from gpt4image_mm.datasets import build_split_dataset
    assert set(recs) == set(dataset_keys(build_split_dataset(str(cfg))))
    with pytest.raises(ImportSourceError, match='exists'):
        tool.main(['import-gpt4image', str(release), '--images',
                   str(tmp_path / 'imgs'), '--out', str(out)])
    torch.save([f'd{i}' for i in range(6)], release)
    with pytest.raises(ImportSourceError, match='6 descriptions but the '
                       'dataset has 7'):
        tool.main(['import-gpt4image', str(release), '--images',
                   str(tmp_path / 'imgs'), '--out', str(out), '--force'])
    torch.save({'not': 'a list'}, release)
    with pytest.raises(ImportSourceError, match='list of strings'):
        tool.main(['import-gpt4image', str(release), '--images',
                   str(tmp_path / 'imgs'), '--out', str(out), '--force'])


def test_import_maps(tmp_path):
    csv_file = tmp_path / 'm.csv'
    csv_file.write_text('key,text\nimg/1.jpg,"A cat, sleeping."\n'
                        'img/2.jpg,A dog.\n', encoding='utf-8')
    out = tmp_path / 'a.jsonl'
    assert import_map(str(csv_file), str(out)) == 2
    recs = read_descriptions(str(out))
    assert recs['img/1.jpg']['text'] == 'A cat, sleeping.'
    js = tmp_path / 'classes.json'
    js.write_text(json.dumps({'cat': ['A small feline.', 'A pet cat.'],
                              'dog': 'A loyal canine.'}))
    out2 = tmp_path / 'b.jsonl'
    load_tool().main(['import-map', str(js), '--out', str(out2),
                      '--class-level'])
    assert list(read_descriptions(str(out2))) == [
        'class:cat#0', 'class:cat#1', 'class:dog']
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'k': '   '}))
    with pytest.raises(ImportSourceError, match='empty'):
        import_map(str(bad), str(tmp_path / 'c.jsonl'))


def test_source_names_resolve_by_path_suffix_then_file_name():
    """The rules import-map puts a caption on an image by: the exact key,
    a key the name ends with (another root), a key ending with the name
    (fewer folders); folders that contradict match nothing; ties are
    ambiguous."""
    from gpt4image_mm.embedding.map_import import KeyIndex
    keys = ['cat/x.png', 'x.png', 'dog/y.png', 'a/cat/z.png', 'b/cat/z.png']
    index = KeyIndex(keys)

    def resolve(name):
        i, how, tied = index.resolve(name)
        return (keys[i] if i is not None else None), how, \
            sorted(keys[t] for t in tied)
    assert resolve('cat/x.png') == ('cat/x.png', 'path', [])
    assert resolve('./cat/x.png') == ('cat/x.png', 'path', [])
    assert resolve('train/cat/x.png') == ('cat/x.png', 'suffix', [])
    assert resolve('/data/other/x.png') == ('x.png', 'suffix', [])
    assert resolve('C:\\data\\dog\\y.png') == ('dog/y.png', 'suffix', [])
    assert resolve('y.png') == ('dog/y.png', 'name', [])
    assert resolve('cat/y.png') == (None, 'contradicts', [])
    assert resolve('../../cat/y.png') == (None, 'contradicts', [])
    assert resolve('c/cat/z.png') == (None, 'contradicts', [])
    assert resolve('cat/z.png') == (None, 'ambiguous',
                                    ['a/cat/z.png', 'b/cat/z.png'])
    assert resolve('x/a/cat/z.png') == ('a/cat/z.png', 'suffix', [])
    assert resolve('w.png') == (None, 'unmatched', [])
