"""What flows between the runner and the backends, and the error classes
that decide what happens to a failed request."""
from __future__ import annotations

import abc
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

# Answers that are refusals in disguise: recorded as failures, never embedded.
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,? (but )?i|i can(no|')t|i cannot|"
    r"i am unable|i'?m unable|i'?m not able|as an ai\b)", re.IGNORECASE)
_SECRET_LIKE = re.compile(r'\b(sk-[A-Za-z0-9_\-]{6,})')


class CaptionError(Exception):
    """One request failed; recorded as a failure record, retried on rerun."""


class FatalError(RuntimeError):
    """Every further request would fail too (bad key, unknown model...):
    stop the run instead of burning requests."""


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


class Scrubber:
    """Removes secrets from any text that leaves the process (records, logs,
    exceptions). Knows the configured key and anything shaped like one."""

    def __init__(self, secrets: Sequence[str] = ()):
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, text: Any) -> str:
        text = str(text)
        for s in self.secrets:
            text = text.replace(s, '***')
        return _SECRET_LIKE.sub('sk-***', text)


def api_key_from_env(env_name: str = 'OPENAI_API_KEY',
                     required: bool = True) -> Optional[str]:
    """The API key, read only from the environment (never from argv, which
    other users of the machine can read in ``ps``)."""
    key = os.environ.get(env_name)
    if not key and required:
        raise FatalError(f'no API key: set the environment variable '
                         f'{env_name} (or pick another with --api-key-env)')
    return key or None


def now_iso() -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
