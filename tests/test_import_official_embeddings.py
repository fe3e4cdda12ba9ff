"""The official GPT4Image embedding tensor -> a store keyed like our datasets,
and the import-map edge cases (BOM, duplicate JSON keys)."""
import json
import os

import numpy as np
import pytest
import torch
from helpers import load_tool

from gpt4image_mm.datasets.store import EmbeddingStore
from gpt4image_mm.embedding.importers import (
    OFFICIAL_ENCODER,
    ImportSourceError,
    import_map,
    read_map,
)

# 1000 images in 10 class folders, with names and sub-folders whose
# ImageFolder order differs from sorting the joined paths
CLASSES = ['n01', 'n01-b', 'n01_c', 'B', 'a', 'a-b', 'z', 'n02', 'n03', 'k']


def make_tree(root, per_class=100):
    from PIL import Image
    img = Image.new('RGB', (2, 2))
    for c in CLASSES:
        for i in range(per_class):
            sub = 'sub' if i % 10 == 0 else ('sub-x' if i % 10 == 1 else '')
            path = root / c / sub / f'{i}.JPEG'
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, format='JPEG')
    (root / 'a' / 'notes.txt').write_text('not an image')


def torchvision_order(root):
    """Keys in torchvision ImageFolder index order (the official row order,
    resnet/utils.py:169-182)."""
    from torchvision.datasets import ImageFolder
    ds = ImageFolder(str(root), loader=lambda p: p)
    return [os.path.relpath(p, root).replace(os.sep, '/') for p, _ in ds.samples]


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('imagenet') / 'train'
    make_tree(root)
    return root


