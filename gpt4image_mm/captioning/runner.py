"""Resumable captioning: the orchestration every backend shares.

Why it is shaped like this: a run over ImageNet is 1.28 M requests, hours
long, and will be interrupted. So

* the output JSONL is the only state: a rerun reads it, skips keys that
  already succeeded and retries the rest (failed or never tried); a key
  whose answer said another class name than this run would is asked again
  (its prompt id names the class text), and a repair pass (``--redo-keys``)
  continues with the listed keys it has not yet answered
  (:meth:`KeyStates.redo_pass`): every pass is resumable by key;
* a record is flushed as soon as its answer arrives, and a key that has a
  success is never requested again in the run, so no key gets two
  successes (but the marked answers that supersede one);
* ``concurrency`` worker coroutines pull from one lazy iterator: there are
  never more than ``concurrency`` requests (or images) in memory, whatever
  the dataset size;
* ``--limit`` and ``--max-cost`` stop *scheduling*; requests in flight finish
  and are recorded, so a stop never wastes a paid answer.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

from gpt4image_mm.captioning.base import (
    Answer,
    Backend,
    CaptionBackend,
    CaptionError,
    FatalError,
    Request,
    RunControl,
    Scrubber,
    now_iso,
    printable,
    unencodable_at,
)
from gpt4image_mm.captioning.images import (
    ImageError,
    downscale,
    open_rgb,
    prepare_image,
)
from gpt4image_mm.captioning.pricing import CostMeter, image_tokens, request_text_tokens
from gpt4image_mm.captioning.prompts import NAME_TAG, names_changed
from gpt4image_mm.captioning.sources import Item, Plan
from gpt4image_mm.utils.descriptions import (
    DescriptionFileError,
    DescriptionWriter,
    KeyStates,
    clip_text,
    record_source,
)
from gpt4image_mm.utils.files import OutputLock, lock_path
from gpt4image_mm.utils.sharding import in_shard

logger = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a run did; ``ok`` is False when failures are left in the file."""

    out: str
    planned: int = 0          # keys of this shard
    already_done: int = 0     # skipped: succeeded in an earlier run
    attempted: int = 0
    succeeded: int = 0
    truncated: int = 0        # answers that stopped at --max-tokens
    failed: int = 0
    failed_left: int = 0      # keys of this shard whose latest record failed
    not_attempted: int = 0    # left for a later run (--limit, --max-cost, stop)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    stopped: Optional[str] = None  # why scheduling stopped early, if it did
    fatal: Optional[str] = None
    signal: Optional[int] = None   # the signal that stopped the run, if any
    names_changed: int = 0    # done keys asked again: their class name changed

    @property
    def ok(self) -> bool:
        """Done: no fatal error, no failure left, not stopped by a signal
        (a stop by --limit / --max-cost is done: it was asked for)."""
        return (self.fatal is None and self.failed_left == 0
                and self.signal is None)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d['ok'] = self.ok
        return d

    def format(self) -> str:
        rate = format_rate(self.attempted, self.elapsed_s)
        lines = [
            f'captions -> {self.out}',
            f'  keys in shard {self.planned}, already done '
            f'{self.already_done}, attempted {self.attempted} '
            f'({rate}), succeeded {self.succeeded}, failed '
            f'{self.failed}',
            f'  truncated at --max-tokens: {self.truncated} of '
            f'{self.succeeded} answers',
            f'  left: failed {self.failed_left}, not attempted '
            f'{self.not_attempted}',
            f'  tokens: prompt {self.prompt_tokens}, completion '
            f'{self.completion_tokens}, cost ${self.cost_usd:.4f}',
        ]
        if self.names_changed:
            lines.append(f'  asked again for a changed class name: '
                         f'{self.names_changed} keys')
        if self.stopped:
            lines.append(f'  stopped early: {self.stopped}')
        if self.fatal:
            lines.append(f'  FATAL: {self.fatal}')
        return '\n'.join(lines)


