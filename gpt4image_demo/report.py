"""What the demo's report says beyond the experiment's tables: the
Fashion-MNIST settings, and a description per class as the LLM wrote it."""
from __future__ import annotations

from typing import Any, List

from gpt4image_mm.experiment.arms import CLASSNAME_PROMPT
from gpt4image_mm.experiment.report import titles

ONE_SEED = ('One seed cannot tell an effect from seed noise: run '
            '`make demo SEEDS=5` (and `ARMS=all` for the controls) for '
            'paired 95% intervals.')


def report_head(s: Any, descriptions: str) -> List[str]:
    from gpt4image_mm.utils.config import load_config
    cfg = load_config(s.gpt4image_config)
    loss = cfg.model.align_loss
    ds = cfg.train_dataloader.dataset.dataset
    return [
        f'- data: Fashion-MNIST, first {s.num_train or ds.get("indices")} '
        f'training images, {demo_epochs(s)} epochs{stretched(s)}, '
        f'batch {cfg.train_dataloader.batch_size}; test top-1 on '
        f'{s.num_test or 10000} test images, validation curve on the first '
        f'{s.num_val or cfg.val_dataloader.dataset.get("indices", 10000)}',
        f'- model: `{s.baseline_config}`; aligned arms: '
        f'`{s.gpt4image_config}` (same recipe + alignment head)',
        f'- arms: {", ".join(titles()[a] for a in s.arms)}; `gpt4image` '
        f'aligns to {s.k} descriptions per class by SmolLM2-135M-Instruct '
        f'(local, ≤{s.max_tokens} tokens, class-conditioned prompts, '
        f'`{descriptions}`), `classname` to "{CLASSNAME_PROMPT}", `random` '
        'to a fixed random unit vector per class',
        '- text encoder: all-MiniLM-L6-v2 (384-d, frozen, offline)',
        f'- alignment: {loss.get("mode", "clip")} InfoNCE, tau '
        f'{loss.temperature}, weight {loss.loss_weight}, positives '
        f'{loss.get("positives", "instance")!r}',
        f'- seeds: 0..{s.seeds - 1}, the same for every arm',
        '- neck retrieval top-1: each test image, mapped through the '
        'trained alignment neck, retrieves the nearest class target of its '
        'arm (mean of the store rows of the class); no classifier head',
        '- runs: `tools/experiment.py`\'s machinery; each run\'s config is '
        '`runs/<arm>/seed<k>/config.py`',
    ]


def demo_epochs(s: Any) -> int:
    """The epochs the demo's runs train (its schedule options)."""
    from .pipeline import experiment_options
    for opt in reversed(experiment_options(s)):
        if opt.startswith('train_cfg.max_epochs='):
            return int(opt.split('=', 1)[1])
    from gpt4image_mm.utils.config import load_config
    return int(load_config(s.baseline_config).train_cfg.max_epochs)


def stretched(s: Any) -> str:
    from .pipeline import schedule_options
    if not schedule_options(s):
        return ''
    return (' (fewer images than the recipe\'s: epochs stretched to its '
            'optimizer steps, at most 10x; docs/experiment.md, "Fewer '
            'images")')


def report_tail(path: str, chars: int = 160) -> List[str]:
    """A description per class, as the LLM wrote it."""
    from gpt4image_mm.utils.descriptions import read_descriptions
    from gpt4image_mm.utils.keys import base_key
    seen, out = set(), ['A description per class, as the LLM wrote it:', '']
    for key, rec in read_descriptions(path).items():
        cls = base_key(key)
        if cls in seen:
            continue
        seen.add(cls)
        text = ' '.join(rec['text'].split())
        text = text if len(text) <= chars else text[:chars] + '…'
        out.append(f'- **{cls.split(":", 1)[-1]}**: {text}')
    return out + ['']
