"""DescriptionDataset: the right vector reaches every sample."""
import numpy as np
import pytest
import torch
from conftest import CLASSES, random_store
from mmengine.dataset import DefaultSampler, default_collate
from torch.utils.data import DataLoader

import gpt4image_mm.engine  # noqa: F401  (registers the plugin)
from gpt4image_mm.datasets import DescriptionDataset, StoreError
from gpt4image_mm.utils.keys import class_key, description_key


def folder_cfg(root, **kw):
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='PackInputs', meta_keys=('img_path', ))]
    return dict(type='mmpretrain.CustomDataset', data_root=str(root),
                pipeline=pipeline, **kw)


def _key_of(sample, root):
    return str(sample.img_path).split(str(root) + '/')[1]


def test_vectors_reach_samples_with_shuffle_and_workers(image_folder,
                                                        tmp_path):
    root, keys = image_folder
    vecs = random_store(tmp_path / 'store', keys[::-1])  # any row order
    ds = DescriptionDataset(folder_cfg(root), store=str(tmp_path / 'store'))
    loader = DataLoader(ds, batch_size=5, num_workers=2,
                        collate_fn=default_collate,
                        sampler=DefaultSampler(ds, shuffle=True, seed=1))
    seen = []
    for batch in loader:
        for sample in batch['data_samples']:
            key = _key_of(sample, root)
            np.testing.assert_array_equal(sample.text_embedding.numpy(),
                                          vecs[key])
            seen.append(key)
    assert sorted(seen) == keys


def test_missing_key_policies(image_folder, tmp_path):
    root, keys = image_folder
    random_store(tmp_path / 'store', keys[2:])
    store = str(tmp_path / 'store')
    with pytest.raises(StoreError, match=r"2 of 12 samples have no "
                       r"description.*'cat/0.png', 'cat/1.png'"):
        DescriptionDataset(folder_cfg(root), store=store)
    dropped = DescriptionDataset(folder_cfg(root), store=store,
                                 on_missing='drop')
    assert len(dropped) == 10
    assert {_key_of(dropped[i]['data_samples'], root)
            for i in range(10)} == set(keys[2:])
    zero = DescriptionDataset(folder_cfg(root), store=store,
                              on_missing='zero')
    assert len(zero) == 12
    first = zero[0]['data_samples']
    assert first.align_weight.item() == 0 and not first.text_embedding.any()
    assert zero[5]['data_samples'].align_weight.item() == 1


def test_per_class_and_multi_description(image_folder, tmp_path):
    root, _ = image_folder
    row_keys = [description_key(class_key(c), k) for c in CLASSES
                for k in range(3)]
    vecs = random_store(tmp_path / 'store', row_keys)
    ds = DescriptionDataset(folder_cfg(root), store=str(tmp_path / 'store'),
                            per_class=True)
    np.random.seed(0)
    for i in (0, 5, 11):
        sample = ds[i]['data_samples']
        name = CLASSES[int(sample.gt_label)]
        options = [vecs[description_key(class_key(name), k)]
                   for k in range(3)]
        picks = set()
        for _ in range(30):
            vec = ds[i]['data_samples'].text_embedding.numpy()
            match = [k for k, o in enumerate(options)
                     if np.array_equal(vec, o)]
            assert len(match) == 1, 'vector is not one of its class rows'
            picks.add(match[0])
        assert picks == {0, 1, 2}, 'each description gets sampled'


def test_online_text_mode(image_folder, tmp_path):
    from gpt4image_mm.utils.descriptions import DescriptionWriter
    root, keys = image_folder
    with DescriptionWriter(str(tmp_path / 'd.jsonl')) as w:
        for k in keys:
            w.write({'key': k, 'text': f'a photo of {k}'})
    ds = DescriptionDataset(folder_cfg(root),
                            descriptions=str(tmp_path / 'd.jsonl'))
    sample = ds[3]['data_samples']
    assert sample.text == f'a photo of {_key_of(sample, root)}'


def test_array_dataset_keys(tmp_path):
    """Fashion-MNIST style arrays are keyed <split>/<index>."""
    from gpt4image_mm.utils.keys import dataset_keys

    class Arrays(torch.utils.data.Dataset):
        split = 'train'
        metainfo = {'classes': ('a', 'b')}

        def full_init(self):
            pass

        def __len__(self):
            return 3

        def get_data_info(self, i):
            return {'img': np.zeros((2, 2), np.uint8), 'gt_label': i % 2}

    assert dataset_keys(Arrays()) == ['train/0', 'train/1', 'train/2']


def test_bad_store_is_named(image_folder, tmp_path):
    root, keys = image_folder
    random_store(tmp_path / 'store', keys)
    arr = np.load(tmp_path / 'store' / 'embeddings.npy', mmap_mode='r+')
    arr[4] = np.nan
    arr.flush()
    ds = DescriptionDataset(folder_cfg(root), store=str(tmp_path / 'store'))
    with pytest.raises(StoreError, match='row 4.*NaN'):
        [ds[i] for i in range(len(ds))]
    with pytest.raises(StoreError, match='1 rows are NaN'):
        DescriptionDataset(folder_cfg(root), store=str(tmp_path / 'store'),
                           verify_store=True)