class TokenBucket:
    """Async token bucket: ``per_minute`` units, refilled continuously.

    Used twice: requests/min and tokens/min. Bursts are capped at
    ``burst_s`` seconds' worth (a full minute's burst trips providers'
    short-window limits). A take waits until the level covers the request
    (or the bucket is full) and may drive it negative, so big requests are
    paid in full and the long-run rate stays exact.
    """

    def __init__(self, per_minute: float, burst_s: float = 2.0):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        t = time.monotonic()
        self.level = min(self.capacity, self.level + (t - self.stamp) * self.rate)
        self.stamp = t

    async def take(self, n: float) -> None:
        need = min(float(n), self.capacity)
        async with self._lock:  # FIFO: no starvation of big requests
            while True:
                self._refill()
                if self.level >= need:
                    self.level -= n
                    return
                await asyncio.sleep((need - self.level) / self.rate)

    def adjust(self, n: float) -> None:
        """Debit (n > 0) or credit (n < 0) after the fact."""
        self._refill()
        self.level = min(self.capacity, self.level - n)


def success_record(req: Request, ans: Answer, backend: str,
                   latency: Optional[float]) -> Dict[str, Any]:
    """The record of an answer; ``latency`` is that request's own time
    (None where unknown, e.g. the Batch API). A text over the file's limit
    is cut to it and marked ``truncated``, as a ``--max-tokens`` stop is."""
    text, cut = clip_text(ans.text)
    rec = {'key': req.key, 'text': text, 'model': ans.model,
           'prompt_id': req.prompt_id,
           'usage': {'prompt_tokens': int(ans.usage.get('prompt_tokens', 0)),
                     'completion_tokens': int(
                         ans.usage.get('completion_tokens', 0))},
           'time': now_iso(), 'backend': backend}
    if latency is not None:
        rec['latency_s'] = round(latency, 3)
    if ans.truncated or cut:
        rec['truncated'] = True
    return rec


def failure_record(key: str, error: str, model: str = '',
                   prompt_id: str = '', backend: str = '') -> Dict[str, Any]:
    """A failure; key and message printable whatever bytes a file name or
    a server brought (a record UTF-8 cannot hold would end the run)."""
    return {'key': shown_key(key), 'error': printable(error), 'model': model,
            'prompt_id': prompt_id, 'time': now_iso(), 'backend': backend}


def shown_key(key: str) -> str:
    """A key as a failure record can hold it: printable, one line."""
    return printable(key).replace('\n', '\\n').replace('\r', '\\r')


def build_request(item: Item, image_format: str, max_side: int,
                  quality: int, price_entry: Optional[dict],
                  detail: str = 'auto',
                  system: Optional[str] = None) -> Request:
    """Render the prompt and load the image (in a worker thread); the token
    estimate counts every message sent, the system prompt included."""
    prompt = item.prompt.render(item.class_name)
    req = Request(item.key, item.prompt_id, prompt)
    est = request_text_tokens(prompt, system)
    if item.source is not None:
        if image_format == 'pil':
            req.image = downscale(open_rgb(item.source, item.key), max_side)
            size = req.image.size
        else:
            req.image, size = prepare_image(item.source, max_side, quality,
                                            name=item.key)
        est += image_tokens(size, price_entry, detail)
    req.est_prompt_tokens = est
    return req


@dataclass
class Todo:
    """What a run asks: plan indices, the size of the shard (with
    ``--redo-keys``: of the list's keys in it), the keys whose answers
    supersede their current text (a repair pass's, or those answered for
    other class names), and the repair pass's name."""

    indices: array
    planned: int
    supersede: Set[str]
    redo_pass: Optional[str] = None
    names_changed: int = 0


def todo_indices(plan: Plan, state: KeyStates, shard: Tuple[int, int],
                 redo: Optional[frozenset] = None) -> Todo:
    """This shard's keys not yet done, and the done ones whose answer was
    given for another class name (:func:`names_changed`); with ``redo``,
    the shard's keys of that list the repair pass has not yet answered
    (:meth:`KeyStates.redo_pass`)."""
    if redo is not None:
        return _redo_todo(plan, state, shard, redo)
    todo, planned = array('q'), 0
    seen: Set[str] = set()
    stale: Set[str] = set()
    for j in range(len(plan)):
        key = plan.keys[j]
        if not in_shard(key, shard):
            continue
        planned += 1
        if key in seen:
            continue
        recorded = state.done.get(key)
        if recorded is not None:
            if NAME_TAG not in recorded or not _renamed(plan, j, recorded):
                continue
            stale.add(key)
        seen.add(key)
        todo.append(j)
    return Todo(todo, planned, stale, names_changed=len(stale))


