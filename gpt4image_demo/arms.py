"""The demo's arms: what each one aligns the image features to.

Every aligned arm trains the same GPT4Image config (same head, loss, data,
seed and schedule); only the class targets in its embedding store differ, so
the comparison isolates what the LLM's text adds:

- ``baseline``: cross-entropy only;
- ``gpt4image``: the LLM's class-conditioned descriptions;
- ``classname``: a plain prompt per class, "a photo of a {name}.", same
  encoder: what the descriptions add beyond the label's name;
- ``random``: one fixed random unit vector per class: what the extra head
  and the contrastive term do without any text at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

BASELINE_CONFIG = 'configs/fashion_mnist/resnet18-w16_fmnist.py'
GPT4IMAGE_CONFIG = 'configs/fashion_mnist/resnet18-w16_fmnist_gpt4image.py'
CLASSNAME_PROMPT = 'a photo of a {name}.'  # CLIP's standard prompt
RANDOM_TARGETS_SEED = 0  # the same vectors for every seed and run


@dataclass(frozen=True)
class Arm:
    name: str
    title: str
    color: str  # in curves.png
    aligned: bool  # trains the alignment head (has a store)


ARMS = {a.name: a for a in (
    Arm('baseline', 'baseline', 'tab:gray', False),
    Arm('gpt4image', 'GPT4Image', 'tab:blue', True),
    Arm('classname', 'class name', 'tab:orange', True),
    Arm('random', 'random vectors', 'tab:green', True),
)}
DEFAULT_ARMS = ('baseline', 'gpt4image')


def parse_arms(text: Optional[str]) -> List[str]:
    """``'all'`` or a comma list -> arm names in canonical order."""
    if not text:
        return list(DEFAULT_ARMS)
    if text.strip() == 'all':
        return list(ARMS)
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise ValueError(f'unknown arm(s) {unknown}; choose from '
                         f'{", ".join(ARMS)} or all')
    if 'baseline' not in names:
        raise ValueError('--arms must include baseline: every comparison '
                         'is paired against it')
    return [n for n in ARMS if n in names]