def official_tensor(n, dim=1024, dtype=torch.float16, seed=0):
    """Like description2embedding.py's output, but rows deliberately NOT unit
    length, so the importer's normalisation is exercised."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, dim, generator=g) * 3).to(dtype)


@pytest.mark.parametrize('store_dtype,atol', [('float16', 2e-3),
                                              ('float32', 1e-6)])
def test_official_tensor_round_trips(tree, tmp_path, store_dtype, atol):
    emb = official_tensor(1000)
    src = tmp_path / 'imagenet_clip_text_emb.pth'
    torch.save(emb, src)
    out = tmp_path / 'store'
    assert load_tool().main(['import-gpt4image-embeddings', str(src),
                             '--images', str(tree), '--out', str(out),
                             '--store-dtype', store_dtype]) == 0
    order = torchvision_order(tree)
    assert len(order) == 1000 and sorted(order) != order
    store = EmbeddingStore(str(out))
    assert store.manifest['encoder'] == OFFICIAL_ENCODER
    assert store.manifest['dim'] == 1024 and store.manifest['normalized']
    assert store.manifest['dtype'] == store_dtype
    expected = torch.nn.functional.normalize(emb.float(), dim=1).numpy()
    row_of = {k: i for i, k in enumerate(store.keys())}
    for index, key in enumerate(order):  # every image's row
        np.testing.assert_allclose(store.row(row_of[key]), expected[index],
                                   atol=atol)


def test_store_feeds_the_dataset_wrapper(tree, tmp_path):
    """Keys are the dataset's own: DescriptionDataset over a folder dataset
    of the same tree hands each image its official row."""
    from gpt4image_mm.datasets import DescriptionDataset
    emb = official_tensor(1000, dim=8, dtype=torch.float32)
    torch.save(emb, tmp_path / 'e.pth')
    load_tool().main(['import-gpt4image-embeddings', str(tmp_path / 'e.pth'),
                      '--images', str(tree), '--out', str(tmp_path / 's'),
                      '--encoder-name', 'open_clip:ViT-L-14/openai',
                      '--store-dtype', 'float32'])
    assert EmbeddingStore(str(tmp_path / 's')).manifest['encoder'] == \
        'open_clip:ViT-L-14/openai'
    ds = DescriptionDataset(
        dataset=dict(type='mmpretrain.CustomDataset', data_root=str(tree),
                     pipeline=[dict(type='mmpretrain.LoadImageFromFile'),
                               dict(type='mmpretrain.PackInputs')]),
        store=str(tmp_path / 's'))
    order = torchvision_order(tree)
    expected = torch.nn.functional.normalize(emb, dim=1).numpy()
    for i in (0, 1, 437, 999):
        sample = ds[i]['data_samples']
        index = order.index(os.path.relpath(sample.img_path, tree)
                            .replace(os.sep, '/'))
        np.testing.assert_allclose(sample.text_embedding.numpy(),
                                   expected[index], atol=1e-6)


def test_count_mismatch_is_an_error_and_writes_nothing(tree, tmp_path):
    torch.save(official_tensor(999), tmp_path / 'e.pth')
    out = tmp_path / 'store'
    with pytest.raises(ImportSourceError, match='999 embeddings but .* has '
                       '1000 images'):
        load_tool().main(['import-gpt4image-embeddings',
                          str(tmp_path / 'e.pth'), '--images', str(tree),
                          '--out', str(out)])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('store')]


def test_bad_rows_and_wrong_files_are_named(tree, tmp_path):
    emb = official_tensor(1000)
    emb[5] = 0
    torch.save(emb, tmp_path / 'zero.pth')
    order = torchvision_order(tree)
    with pytest.raises(ImportSourceError, match=f'row 5 .*{order[5]}'):
        load_tool().main(['import-gpt4image-embeddings',
                          str(tmp_path / 'zero.pth'), '--images', str(tree),
                          '--out', str(tmp_path / 'o1')])
    torch.save(['a description'] * 1000, tmp_path / 'captions.pth')
    with pytest.raises(ImportSourceError, match='description list.*'
                       'import-gpt4image'):
        load_tool().main(['import-gpt4image-embeddings',
                          str(tmp_path / 'captions.pth'), '--images',
                          str(tree), '--out', str(tmp_path / 'o2')])
    torch.save(official_tensor(1000), tmp_path / 'emb.pth')
    with pytest.raises(ImportSourceError, match='embedding tensor.*'
                       'import-gpt4image-embeddings'):
        load_tool().main(['import-gpt4image', str(tmp_path / 'emb.pth'),
                          '--images', str(tree), '--out',
                          str(tmp_path / 'd.jsonl')])
    assert not any(p.name.startswith(('o1', 'o2', 'd.jsonl'))
                   for p in tmp_path.iterdir())


class NotATensor:  # a pickled object: arbitrary code under weights_only=False
    pass


def test_loads_with_weights_only(tree, tmp_path):
    torch.save({'x': NotATensor()}, tmp_path / 'evil.pth')
    with pytest.raises(ImportSourceError, match='evil.pth: not a torch-saved'):
        load_tool().main(['import-gpt4image-embeddings',
                          str(tmp_path / 'evil.pth'), '--images', str(tree),
                          '--out', str(tmp_path / 'o')])


def test_force_replaces_a_store_never_another_directory(tree, tmp_path):
    torch.save(official_tensor(1000, dim=4), tmp_path / 'e.pth')
    args = ['import-gpt4image-embeddings', str(tmp_path / 'e.pth'),
            '--images', str(tree), '--out']
    other = tmp_path / 'mine'
    other.mkdir()
    (other / 'thesis.tex').write_text('precious')
    with pytest.raises(ImportSourceError, match='not an embedding store'):
        load_tool().main(args + [str(other), '--force'])
    assert (other / 'thesis.tex').read_text() == 'precious'
    store = tmp_path / 'store'
    load_tool().main(args + [str(store)])
    with pytest.raises(ImportSourceError, match='exists'):
        load_tool().main(args + [str(store)])
    assert load_tool().main(args + [str(store), '--force']) == 0


def test_csv_with_bom_has_clean_keys(tmp_path):
    """Excel writes UTF-8 CSVs with a byte-order mark."""
    path = tmp_path / 'excel.csv'
    path.write_bytes('key,text\r\ncat/1.png,a cat\r\n'.encode('utf-8-sig'))
    assert read_map(str(path)) == [('cat/1.png', 'a cat')]
    headerless = tmp_path / 'nohead.csv'
    headerless.write_bytes('cat/1.png,a cat\n'.encode('utf-8-sig'))
    assert read_map(str(headerless)) == [('cat/1.png', 'a cat')]


def test_duplicate_json_keys_are_an_error(tmp_path):
    """json.load keeps the last of repeated keys silently: refuse them."""
    path = tmp_path / 'map.json'
    path.write_text('{"cat": "a cat", "dog": "a dog", "cat": "another"}')
    out = tmp_path / 'd.jsonl'
    with pytest.raises(ImportSourceError, match="map.json: key 'cat' appears "
                       'twice'):
        import_map(str(path), str(out))
    assert not out.exists()
    bom = tmp_path / 'bom.json'
    bom.write_bytes(json.dumps({'cat': 'a cat'}).encode('utf-8-sig'))
    assert read_map(str(bom)) == [('cat', 'a cat')]