def _renamed(plan: Plan, j: int, recorded: str) -> bool:
    """Whether the answer recorded for item ``j`` said another class name
    than this run would (an item that cannot say which is left alone: it
    fails when it is asked)."""
    try:
        return names_changed(recorded, plan.prompt_id(j))
    except Exception:  # noqa: BLE001 (a sample's own fault, reported when asked)
        return False


def _redo_todo(plan: Plan, state: KeyStates, shard: Tuple[int, int],
               redo: frozenset) -> Todo:
    keys = {k for k in redo if in_shard(k, shard)}
    name, answered = state.redo_pass(keys, redo)
    todo = array('q')
    seen: Set[str] = set()
    for j in range(len(plan)):
        key = plan.keys[j]
        if key in keys and key not in answered and key not in seen:
            seen.add(key)
            todo.append(j)
    return Todo(todo, len(keys), keys - answered, name)


def format_rate(n: float, seconds: float, unit: str = 'req') -> str:
    """A rate that stays readable when slow: ``2.5 req/s`` or ``40.0 s/req``
    (a local LLM on a CPU does far less than 0.1/s)."""
    if n <= 0 or seconds <= 0:
        return f'- {unit}/s'
    rate = n / seconds
    return f'{rate:.1f} {unit}/s' if rate >= 1 else f'{seconds / n:.1f} s/{unit}'


# Seconds requests in flight get to finish after SIGINT/SIGTERM: a stop
# must come in seconds (a dripping server would hold a request for the
# whole --timeout), yet an answer about to arrive is still kept.
SIGNAL_GRACE_S = 3.0

# Seconds between progress lines when stderr is not a terminal: at least
# every 10 s or every request, whichever is later (a log file stays short
# and still shows a stalled run).
PROGRESS_LOG_INTERVAL_S = 10.0


class Progress:
    """Per-request progress for every caption backend.

    On a terminal: a tqdm bar. Otherwise (a log file, CI, a pipe): a line
    on the first answer, then at most every ``interval`` seconds, and at
    the end, so a long local-model run is never silent.
    """

    def __init__(self, total: int, enabled: Optional[bool], meter: CostMeter,
                 interval: float = PROGRESS_LOG_INTERVAL_S,
                 stream: Any = None, label: str = 'caption'):
        from tqdm import tqdm
        self.stream = stream or sys.stderr
        self.total, self.meter, self.interval = total, meter, interval
        self.label = label
        self.done = self.failed = self.truncated = 0
        self.extra: Dict[str, Any] = {}
        self.t0 = time.monotonic()
        self._last_line: Optional[float] = None
        self._unreported = False
        self._last_postfix = 0.0
        self.holding = False  # inside a batch's answers: line after it
        self._reported_any = False
        isatty = getattr(self.stream, 'isatty', lambda: False)()
        self.lines = enabled is not False and not isatty
        self.bar = tqdm(total=total, unit='req', dynamic_ncols=True,
                        disable=enabled is False or not isatty,
                        file=self.stream, smoothing=0.05)
        if self.lines and total:
            self._print(f'{label}: {total} requests to do')

    def update(self, ok: bool, truncated: bool = False) -> None:
        self.done += 1
        self.failed += not ok
        self.truncated += bool(truncated)
        self.bar.update(1)
        self._unreported = True
        if not self.holding:
            self.report()
        t = time.monotonic()
        if not self.bar.disable and t - self._last_postfix > 0.5:
            self._last_postfix = t
            m = self.meter
            self.bar.set_postfix(
                failed=self.failed, truncated=self.truncated,
                tok=f'{m.prompt_tokens}+{m.completion_tokens}',
                usd=f'{m.cost:.4f}', **self.extra, refresh=False)

    def report(self) -> None:
        """A progress line if one is due (the first answers, then every
        ``interval``). Called after a whole batch is recorded: a batch's
        answers arrive together, so a line after its first row would
        charge the whole batch's time to one request (rate and ETA x B)."""
        t = time.monotonic()
        if self.lines and self._unreported and (
                not self._reported_any or self._last_line is None
                or t - self._last_line >= self.interval):
            self._reported_any = True
            self._print(self.line())

    def set_postfix(self, **fields: Any) -> None:
        """Extra fields (e.g. batches in flight) for the bar and lines."""
        self.extra.update(fields)

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        left = max(0, self.total - self.done)
        eta = (f'{left * elapsed / self.done:.0f}s' if self.done and left
               else '-')
        m = self.meter
        extra = ''.join(f', {k} {v}' for k, v in self.extra.items())
        return (f'{self.label}: {self.done}/{self.total} done, '
                f'{self.failed} failed, {self.truncated} truncated, '
                f'{format_rate(self.done, elapsed)}, ETA {eta}, tokens '
                f'{m.prompt_tokens}+{m.completion_tokens}, '
                f'${m.cost:.4f}{extra}')

    def _print(self, text: str) -> None:
        self._last_line = time.monotonic()
        self._unreported = False
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
        if self.lines and self._unreported:
            self._print(self.line())


