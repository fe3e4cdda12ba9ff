"""The OpenAI Batch API: half the price, answers within 24 h.

Flow: write request files (JSONL, <= 50,000 lines and <= ~190 MB each, the
API's limits), upload, submit, poll, collect answers into the same
descriptions JSONL as the online backend.

Why a state file: a batch is paid once submitted, so an interrupted run must
find its batches again instead of submitting them twice. ``<out>.batch.json``
records every chunk's uploaded file id and batch id, written atomically after
each step; a rerun collects what is finished, keeps waiting for what is not,
and only then submits the keys that are in no batch. A crash between
"create batch" and "write the state" is covered by the chunk name in the
batch metadata: the rerun finds the batch with ``batches.list``.

``custom_id`` is ``<chunk>-<line>``; the key of each line stays in a local
keys file, so no file path or key of this machine goes to the API.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Set, Tuple

from gpt4image_mm.captioning.base import (
    Answer,
    CaptionBackend,
    CaptionError,
    CaptionOptions,
    FatalError,
    Request,
    RunControl,
)
from gpt4image_mm.captioning.images import ImageError
from gpt4image_mm.captioning.openai_api import (
    add_endpoint_arguments,
    chat_body,
    endpoint_kwargs,
    error_message,
    make_client,
    parse_completion,
)
from gpt4image_mm.captioning.pricing import CostMeter
from gpt4image_mm.captioning.prompts import names_changed
from gpt4image_mm.captioning.registry import CAPTION_BACKENDS
from gpt4image_mm.captioning.runner import (
    Progress,
    Summary,
    announce,
    build_request,
    caption_lock,
    failure_record,
    finish_summary,
    success_record,
    todo_indices,
)
from gpt4image_mm.captioning.sources import Plan
from gpt4image_mm.utils.descriptions import DescriptionWriter, KeyStates, record_source
from gpt4image_mm.utils.errors import InputError, ToolError
from gpt4image_mm.utils.files import atomic_write_json

logger = logging.getLogger(__name__)
TERMINAL = ('completed', 'failed', 'expired', 'cancelled')
STATE_VERSION = 1


def state_path(out: str) -> str:
    return out + '.batch.json'


def work_dir(out: str) -> str:
    return out + '.batch'


class BatchState:
    """Chunks and their file / batch ids; saved atomically after each step.

    A chunk's files are found from its name, next to the state file
    (``<out>.batch/<name>.*``), never from a path relative to the working
    directory of the run that wrote them: a rerun from another directory
    (or with an absolute ``--out``) finds them.
    """

    def __init__(self, path: str):
        self.path = path
        self.dir = (path[:-len('.json')] if path.endswith('.json')
                    else path + '.d')
        self.chunks: List[Dict[str, Any]] = []
        if os.path.exists(path):
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            if data.get('version') != STATE_VERSION:
                raise InputError(f'{path}: unknown batch state version')
            self.chunks = data['chunks']
            for c in self.chunks:
                c.update(self.chunk_files(c['name']))

    def chunk_files(self, name: str) -> Dict[str, str]:
        """Where the request and keys files of chunk ``name`` live."""
        return {'requests': os.path.join(self.dir, name + '.requests.jsonl'),
                'keys': os.path.join(self.dir, name + '.keys')}

    def save(self) -> None:
        chunks = [dict(c, requests=os.path.basename(c['requests']),
                       keys=os.path.basename(c['keys']))
                  for c in self.chunks]
        atomic_write_json(self.path, {'version': STATE_VERSION,
                                      'chunks': chunks}, indent=1)

    def open_chunks(self) -> List[Dict[str, Any]]:
        return [c for c in self.chunks if c['status'] != 'collected']

    def next_name(self) -> str:
        return f'chunk-{len(self.chunks) + 1:06d}-{int(time.time())}'


def _read_keys(path: str) -> List[Tuple[str, str]]:
    """``(key, prompt id)`` of each line of a chunk."""
    out = []
    with open(path, encoding='utf-8') as f:
        for lineno, ln in enumerate(f, 1):
            if not ln.strip():
                continue
            try:
                key, prompt_id = json.loads(ln)
            except (TypeError, ValueError) as e:  # a hand-edited state file
                raise ToolError(f'{path}:{lineno}: not a [key, prompt id] '
                                f'record ({e})') from None
            out.append((key, prompt_id))
    return out


def line_index(custom_id: Any, chunk: str, n_lines: int) -> int:
    """The request line a result's ``custom_id`` (``<chunk>-<line>``) names.

    Raises ``ValueError`` unless it names a line of *this* chunk: an answer
    of another chunk (another run, a reused output file id) must never be
    written under this chunk's keys.
    """
    name, sep, line = str(custom_id).rpartition('-')
    if not sep or name != chunk or not line.isdigit():
        raise ValueError(f'custom_id {custom_id!r} is not of chunk {chunk!r}')
    idx = int(line)
    if idx >= n_lines:
        raise ValueError(f'custom_id {custom_id!r}: chunk {chunk!r} has '
                         f'{n_lines} lines')
    return idx


@CAPTION_BACKENDS.register_module('openai-batch')
class BatchBackend(CaptionBackend):
    """Submit / poll / collect OpenAI batches (see module doc)."""

    name = 'openai-batch'
    help = ('the OpenAI Batch API: half price, answers within 24 h; '
            'rerun to collect')
    batch_pricing = True

    @classmethod
    def add_arguments(cls, group: Any) -> None:
        add_endpoint_arguments(group)
        group.add_argument('--poll-interval', type=float, default=30.0,
                           help='seconds between polls')
        # the API's limits: 50,000 requests and 200 MB per batch file
        group.add_argument('--batch-max-requests', type=int, default=50_000,
                           help='requests per batch file')
        group.add_argument('--batch-max-bytes', type=int, default=190 << 20,
                           help='bytes per batch file')
        group.add_argument('--batch-max-active', type=int, default=0,
                           help='batches in flight at once (0: any)')
        group.add_argument('--no-wait', dest='wait', action='store_false',
                           help='submit and exit; rerun to collect')

    @classmethod
    def from_options(cls, options: CaptionOptions,
                     plan: Plan) -> BatchBackend:
        a = options.backend_args
        return cls(options.model, **endpoint_kwargs(options),
                   poll_interval=a.poll_interval,
                   max_requests=a.batch_max_requests,
                   max_bytes=a.batch_max_bytes,
                   max_active=a.batch_max_active, wait=a.wait)

    def __init__(self, model: str, base_url: Optional[str] = None, *,
                 api_key_env: Optional[str] = None, max_tokens: int = 300,
                 temperature: Optional[float] = None, detail: str = 'auto',
                 system: Optional[str] = None, poll_interval: float = 30.0,
                 max_requests: int = 50_000, max_bytes: int = 190 << 20,
                 max_active: int = 0, wait: bool = True,
                 timeout: float = 600.0, max_retries: int = 5):
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.detail = detail
        self.system = system
        self.poll_interval = poll_interval
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_active = max_active
        self.wait = wait
        self.client, self.scrub, self.openai_params = make_client(
            base_url, api_key_env, timeout, max_retries)

    async def _api(self, coro: Any) -> Any:
        import openai
        try:
            return await coro
        except (openai.AuthenticationError,
                openai.PermissionDeniedError) as e:
            raise FatalError(self.scrub(error_message(e)
                                        + ' -- check the API key')) from None
        except openai.APIError as e:
            raise FatalError(self.scrub(f'Batch API: {error_message(e)}')) \
                from None

    # -- submit ---------------------------------------------------------
    async def _submit(self, chunk: Dict[str, Any], st: BatchState) -> None:
        """Upload and create the batch of ``chunk``, resuming half-done
        steps."""
        if not chunk.get('file_id'):
            with open(chunk['requests'], 'rb') as f:
                data = f.read()
            fobj = await self._api(self.client.files.create(
                file=(os.path.basename(chunk['requests']), data),
                purpose='batch'))
            chunk['file_id'] = fobj.id
            st.save()
        if not chunk.get('batch_id'):
            found = await self._find_batch(chunk)
            if found is None:
                found = await self._api(self.client.batches.create(
                    input_file_id=chunk['file_id'],
                    endpoint='/v1/chat/completions', completion_window='24h',
                    metadata={'gpt4image_chunk': chunk['name']}))
            chunk['batch_id'] = found.id
            chunk['status'] = 'submitted'
            st.save()

    async def _find_batch(self, chunk: Dict[str, Any]) -> Any:
        """A batch already created for this chunk (crash before save)."""
        page = await self._api(self.client.batches.list(limit=100))
        for b in page.data:
            if (b.input_file_id == chunk['file_id']
                    and (b.metadata or {}).get('gpt4image_chunk')
                    == chunk['name']):
                return b
        return None

    def _write_chunk(self, plan: Plan, todo: List[int], st: BatchState,
                     prep: Any, pool: ThreadPoolExecutor,
                     on_bad: Any) -> Tuple[Dict[str, Any], float]:
        """Write the next request file from ``todo`` (consumed from the
        front); returns the chunk and its estimated prompt tokens."""
        os.makedirs(st.dir, exist_ok=True)
        name = st.next_name()
        files = st.chunk_files(name)
        req_path, keys_path = files['requests'], files['keys']
        n, size, est = 0, 0, 0.0
        with open(req_path, 'w', encoding='utf-8') as rf, \
                open(keys_path, 'w', encoding='utf-8') as kf:
            while todo and n < self.max_requests:
                block, todo[:] = todo[:64], todo[64:]
                results = list(pool.map(prep, block))
                for k, res in enumerate(results):
                    if not isinstance(res, Request):
                        on_bad(*res)
                        continue
                    line = json.dumps({
                        'custom_id': f'{name}-{n}', 'method': 'POST',
                        'url': '/v1/chat/completions',
                        'body': chat_body(
                            self.model, res, max_tokens=self.max_tokens,
                            temperature=self.temperature, detail=self.detail,
                            system=self.system,
                            openai_params=self.openai_params)}) + '\n'
                    if n and (size + len(line) > self.max_bytes
                              or n >= self.max_requests):
                        todo[:0] = block[k:]  # put back: next chunk
                        break
                    rf.write(line)
                    kf.write(json.dumps([res.key, res.prompt_id]) + '\n')
                    n += 1
                    size += len(line)
                    est += res.est_prompt_tokens
                else:
                    continue
                break
        chunk = {'name': name, 'requests': req_path, 'keys': keys_path,
                 'n': n, 'est_prompt_tokens': est, 'file_id': None,
                 'batch_id': None, 'status': 'written'}
        return chunk, est

    # -- collect --------------------------------------------------------
    def result_of(self, rec: Dict[str, Any]) -> Any:
        """The :class:`Answer` (or :class:`CaptionError`) of one result
        line."""
        resp = rec.get('response') or {}
        body = resp.get('body') or {}
        if rec.get('error') or resp.get('status_code') != 200:
            err = rec.get('error') or body.get('error') or body
            msg = err.get('message') if isinstance(err, dict) else err
            return CaptionError(self.scrub(
                f'HTTP {resp.get("status_code")}: {msg}'))
        try:
            return parse_completion(body, self.model)
        except CaptionError as e:
            return e

    # -- the run --------------------------------------------------------
    async def run(self, plan: Plan, out: str,
                  control: RunControl) -> Summary:
        """Submit, poll and collect; holds ``out``'s lock throughout."""
        with caption_lock(out):
            record_source(out, plan.source)
            return await _BatchRun(self, plan, out, control).run()


