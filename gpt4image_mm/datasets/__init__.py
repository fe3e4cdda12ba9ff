from gpt4image_mm.datasets.description_dataset import (
           DescriptionDataset,
           SampleLoadError,
)
from gpt4image_mm.datasets.from_config import build_split_dataset, dataset_cfg_of
from gpt4image_mm.datasets.store import (
           EmbeddingStore,
           StoreError,
           StoreWriter,
           write_store,
)

__all__ = ['DescriptionDataset', 'SampleLoadError', 'EmbeddingStore', 'StoreError',
           'StoreWriter', 'write_store', 'build_split_dataset',
           'dataset_cfg_of']
