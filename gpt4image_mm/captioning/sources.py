"""What to caption: lazily built work items with the training keys.

A :class:`Plan` holds only the keys (a list of strings, which the dataset
wrapper needs anyway); images and prompts are materialised one item at a
time, so memory does not grow with the images' size or count.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from gpt4image_mm.captioning.prompts import Prompt, pick
from gpt4image_mm.utils.class_names import class_display_names
from gpt4image_mm.utils.errors import InputError
from gpt4image_mm.utils.image_files import list_images
from gpt4image_mm.utils.keys import (
    class_key,
    class_names,
    dataset_keys,
    dataset_source,
    description_key,
    file_key,
)


@dataclass
class Item:
    key: str
    prompt: Prompt
    class_name: Optional[str] = None
    source: Any = None  # image path, HxWxC array, or None (text-only)

    @property
    def prompt_id(self) -> str:
        """The id its answer is recorded with (names the class text said:
        :meth:`Prompt.id_for`)."""
        return self.prompt.id_for(self.class_name)


class Plan:
    """``len(keys)`` work items; ``item(j)`` builds the j-th on demand."""

    def __init__(self, keys: Sequence[str], item_fn: Callable[[int], Item],
                 text_only: bool = False, source: Optional[dict] = None):
        self.keys = keys
        self._item_fn = item_fn
        self.text_only = text_only
        self.source = source  # what the keys are relative to (provenance)

    def __len__(self) -> int:
        return len(self.keys)

    def item(self, j: int) -> Item:
        return self._item_fn(j)

    def prompt_id(self, j: int) -> str:
        """The prompt id the j-th item is asked with (no image is read)."""
        return self.item(j).prompt_id


class _Multi:
    """The keys of K descriptions per base key, without materialising them
    when K == 1."""

    def __init__(self, base: Sequence[str], k: int):
        self.base, self.k = base, k

    def __len__(self) -> int:
        return len(self.base) * self.k

    def __getitem__(self, j: int) -> str:
        if self.k == 1:
            return self.base[j]
        return description_key(self.base[j // self.k], j % self.k)


def _check_per_image(per_image: int) -> None:
    if per_image < 1:
        raise InputError('--per-image must be >= 1')


def plan_from_dataset(dataset: Any, prompts: Sequence[Prompt],
                      per_image: int = 1,
                      class_names_file: Optional[str] = None) -> Plan:
    """Items of an mmpretrain dataset with :func:`dataset_keys` keys; a
    class prompt names the class by its display name
    (:mod:`gpt4image_mm.utils.class_names`)."""
    _check_per_image(per_image)
    base = dataset_keys(dataset)
    names = None
    if any(p.needs_class for p in prompts):
        names = class_display_names(class_names(dataset), class_names_file)
    keys = _Multi(base, per_image)

    def source(i: int) -> Any:
        info = dataset.get_data_info(i)
        return info.get('img_path', info.get('img'))

    def item(j: int) -> Item:
        i, k = divmod(j, per_image)
        prompt = pick(prompts, k)
        cls = None
        if names is not None:
            label = dataset.get_data_info(i).get('gt_label')
            if label is None or int(label) < 0:
                raise InputError(f'{base[i]}: no label for a class prompt')
            cls = names[int(label)]
        return Item(keys[j], prompt, cls, source(i))

    return Plan(keys, item, source=dataset_source(dataset))


def plan_from_images(root: str, prompts: Sequence[Prompt],
                     per_image: int = 1,
                     class_names_file: Optional[str] = None) -> Plan:
    """Items of every image below ``root``; key = path relative to root; the
    class (for class prompts) = the image's top-level folder, named in the
    prompt by its display name."""
    _check_per_image(per_image)
    paths = list_images(root)
    base = [file_key(p, root) for p in paths]
    keys = _Multi(base, per_image)
    needs_class = any(p.needs_class for p in prompts)
    shown = _folder_display_names(base, class_names_file) if needs_class \
        else {}

    def item(j: int) -> Item:
        i, k = divmod(j, per_image)
        cls = None
        if needs_class:
            parts = base[i].split('/')
            if len(parts) < 2:
                raise InputError(f'{base[i]}: a class prompt needs images in '
                                 'class folders (DIR/<class>/<image>)')
            cls = shown[parts[0]]
        return Item(keys[j], pick(prompts, k), cls, paths[i])

    return Plan(keys, item, source={'root': os.path.realpath(root), 'split': None})


def _folder_display_names(keys: Sequence[str],
                          class_names_file: Optional[str]) -> dict:
    """``{top-level folder: display name}`` of an image folder's keys."""
    folders = sorted({k.split('/')[0] for k in keys if '/' in k})
    return dict(zip(folders, class_display_names(folders, class_names_file)))


def plan_per_class(names: Sequence[str], per_class: int,
                   prompts: Sequence[Prompt],
                   class_names_file: Optional[str] = None) -> Plan:
    """Class-level mode: K text-only items per class, keys
    ``class:<name>#k`` (the folder name); the prompt says the display
    name."""
    if per_class < 1:
        raise InputError('--per-class must be >= 1')
    names = list(names)
    if len(set(names)) != len(names):
        raise InputError('class names are not unique')
    shown = class_display_names(names, class_names_file)
    keys = [description_key(class_key(n), k) for n in names
            for k in range(per_class)]

    def item(j: int) -> Item:
        i, k = divmod(j, per_class)
        return Item(keys[j], pick(prompts, k), shown[i], None)

    return Plan(keys, item, text_only=True)


def read_class_names(path: str) -> List[str]:
    """One class name per non-empty line."""
    with open(path, encoding='utf-8') as f:
        names = [ln.strip() for ln in f if ln.strip()]
    if not names:
        raise InputError(f'{path}: no class names')
    return names