class _BatchRun:
    """One run of :class:`BatchBackend`: finish what earlier runs
    submitted, then submit the keys that are in no batch, and poll."""

    def __init__(self, be: BatchBackend, plan: Plan, out: str,
                 control: RunControl):
        self.t0 = time.monotonic()
        self.be, self.plan, self.control = be, plan, control
        self.meter = control.meter or CostMeter(be.model, batch=True)
        self.st = BatchState(state_path(out))
        self.state = KeyStates.load(out)
        plan_todo = todo_indices(plan, self.state, control.shard)
        todo_arr, self.planned = plan_todo.indices, plan_todo.planned
        announce(plan_todo)
        self.summary = Summary(out=out, planned=self.planned,
                               already_done=self.planned - len(todo_arr),
                               names_changed=plan_todo.names_changed)
        in_batches: Set[str] = set()
        for c in self.st.open_chunks():
            in_batches.update(k for k, _ in _read_keys(c['keys']))
        self.todo = [j for j in todo_arr if plan.keys[j] not in in_batches]
        if control.limit is not None:
            self.todo = self.todo[:max(0, control.limit)]
        self.writer = DescriptionWriter(out)
        self.bar = Progress(len(self.todo) + len(in_batches),
                            control.progress, self.meter)

    def prep(self, j: int) -> Any:
        """The request of plan index ``j``, or ``(key, error)``."""
        c, key = self.control, self.plan.keys[j]
        try:
            return build_request(self.plan.item(j), 'data_url', c.max_side,
                                 c.jpeg_quality, self.meter.entry,
                                 self.be.detail, self.be.system)
        except (ImageError, ValueError) as e:  # messages name the key
            return key, str(e)
        except Exception as e:  # noqa: BLE001  (one sample never ends a run)
            return key, f'{key}: {type(e).__name__}: {e}'

    def on_bad(self, key: str, error: str) -> None:
        """A sample that could not go into a request file."""
        self.writer.write(failure_record(key, error, self.be.model, '',
                                         self.be.name))
        self.state.fail(key, error)
        self.summary.failed += 1
        self.summary.attempted += 1
        self.bar.update(False)

    def reserved(self) -> float:
        """Worst-case cost of the batches not collected yet."""
        return sum(self.meter.cost_of(c.get('est_prompt_tokens', 0),
                                      c['n'] * self.be.max_tokens)
                   for c in self.st.open_chunks())

    async def submit_written(self) -> None:
        """Chunks written (or uploaded) but not submitted by a run that
        stopped."""
        for c in self.st.open_chunks():
            if c['status'] != 'written':
                continue
            if not os.path.exists(c['requests']):
                c['status'] = 'collected'  # lost before upload
                self.st.save()
                continue
            await self.be._submit(c, self.st)
            self.summary.attempted += c['n']

    async def collect_finished(self) -> int:
        """Collect every finished batch; the number still running."""
        active = 0
        for c in self.st.open_chunks():
            b = await self.be._api(self.be.client.batches.retrieve(
                c['batch_id']))
            if b.status not in TERMINAL:
                active += 1
                continue
            await self.collect(c, b)
            self.st.save()
            if os.path.exists(c['requests']):
                os.remove(c['requests'])
        return active

    async def result_lines(self, batch: Any) -> List[str]:
        """The lines of a finished batch's output and error files."""
        lines: List[str] = []
        for fid in (batch.output_file_id, batch.error_file_id):
            if fid:
                content = await self.be._api(
                    self.be.client.files.content(fid))
                lines += [ln for ln in content.text.splitlines()
                          if ln.strip()]
        return lines

    async def collect(self, chunk: Dict[str, Any], batch: Any) -> None:
        """Record the answer of every line of a finished batch; only
        results of this chunk count (``custom_id``, see
        :func:`line_index`)."""
        keys = _read_keys(chunk['keys'])
        seen: Set[int] = set()
        foreign: List[str] = []
        for line in await self.result_lines(batch):
            try:
                rec = json.loads(line)
                idx = line_index(rec['custom_id'], chunk['name'], len(keys))
            except (KeyError, ValueError, TypeError) as e:
                foreign.append(str(e))
                continue
            if idx in seen:
                foreign.append(f'custom_id {rec["custom_id"]!r} twice')
                continue
            seen.add(idx)
            self.record(*keys[idx], self.be.result_of(rec))
        self.record_missing(chunk, batch, keys, seen, foreign)
        chunk['status'] = 'collected'
        chunk['batch_status'] = batch.status
        self.writer.sync()

    def record_missing(self, chunk: Dict[str, Any], batch: Any,
                       keys: List[Tuple[str, str]], seen: Set[int],
                       foreign: List[str]) -> None:
        """A failure for each request of the chunk that got no result."""
        why = (f'; {len(foreign)} result line(s) not of this chunk were '
               f'ignored (first: {foreign[0]})' if foreign else '')
        if foreign:
            logger.warning('batch %s: %d result line(s) not of chunk %s '
                           'ignored (first: %s)', batch.id, len(foreign),
                           chunk['name'], foreign[0])
        for idx, (key, pid) in enumerate(keys):
            if idx not in seen:
                self.record(key, pid, CaptionError(
                    f'batch {batch.id} {batch.status}: no result for this '
                    f'request{why}'))

    def record(self, key: str, prompt_id: str, res: Any) -> None:
        """The record of one result; never a second success for a key."""
        be, summary = self.be, self.summary
        if isinstance(res, Answer):
            self.meter.add(res.usage)
            renamed = key in self.state.done and names_changed(
                self.state.done[key], prompt_id)
            if key in self.state.done and not renamed:
                return
            # no per-request latency: the Batch API answers a whole file
            rec = success_record(Request(key, prompt_id, ''), res, be.name,
                                 None)
            if renamed:  # asked for a changed class name: supersedes
                rec['redo'] = True
            self.writer.write(rec)
            self.state.succeed(key, prompt_id)
            summary.succeeded += 1
            summary.truncated += res.truncated
        else:
            self.writer.write(failure_record(key, str(res), be.model,
                                             prompt_id, be.name))
            self.state.fail(key, str(res))
            summary.failed += 1
        self.bar.update(isinstance(res, Answer),
                        isinstance(res, Answer) and res.truncated)

    def over_budget(self) -> bool:
        """Would the next batch's worst case pass --max-cost?"""
        max_cost, meter = self.control.max_cost, self.meter
        if max_cost is None:
            return False
        head = min(len(self.todo), self.be.max_requests)
        guess = head * (meter.cost_of(1000, self.be.max_tokens)
                        if meter.entry else 0.0)
        if meter.cost + self.reserved() + guess <= max_cost:
            return False
        self.summary.stopped = (f'--max-cost {max_cost}: next batch would '
                                'exceed it')
        self.todo = []
        return True

    async def submit_new(self, active: int,
                         pool: ThreadPoolExecutor) -> int:
        """Write and submit chunks of new keys while --batch-max-active
        allows; the number of batches running then."""
        be = self.be
        while self.todo and (not be.max_active or active < be.max_active):
            if self.over_budget():
                break
            chunk, _ = be._write_chunk(self.plan, self.todo, self.st,
                                       self.prep, pool, self.on_bad)
            if chunk['n'] == 0:
                os.remove(chunk['requests'])
                os.remove(chunk['keys'])
                continue
            self.st.chunks.append(chunk)
            self.st.save()
            await be._submit(chunk, self.st)
            self.summary.attempted += chunk['n']
            active += 1
        return active

    async def poll(self, pool: ThreadPoolExecutor) -> None:
        """Until every batch is collected (or, with --no-wait, submitted)."""
        while True:
            await self.submit_written()
            active = await self.submit_new(await self.collect_finished(),
                                           pool)
            if not self.st.open_chunks():
                return
            if not self.be.wait:
                self.summary.stopped = (
                    f'{len(self.st.open_chunks())} batch(es) submitted; '
                    'rerun the same command to collect them')
                return
            self.bar.set_postfix(batches=active)
            await asyncio.sleep(self.be.poll_interval)

    async def run(self) -> Summary:
        """Poll; a fatal API error ends the run with what was collected."""
        pool = ThreadPoolExecutor(self.control.prep_threads)
        try:
            await self.poll(pool)
        except FatalError as e:
            self.summary.fatal = self.be.scrub(e)
        finally:
            self.writer.close()
            self.bar.close()
            pool.shutdown()
            await self.be.client.close()
        return finish_summary(self.summary, self.planned, self.state,
                              self.control.shard, self.meter, self.t0)
