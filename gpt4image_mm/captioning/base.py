"""What flows between the command line, the runner and the backends: the
backend interface that ``CAPTION_BACKENDS`` holds, the options of a run,
requests and answers, and the error classes that decide what happens to a
failed request."""
from __future__ import annotations

import abc
import argparse
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from gpt4image_mm.utils.errors import ToolError
from gpt4image_mm.utils.keys import read_key_file
from gpt4image_mm.utils.security import Scrubber  # noqa: F401  (re-exported)
from gpt4image_mm.utils.sharding import parse_shard

if TYPE_CHECKING:  # the runner imports this module
    from gpt4image_mm.captioning.runner import Summary
    from gpt4image_mm.captioning.sources import Plan

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


@dataclass
class CaptionOptions:
    """One caption run, built once from the command line (or from
    :func:`~gpt4image_mm.captioning.caption`'s keywords, which are the same
    options). The defaults live in one place, the parser
    (:func:`gpt4image_mm.cli.caption.configure_parser`); ``backend_args``
    holds the options the backends declared themselves
    (:meth:`CaptionBackend.add_arguments`)."""

    out: str
    backend: str
    model: str
    config: Optional[str]
    split: str
    images: Optional[str]
    classes: Any                    # a file, or (Python) a list of names
    per_class: Optional[int]
    per_image: int
    cfg_options: Optional[dict]
    prompt: str
    system: Optional[str]
    max_tokens: int
    temperature: Optional[float]
    max_side: int
    jpeg_quality: int
    detail: str
    shard: Optional[str]
    limit: Optional[int]
    max_cost: Optional[float]
    dry_run: bool
    price_table: Optional[str]
    rpm: float
    tpm: float
    abort_after_failures: int
    progress: Optional[bool]
    custom_imports: Optional[List[str]]
    backend_args: argparse.Namespace = field(
        default_factory=argparse.Namespace)
    handle_signals: bool = False    # the command line's SIGINT/SIGTERM stop
    class_names: Optional[str] = None  # --class-names FILE
    redo_keys: Optional[str] = None    # --redo-keys FILE

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> CaptionOptions:
        """Split parsed arguments into the common options and the
        backends' own."""
        rest = dict(vars(args))
        rest.pop('handler', None)
        common = {name: rest.pop(name) for name in cls.__dataclass_fields__
                  if name in rest}
        return cls(**common, backend_args=argparse.Namespace(**rest))

    def control(self, meter: Any) -> RunControl:
        """How the backend's run is driven (``meter``: the run's
        CostMeter)."""
        return RunControl(
            shard=parse_shard(self.shard), limit=self.limit,
            max_cost=self.max_cost, meter=meter, rpm=self.rpm, tpm=self.tpm,
            max_side=self.max_side, jpeg_quality=self.jpeg_quality,
            detail=self.detail,
            abort_after_failures=self.abort_after_failures,
            progress=self.progress, handle_signals=self.handle_signals,
            redo=read_key_file(self.redo_keys) if self.redo_keys else None)


@dataclass
class RunControl:
    """How a run is driven, whatever the backend: which keys, the spend
    cap, rate limits, image preparation and reporting. A backend takes what
    applies to it (the Batch API has no rate limits)."""

    shard: Tuple[int, int] = (0, 1)
    limit: Optional[int] = None
    max_cost: Optional[float] = None
    meter: Any = None                 # a CostMeter; the backend model's if None
    rpm: float = 0
    tpm: float = 0
    max_side: int = 512
    jpeg_quality: int = 85
    detail: str = 'auto'
    abort_after_failures: int = 50
    progress: Optional[bool] = None
    handle_signals: bool = False
    prep_threads: int = 4
    # --redo-keys: ask exactly these keys again, done or not; the answers
    # are marked as redos and supersede the earlier ones
    redo: Optional[frozenset] = None
    scrub: Optional[Scrubber] = None  # the backend's own if None


class CaptionBackend(abc.ABC):
    """What ``CAPTION_BACKENDS`` holds: one way to answer a plan's prompts.

    A backend declares its own command-line options
    (:meth:`add_arguments`), builds itself from the parsed options
    (:meth:`from_options`) and runs a plan into a descriptions file
    (:meth:`run`). Backends that answer request by request subclass
    :class:`Backend` and share the resumable runner; the Batch API
    overrides :meth:`run`. ``name`` is the registry name, written into each
    record; ``help`` is its line in ``--help``.
    """

    name = 'backend'
    help = ''
    model = ''
    batch_pricing = False  # priced at the Batch API's discount

    @classmethod
    def add_arguments(cls, group: Any) -> None:
        """Declare this backend's own options (``group.add_argument``, as
        argparse). An option another backend already declared is skipped,
        so backends may share one (both OpenAI backends take --base-url)."""
        return None

    @classmethod
    def resolve_model(cls, model: str) -> str:
        """``--model`` as this backend needs it (e.g. a bundled model's
        short name to its file); runs before anything else, dry runs too."""
        return model

    @classmethod
    def from_options(cls, options: CaptionOptions,
                     plan: Plan) -> CaptionBackend:
        """The backend for this run (``options.backend_args`` holds the
        options of :meth:`add_arguments`); may check the endpoint."""
        raise NotImplementedError(f'{cls.__name__} has no from_options')

    @abc.abstractmethod
    async def run(self, plan: Plan, out: str,
                  control: RunControl) -> Summary:
        """Caption the plan's missing keys into ``out`` (resumably) and
        return the run's :class:`~.runner.Summary`."""


class Backend(CaptionBackend):
    """A backend that answers request by request, driven by the shared
    runner (:mod:`.runner`).

    ``batch_size`` requests go into one :meth:`generate` call and up to
    ``concurrency`` calls are in flight at once (API: 1 x N; local GPU:
    B x 1). ``image_format`` says what :attr:`Request.image` must hold.
    """

    batch_size = 1
    concurrency = 1
    image_format = 'data_url'  # or 'pil'
    max_tokens = 300

    @abc.abstractmethod
    async def generate(self, requests: Sequence[Request]) -> List[Any]:
        """One :class:`Answer` or :class:`CaptionError` per request; raise
        :class:`FatalError` to stop the run."""
        ...

    async def run(self, plan: Plan, out: str,
                  control: RunControl) -> Summary:
        from gpt4image_mm.captioning.runner import run_requests
        return await run_requests(plan, self, out, control)

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
    bad = unencodable_at(text)
    if bad is not None:
        raise CaptionError('answer text is not valid Unicode (a lone '
                           f'surrogate at character {bad})')
    if _REFUSAL.match(text):
        raise CaptionError(f'refusal: {text[:200]}')
    return text


def unencodable_at(text: str) -> Optional[int]:
    """Where ``text`` stops being writable as UTF-8 (a lone surrogate, as a
    ``\\ud800`` JSON escape or a non-UTF-8 file name brings), or None."""
    try:
        text.encode('utf-8')
    except UnicodeEncodeError as e:
        return e.start
    return None


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot hold shown as escapes: a non-UTF-8
    file name (``bad\\xffname.png``) named so a person can find it."""
    if unencodable_at(text) is None:
        return text
    try:  # a file name's undecodable bytes: show the bytes
        raw = text.encode('utf-8', 'surrogateescape')
        return raw.decode('utf-8', 'backslashreplace')
    except UnicodeEncodeError:  # any other lone surrogate
        return text.encode('utf-8', 'backslashreplace').decode('utf-8')


def now_iso() -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
