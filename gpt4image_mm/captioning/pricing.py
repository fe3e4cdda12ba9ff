"""Price table and token estimates: what a captioning run will cost.

The table is data, not code: edit ``DEFAULT_PRICES`` or pass a JSON file
(``--price-table``) with entries of the same shape, which override the
defaults by model name. Prices are USD per million tokens, as published by
the provider (checked 2025; they change -- check before a big run). Image
token rules follow the providers' published tokenisation rules; where a
provider does not publish one, the figure is an estimate.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from gpt4image_mm.utils.errors import InputError

PRICES_AS_OF = '2025-06'

# image_rule: 'tiles' (GPT-4o family: base + per-512px-tile tokens, after
# fitting 2048 and shrinking the short side to 768), 'patches' (GPT-4.1
# mini/nano, o4-mini: 32px patches capped at 1536, times a multiplier),
# 'grid28' (Qwen2-VL / Qwen2.5-VL: one token per 28x28 pixels), 'fixed'.
DEFAULT_PRICES: Dict[str, Dict[str, Any]] = {
    'gpt-4o': dict(input=2.50, output=10.00, batch_discount=0.5,
                   image_rule='tiles', base=85, per_tile=170),
    'gpt-4o-mini': dict(input=0.15, output=0.60, batch_discount=0.5,
                        image_rule='tiles', base=2833, per_tile=5667),
    'gpt-4.1': dict(input=2.00, output=8.00, batch_discount=0.5,
                    image_rule='tiles', base=85, per_tile=170),
    'gpt-4.1-mini': dict(input=0.40, output=1.60, batch_discount=0.5,
                         image_rule='patches', multiplier=1.62),
    'gpt-4.1-nano': dict(input=0.10, output=0.40, batch_discount=0.5,
                         image_rule='patches', multiplier=2.46),
    # self-hosted (vLLM / SGLang / transformers): tokens matter for
    # throughput, the money is GPU hours (see docs/captioning.md).
    'Qwen/Qwen2-VL-7B-Instruct': dict(input=0.0, output=0.0,
                                      image_rule='grid28'),
    'Qwen/Qwen2.5-VL-7B-Instruct': dict(input=0.0, output=0.0,
                                        image_rule='grid28'),
    'llava-hf/llava-1.5-7b-hf': dict(input=0.0, output=0.0,
                                     image_rule='fixed', tokens=576),
}
# Expected answer length: the paper's descriptions are ~100 words.
EXPECTED_OUTPUT_TOKENS = 150


def load_prices(path: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """The default table, overridden entry by entry by a JSON file."""
    table = {k: dict(v) for k, v in DEFAULT_PRICES.items()}
    if path:
        with open(path, encoding='utf-8') as f:
            try:
                extra = json.load(f)
            except json.JSONDecodeError as e:
                raise InputError(f'{path}: not JSON ({e.msg}, line '
                                 f'{e.lineno}) -- fix the price table') from None
        if not isinstance(extra, dict):
            raise InputError(f'{path}: a price table is a JSON object '
                             '{model: {input, output, ...}}')
        for name, entry in extra.items():
            table[name] = {**table.get(name, {}), **entry}
    return table


def price_entry(model: str, table: Dict[str, Dict[str, Any]]) -> Optional[
        Dict[str, Any]]:
    """The table entry of ``model``; dated snapshots fall back to the base
    name (``gpt-4o-2024-08-06`` -> ``gpt-4o``)."""
    if model in table:
        return table[model]
    best = None
    for name in table:
        if model.startswith(name + '-') and (best is None
                                             or len(name) > len(best)):
            best = name
    return table[best] if best else None


def image_tokens(size: Tuple[int, int], entry: Optional[Dict[str, Any]],
                 detail: str = 'auto') -> int:
    """Input tokens one image of ``size`` (after our downscaling) costs."""
    if entry is None:
        return 0
    w, h = size
    rule = entry.get('image_rule', 'fixed')
    if rule == 'tiles':
        if detail == 'low':
            return int(entry['base'])
        s = min(1.0, 2048 / max(w, h))
        w, h = w * s, h * s
        s = min(1.0, 768 / min(w, h))
        w, h = w * s, h * s
        tiles = math.ceil(w / 512) * math.ceil(h / 512)
        return int(entry['base'] + entry['per_tile'] * tiles)
    if rule == 'patches':
        patches = math.ceil(w / 32) * math.ceil(h / 32)
        if patches > 1536:
            s = math.sqrt(1536 * 32 * 32 / (w * h))
            patches = min(1536, math.floor(w * s / 32) * math.floor(h * s / 32))
        return int(math.ceil(patches * entry.get('multiplier', 1.0)))
    if rule == 'grid28':
        return max(4, round(w / 28)) * max(4, round(h / 28))
    return int(entry.get('tokens', 0))


# OpenAI's rule of thumb for English text: about 4 characters a token.
CHARS_PER_TOKEN = 4
# Chat-format overhead, from OpenAI's cookbook "How to count tokens with
# tiktoken": 3 tokens per message (role and separators), 3 priming the reply.
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3


def text_tokens(text: str) -> int:
    """A rough count of a text's tokens (no chat overhead)."""
    return len(text) // CHARS_PER_TOKEN


def messages_tokens(messages: List[Dict[str, Any]]) -> int:
    """Prompt tokens of a chat request's text: every message (system
    included) with its overhead. Images are priced by :func:`image_tokens`."""
    total = REPLY_PRIMING_TOKENS
    for msg in messages:
        content = msg.get('content') or ''
        if isinstance(content, list):
            content = ''.join(p.get('text', '') for p in content
                              if p.get('type') == 'text')
        total += TOKENS_PER_MESSAGE + text_tokens(content)
    return total


def request_text_tokens(prompt: str, system: Optional[str] = None) -> int:
    """Estimated prompt tokens of the text of one request, counted on the
    exact messages the API backends send (:func:`.openai_api.chat_messages`)."""
    from gpt4image_mm.captioning.openai_api import chat_messages
    return messages_tokens(chat_messages(prompt, None, system))


@dataclass
class CostMeter:
    """Running totals of tokens and money."""

    model: str
    table: Dict[str, Dict[str, Any]] = field(default_factory=load_prices)
    batch: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def entry(self) -> Optional[Dict[str, Any]]:
        return price_entry(self.model, self.table)

    @property
    def known(self) -> bool:
        return self.entry is not None

    def cost_of(self, prompt_tokens: float, completion_tokens: float) -> float:
        e = self.entry
        if e is None:
            return 0.0
        usd = (prompt_tokens * e.get('input', 0.0)
               + completion_tokens * e.get('output', 0.0)) / 1e6
        if self.batch:
            usd *= e.get('batch_discount', 1.0)
        return usd

    def add(self, usage: Optional[Dict[str, int]]) -> None:
        if usage:
            self.prompt_tokens += int(usage.get('prompt_tokens') or 0)
            self.completion_tokens += int(usage.get('completion_tokens') or 0)

    @property
    def cost(self) -> float:
        return self.cost_of(self.prompt_tokens, self.completion_tokens)