def announce(plan_todo: Todo) -> None:
    """Say what a run asks beyond the missing keys: answers given for other
    class names, a repair pass continued."""
    if plan_todo.names_changed:
        logger.warning('caption: %d answer(s) were given for other class '
                       'names (their prompt id names another class text); '
                       'asking them again, the new answers supersede the '
                       'old ones', plan_todo.names_changed)
    if plan_todo.redo_pass:
        done = plan_todo.planned - len(plan_todo.indices)
        logger.info('caption: repair pass %s: %d of %d key(s) already '
                    'redone, %d to ask', plan_todo.redo_pass, done,
                    plan_todo.planned, len(plan_todo.indices))


async def caption_async(plan: Plan, backend: CaptionBackend, out: str,
                        **control: Any) -> Summary:
    """Caption the plan's missing keys into ``out`` with any backend (see
    the module doc); the keywords are :class:`RunControl`'s fields."""
    return await backend.run(plan, out, RunControl(**control))


def caption_lock(out: str) -> OutputLock:
    """The lock every caption backend holds on its ``--out``."""
    return OutputLock(lock_path(out), f'--out {out}', 'caption.py')


async def run_requests(plan: Plan, backend: Backend, out: str,
                       control: RunControl) -> Summary:
    """The run of every request-by-request backend (:meth:`Backend.run`).

    Holds ``out``'s lock for the whole run (:class:`LockHeld` if another run
    has it): two runs would pay twice and write two successes per key.
    """
    with caption_lock(out):
        record_source(out, plan.source)
        return await _RequestRun(plan, backend, out, control).run()


