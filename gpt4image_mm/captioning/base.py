"""What flows between the runner and the backends, and the error classes
that decide what happens to a failed request."""
from __future__ import annotations

import abc
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..cli_errors import ToolError
from ..security import Scrubber  # noqa: F401  (re-exported)

# Answers that are refusals in disguise: recorded as failures, never embedded.
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,? (but )?i|i can(no|')t|i cannot|"
    r"i am unable|i'?m unable|i'?m not able|as an ai\b)", re.IGNORECASE)


class CaptionError(Exception):
    """One request failed; recorded as a failure record, retried on rerun."""


class FatalError(ToolError):
    """Every further request would fail too (bad key, unknown model...):
    stop the run instead of burning requests (exit code 2)."""


@dataclass
class Request:
    """One prompt to answer: ``image`` is a data URL (API backends), a PIL
    image (local backend) or ``None`` (class-level, text-only)."""

    key: str
    prompt_id: str
    prompt: str
    image: Any = None
    est_prompt_tokens: int = 0


@dataclass
class Answer:
    text: str
    model: str
    usage: Dict[str, int] = field(default_factory=dict)
    truncated: bool = False  # stopped at max_tokens (finish_reason 'length')
    # the request's own seconds when the backend knows better than the
    # runner (a row of a batched local generate finishes before the batch)
    latency_s: Optional[float] = None


class Backend(abc.ABC):
    """The interface the runner drives.

    ``batch_size`` requests go into one :meth:`generate` call and up to
    ``concurrency`` calls are in flight at once (API: 1 x N; local GPU:
    B x 1). ``image_format`` says what :attr:`Request.image` must hold.
    """

    name = 'backend'
    model = ''
    batch_size = 1
    concurrency = 1
    image_format = 'data_url'  # or 'pil'
    max_tokens = 300

    @abc.abstractmethod
    async def generate(self, requests: Sequence[Request]) -> List[Any]:
        """One :class:`Answer` or :class:`CaptionError` per request; raise
        :class:`FatalError` to stop the run."""
        ...

    async def aclose(self) -> None:
        return None


def check_answer(text: Optional[str], finish_reason: Optional[str] = None,
                 refusal: Optional[str] = None) -> str:
    """The cleaned text, or :class:`CaptionError` for empty/refused answers."""
    if refusal:
        raise CaptionError(f'refused: {refusal.strip()[:200]}')
    if finish_reason == 'content_filter':
        raise CaptionError('answer withheld by the content filter')
    text = (text or '').strip()
    if not text:
        raise CaptionError(f'empty answer (finish_reason={finish_reason})')
    if _REFUSAL.match(text):
        raise CaptionError(f'refusal: {text[:200]}')
    return text


def now_iso() -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