class _RequestRun:
    """One run of a request-by-request backend: its state, and the steps
    its ``concurrency`` worker coroutines take."""

    def __init__(self, plan: Plan, backend: Backend, out: str,
                 control: RunControl):
        self.t0 = time.monotonic()
        self.plan, self.backend, self.control = plan, backend, control
        self.scrub = (control.scrub or getattr(backend, 'scrub', None)
                      or Scrubber())
        self.meter = control.meter or CostMeter(backend.model)
        self.state = KeyStates.load(out)
        plan_todo = todo_indices(plan, self.state, control.shard,
                                 control.redo)
        todo, self.planned = plan_todo.indices, plan_todo.planned
        # keys whose answer supersedes their text, not yet answered
        self.supersede = set(plan_todo.supersede)
        self.supersede_failed: Set[str] = set()
        self.redo_pass = plan_todo.redo_pass
        self.summary = Summary(out=out, planned=self.planned,
                               already_done=self.planned - len(todo),
                               names_changed=plan_todo.names_changed)
        announce(plan_todo)
        if control.limit is not None:
            todo = todo[:max(0, control.limit)]
        self.n_todo = len(todo)
        self.source = iter(todo)
        self.rpm = TokenBucket(control.rpm) if control.rpm else None
        self.tpm = TokenBucket(control.tpm) if control.tpm else None
        self.reserved = 0.0  # worst-case cost of requests in flight
        self.consecutive = 0
        self.stop: Optional[str] = None
        self.bar = Progress(len(todo), control.progress, self.meter)
        self.writer = DescriptionWriter(out)
        self.system = getattr(backend, 'system', None)  # in token estimates
        self.tasks: List[asyncio.Future] = []

    def record_failure(self, key: str, error: str,
                       prompt_id: str = '') -> None:
        """A failure record; too many in a row stop the run."""
        error = self.scrub(error)
        self.writer.write(failure_record(key, error, self.backend.model,
                                         prompt_id, self.backend.name))
        self.state.fail(key, error)
        if key in self.supersede:  # its old text stands: not done yet
            self.supersede_failed.add(key)
        self.summary.failed += 1
        self.bar.update(False)
        self.consecutive += 1
        limit = self.control.abort_after_failures
        if limit and self.consecutive >= limit:
            self.stop = self.stop or (f'{self.consecutive} failures in a row '
                                      f'(last: {error}); check the endpoint')

    def record_answer(self, req: Request, ans: Answer,
                      latency: float) -> None:
        """A success record, unless the key already has one (and is not
        to be superseded)."""
        redo = req.key in self.supersede
        if req.key in self.state.done and not redo:  # never a 2nd success
            return
        own = latency if ans.latency_s is None else ans.latency_s
        rec = success_record(req, ans, self.backend.name, own)
        if redo:  # supersedes the key's earlier answer (descriptions.py)
            rec['redo'] = True
            if self.redo_pass:
                rec['redo_pass'] = self.redo_pass
        try:
            self.writer.write(rec)
        except DescriptionFileError as e:  # a record no reader would take
            self.record_failure(req.key, f'unusable answer: {e}',
                                req.prompt_id)
            return
        if redo:
            self.supersede.discard(req.key)
            self.supersede_failed.discard(req.key)
        self.state.succeed(req.key, req.prompt_id,
                           self.redo_pass if redo else None)
        self.summary.succeeded += 1
        self.summary.truncated += ans.truncated
        self.consecutive = 0
        self.bar.update(True, ans.truncated)

    def take(self, n: int) -> List[int]:
        """Up to ``n`` plan indices from the shared lazy iterator."""
        batch: List[int] = []
        while len(batch) < n and self.stop is None:
            j = next(self.source, None)
            if j is None:
                break
            batch.append(j)
        return batch

    def prepare(self, batch: List[int]) -> List[Any]:
        """Requests (in a worker thread); ``(key, error)`` for a sample
        that cannot be sent."""
        c, prepared = self.control, []
        for j in batch:
            key = self.plan.keys[j]
            if unencodable_at(key) is not None or '\n' in key \
                    or '\r' in key:  # never a success record's key
                prepared.append((key, f'{shown_key(key)}: the file name '
                                 'is not UTF-8 or holds a line break; '
                                 'rename the file'))
                continue
            try:
                prepared.append(build_request(
                    self.plan.item(j), self.backend.image_format, c.max_side,
                    c.jpeg_quality, self.meter.entry, c.detail, self.system))
            except (ImageError, ValueError) as e:  # messages name the key
                prepared.append((key, str(e)))
            except Exception as e:  # noqa: BLE001  (one sample never ends a run)
                prepared.append((key, f'{key}: {type(e).__name__}: {e}'))
        return prepared

    def sendable(self, prepared: List[Any]) -> List[Request]:
        """The requests; the samples that failed to load become failures."""
        reqs: List[Request] = []
        for p in prepared:
            if isinstance(p, Request):
                reqs.append(p)
            else:
                self.summary.attempted += 1
                self.record_failure(p[0], p[1])
        return reqs

    async def send(self, reqs: List[Request]) -> Optional[Tuple[List[Any],
                                                                float]]:
        """Answers and seconds, within the spend cap and rate limits;
        ``None`` when the run must stop."""
        be, meter, max_cost = self.backend, self.meter, self.control.max_cost
        worst = sum(meter.cost_of(r.est_prompt_tokens, be.max_tokens)
                    for r in reqs)
        if max_cost is not None and (meter.cost + self.reserved + worst
                                     > max_cost):
            self.stop = self.stop or (f'--max-cost {max_cost}: spent '
                                      f'${meter.cost:.4f}')
            return None
        self.reserved += worst
        try:
            if self.rpm:
                await self.rpm.take(len(reqs))
            if self.tpm:
                await self.tpm.take(self.est_tokens(reqs))
            t = time.monotonic()
            self.summary.attempted += len(reqs)
            try:
                results = await be.generate(reqs)
            except FatalError as e:
                self.stop = 'fatal error'
                self.summary.fatal = self.summary.fatal or self.scrub(e)
                self.summary.attempted -= len(reqs)
                return None
            except asyncio.CancelledError:  # a stop: left for a rerun
                self.summary.attempted -= len(reqs)
                raise
            except Exception as e:  # noqa: BLE001 (a server's fault is one key's)
                err = CaptionError(f'{type(e).__name__}: {e}')
                results = [err] * len(reqs)
            return results, time.monotonic() - t
        finally:
            self.reserved -= worst

    def est_tokens(self, reqs: List[Request]) -> int:
        return sum(r.est_prompt_tokens + self.backend.max_tokens
                   for r in reqs)

    def record(self, reqs: List[Request], results: List[Any],
               latency: float) -> None:
        """Write each result; correct the tokens/min bucket by the usage."""
        used = 0
        self.bar.holding = True
        for req, res in zip(reqs, results):
            if isinstance(res, Answer):
                self.meter.add(res.usage)
                used += sum(res.usage.get(k, 0) for k in
                            ('prompt_tokens', 'completion_tokens'))
                self.record_answer(req, res, latency)
            else:
                self.record_failure(req.key, str(res), req.prompt_id)
        self.bar.holding = False
        self.bar.report()
        if self.tpm and used:
            self.tpm.adjust(used - self.est_tokens(reqs))

    async def worker(self, pool: ThreadPoolExecutor) -> None:
        """Take, prepare, send and record batches until none is left."""
        loop = asyncio.get_running_loop()
        while self.stop is None:
            batch = self.take(self.backend.batch_size)
            if not batch:
                return
            reqs = self.sendable(await loop.run_in_executor(
                pool, self.prepare, batch))
            if not reqs:
                continue
            sent = await self.send(reqs)
            if sent is None:
                return
            self.record(reqs, *sent)

    def on_signal(self, signame: str) -> None:
        """First signal: stop scheduling, give requests in flight
        :data:`SIGNAL_GRACE_S` to finish, then cancel them (left for a
        rerun); a second signal cancels them now."""
        first = self.summary.signal is None
        self.summary.signal = self.summary.signal or int(
            signal.Signals[signame])
        self.stop = self.stop or f'{signame}: finishing requests in flight'
        if first:
            # the newline ends a progress bar's line on a terminal
            logger.warning('\n%s: stopping; requests in flight get %.0f s '
                           'to finish (again to abort them now)', signame,
                           SIGNAL_GRACE_S)
            asyncio.get_running_loop().call_later(SIGNAL_GRACE_S,
                                                  self.cancel_all)
        else:
            self.cancel_all()

    def cancel_all(self) -> None:
        for t in self.tasks:
            t.cancel()

    def install_signals(self) -> List[signal.Signals]:
        """SIGINT/SIGTERM handlers, where the loop can have them."""
        loop, installed = asyncio.get_running_loop(), []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.on_signal, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass  # no signal handlers here (Windows, non-main thread)
        return installed

    async def run(self) -> Summary:
        """Run the workers; close everything whatever happens."""
        signals = self.install_signals() if self.control.handle_signals \
            else []
        pool = ThreadPoolExecutor(max(1, self.control.prep_threads))
        self.tasks = [asyncio.ensure_future(self.worker(pool))
                      for _ in range(max(1, self.backend.concurrency))]
        try:
            await asyncio.gather(*self.tasks, return_exceptions=False)
        except asyncio.CancelledError:
            self.stop = self.stop or 'aborted'
        finally:
            for sig in signals:
                asyncio.get_running_loop().remove_signal_handler(sig)
            for t in self.tasks:
                t.cancel()
            self.writer.close()
            self.bar.close()
            # a stop does not wait for an image read still running
            pool.shutdown(wait=self.summary.signal is None,
                          cancel_futures=True)
            await self.backend.aclose()
        return self.finish()

    def finish(self) -> Summary:
        """Why scheduling stopped, and the end-of-run totals."""
        s, limit = self.summary, self.control.limit
        if self.stop and self.stop != 'fatal error':
            s.stopped = self.stop
        elif limit is not None and self.n_todo < self.planned - s.already_done:
            s.stopped = f'--limit {limit}'
        s.failed_left = len(self.supersede_failed)
        return finish_summary(s, self.planned, self.state,
                              self.control.shard, self.meter, self.t0)


def finish_summary(summary: Summary, planned: int, state: KeyStates,
                   shard: Tuple[int, int], meter: CostMeter,
                   t0: float) -> Summary:
    """Fill in the end-of-run totals (shared by every backend's run)."""
    summary.not_attempted = max(0, planned - summary.already_done
                                - summary.succeeded - summary.failed)
    # failures of keys that still have an earlier text (a repair pass's)
    # are counted by the run; those of keys without one here
    summary.failed_left += _failed_in_shard(state, shard)
    summary.prompt_tokens = meter.prompt_tokens
    summary.completion_tokens = meter.completion_tokens
    summary.cost_usd = round(meter.cost, 6)
    summary.elapsed_s = round(time.monotonic() - t0, 3)
    return summary


def _failed_in_shard(state: KeyStates, shard: Tuple[int, int]) -> int:
    return sum(1 for k in state.failed if in_shard(k, shard))


def caption_plan(plan: Plan, backend: Backend, out: str,
                 **kwargs: Any) -> Summary:
    """Synchronous :func:`caption_async`."""
    return asyncio.run(caption_async(plan, backend, out, **kwargs))


def expected_output_tokens(max_tokens: int) -> int:
    from gpt4image_mm.captioning.pricing import EXPECTED_OUTPUT_TOKENS
    return min(max_tokens, EXPECTED_OUTPUT_TOKENS)


def estimate(plan: Plan, meter: CostMeter, *, shard: Tuple[int, int] = (0, 1),
             out: Optional[str] = None, max_side: int = 512,
             detail: str = 'auto', max_tokens: int = 300,
             limit: Optional[int] = None, sample: int = 200,
             system: Optional[str] = None,
             redo: Optional[frozenset] = None) -> Dict[str, Any]:
    """--dry-run: requests, estimated tokens and cost, without any request.

    Image sizes are read from the headers of up to ``sample`` images spread
    over the plan and extrapolated.
    """
    state = KeyStates.load(out) if out else KeyStates()
    plan_todo = todo_indices(plan, state, shard, redo)
    todo, planned = plan_todo.indices, plan_todo.planned
    if limit is not None:
        todo = todo[:max(0, limit)]
    n = len(todo)
    step = max(1, n // sample) if n else 1
    picks = [todo[k] for k in range(0, n, step)][:sample]
    prompt_tok, bad = [], 0
    from gpt4image_mm.captioning.images import image_size
    for j in picks:
        item = plan.item(j)
        tok = request_text_tokens(item.prompt.render(item.class_name),
                                  system)
        if item.source is not None:
            try:
                tok += image_tokens(image_size(item.source, max_side),
                                    meter.entry, detail)
            except ImageError:
                bad += 1
        prompt_tok.append(tok)
    mean_in = sum(prompt_tok) / len(prompt_tok) if prompt_tok else 0.0
    out_tok = expected_output_tokens(max_tokens)
    total_in, total_out = mean_in * n, out_tok * n
    return {
        'model': meter.model, 'keys_in_shard': planned,
        'already_done': planned - n if limit is None else None,
        'requests': n, 'est_prompt_tokens': int(total_in),
        'est_completion_tokens': int(total_out),
        'est_prompt_tokens_per_request': round(mean_in, 1),
        'est_cost_usd': round(meter.cost_of(total_in, total_out), 4),
        'worst_case_cost_usd': round(meter.cost_of(total_in, max_tokens * n),
                                     4),
        'price_known': meter.known, 'batch_pricing': meter.batch,
        'unreadable_in_sample': bad, 'sampled': len(picks),
        'names_changed': plan_todo.names_changed,
    }


__all__ = ['Summary', 'Progress', 'format_rate',
           'TokenBucket', 'caption_async', 'run_requests',
           'caption_plan', 'estimate', 'success_record', 'failure_record',
           'build_request', 'CaptionError']
