"""Descriptions JSONL -> embedding store: the offline second stage.

Rows of the store are the description keys in sorted order; the encoder sees
them longest-first in fixed-size batches (little padding, an OOM shows up in
the first batch, not after hours). Work happens in ``<out>.partial/``: a
memory map filled in processing order plus ``progress.json``, rewritten
atomically after each flushed chunk, so a killed run resumes where it
stopped. Only a finished run becomes a store, through
:class:`~gpt4image_mm.datasets.store.StoreWriter`'s atomic commit -- the
dataset wrapper never sees a half-written one.

Sharding: ``shard=(i, n)`` embeds the keys of shard i of n (the one meaning
of ``--shard``, :mod:`gpt4image_mm.utils.sharding`) into its own store;
:func:`merge_stores` joins the n parts into the store an unsharded run would
have written.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from gpt4image_mm.datasets.store import (
    EmbeddingStore,
    StoreError,
    StoreWriter,
    create_rows,
    is_store,
    read_manifest,
)
from gpt4image_mm.embedding.encoders import TextEncoder, build_text_encoder
from gpt4image_mm.utils.descriptions import (
    DescriptionFileError,
    KeyStates,
    iter_records,
    read_source,
    texts_checksum,
)
from gpt4image_mm.utils.errors import ToolError
from gpt4image_mm.utils.files import (
    LockHeld,
    OutputLock,
    atomic_write_json,
    check_replaceable,
    no_space_names,
    real_path,
)
from gpt4image_mm.utils.sharding import SHARD_RULE, parse_shard, shard_indices, shard_of

PARTIAL_SUFFIX = '.partial'
PROGRESS_FILE = 'progress.json'
ROWS_FILE = 'rows.npy'
_COPY_ROWS = 65536

PathOrPaths = Union[str, Sequence[str]]


@dataclass
class DescriptionTexts:
    """Successful descriptions, sorted by key, and what was skipped."""

    keys: List[str]
    texts: List[str]
    failures: int  # keys whose only records are failures
    checksum: str  # of every (key, text): the store's source id
    paths: List[str] = field(default_factory=list)
    # the datasets the descriptions describe (their caption.py sidecars)
    sources: List[Dict[str, Any]] = field(default_factory=list)


def load_description_texts(paths: PathOrPaths) -> DescriptionTexts:
    """Read one or more descriptions JSONL files (per-image and/or per-class).

    Failure records are skipped and counted (a key with a success anywhere
    is not a failure); the same key with two different texts is an error,
    as in :func:`gpt4image_mm.utils.descriptions.read_descriptions`. Keeps only
    key -> text, so 1.3M records fit in a few hundred MB.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    texts: Dict[str, str] = {}
    where: Dict[str, str] = {}
    states = KeyStates()
    for path in paths:
        for lineno, rec in iter_records(path):
            key = rec['key']
            if states.add(rec):
                texts[key] = rec['text']
                where[key] = f'{path}:{lineno}'
            elif 'error' not in rec and texts[key] != rec['text']:
                raise DescriptionFileError(
                    f'{path}:{lineno}: duplicate key {key!r} with a different'
                    f' text (first at {where[key]}); deduplicate the '
                    'descriptions first')
    keys = sorted(texts)
    ordered = [texts[k] for k in keys]
    sources = [s for s in map(read_source, paths) if s]
    return DescriptionTexts(keys, ordered, len(states.failed),
                            texts_checksum(zip(keys, ordered)),
                            [os.path.abspath(p) for p in paths],
                            [s for i, s in enumerate(sources)
                             if s not in sources[:i]])


@dataclass
class EmbedResult:
    """What one :func:`embed_descriptions` call did."""

    out: str
    rows: int
    dim: int
    failures: int
    truncated: Optional[int]
    seconds: float
    resumed_rows: int = 0
    up_to_date: bool = False
    manifest: Dict[str, Any] = field(default_factory=dict)


def _identity(src: DescriptionTexts, encoder: TextEncoder, store_dtype: str,
              shard: Optional[Tuple[int, int]]) -> Dict[str, Any]:
    """The manifest fields that must match for a store to be reused."""
    return dict(source_checksum=src.checksum, encoder=encoder.name,
                encoder_revision=encoder.revision,
                encoder_settings=encoder.settings(), dtype=store_dtype,
                shard=list(shard) if shard else None,
                shard_rule=SHARD_RULE if shard else None)


def _same_source(manifest: Dict[str, Any], ident: Dict[str, Any]) -> bool:
    for k, v in ident.items():
        if k == 'encoder' and ident['encoder_revision']:
            continue  # same weights from a moved directory are the same
        if json.loads(json.dumps(manifest.get(k))) != json.loads(
                json.dumps(v)):
            return False
    return True


def _differences(manifest: Dict[str, Any], ident: Dict[str, Any]) -> str:
    diff = [k for k, v in ident.items()
            if manifest.get(k) != json.loads(json.dumps(v))]
    return ', '.join(diff)


class _WorkDir:
    """``<out>.partial/``: the resumable scratch of one output store."""

    def __init__(self, out: str):
        self.path = out + PARTIAL_SUFFIX
        with no_space_names(self.path):
            os.makedirs(self.path, exist_ok=True)
        self._lock = OutputLock(os.path.join(self.path, 'lock'),
                                f'store {out}', 'embed.py')
        try:
            self._lock.acquire()
        except LockHeld as e:
            raise StoreError(f'{out}: another embed run is writing this '
                             f'store: {e}') from None

    def progress(self) -> Optional[Dict[str, Any]]:
        try:
            with open(os.path.join(self.path, PROGRESS_FILE),
                      encoding='utf-8') as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def open_rows(self, shape: Tuple[int, int], dtype: str,
                  resume: bool) -> np.ndarray:
        return create_rows(os.path.join(self.path, ROWS_FILE), shape, dtype,
                           resume)

    def save_progress(self, state: Dict[str, Any]) -> None:
        atomic_write_json(os.path.join(self.path, PROGRESS_FILE), state)

    def reset(self) -> None:
        for name in (PROGRESS_FILE, ROWS_FILE):
            try:
                os.remove(os.path.join(self.path, name))
            except FileNotFoundError:
                pass

    def remove(self) -> None:
        self._lock.release()
        shutil.rmtree(self.path, ignore_errors=True)

    def release(self) -> None:
        self._lock.release()


def _check_existing(out: str, ident: Dict[str, Any], force: bool
                    ) -> Optional[Dict[str, Any]]:
    """The manifest of an up-to-date store at ``out``, else None; refuses to
    replace a store of other descriptions/encoder unless ``force``."""
    if not os.path.exists(out):
        return None
    check_replaceable(out, is_store, 'an embedding store', StoreError)
    try:
        manifest = read_manifest(out)
    except StoreError:
        return None  # an empty directory
    if _same_source(manifest, ident):
        return None if force else manifest
    if not force:
        raise StoreError(
            f'{out} holds a store made from other descriptions or another '
            f'encoder (differs in: {_differences(manifest, ident)}); pass '
            'force (--force) to replace it')
    return None


def _batches(n: int, start: int, size: int):
    for a in range(start, n, size):
        yield a, min(n, a + size)


def embed_descriptions(descriptions: PathOrPaths,
                       encoder: Union[str, TextEncoder], out_dir: str,
                       batch_size: int = 128, store_dtype: str = 'float16',
                       shard: Union[None, str, Tuple[int, int]] = None,
                       resume: bool = True, force: bool = False,
                       progress: bool = True, flush_every: int = 8192,
                       flush_seconds: float = 30.0,
                       encoder_kwargs: Optional[Dict[str, Any]] = None,
                       on_batch: Optional[Callable[[int], None]] = None
                       ) -> EmbedResult:
    """Embed every successful description into the store ``out_dir``.

    ``encoder`` is a built :class:`TextEncoder` or a spec for
    :func:`build_text_encoder` (with ``encoder_kwargs``: device, dtype, ...).
    ``flush_every`` rows / ``flush_seconds`` bound the work a crash loses.
    ``on_batch(rows_done)`` is called after each batch (progress hooks).
    """
    t0 = time.time()
    out = real_path(out_dir)  # a link to a store is that store (lock, force)
    shard = parse_shard(shard)
    shard = shard if shard[1] > 1 else None
    src = load_description_texts(descriptions)
    if not src.keys:
        raise StoreError(f'{descriptions}: no successful descriptions '
                         f'({src.failures} failures)')
    if isinstance(encoder, str):
        encoder = build_text_encoder(encoder, **(encoder_kwargs or {}))
    ident = _identity(src, encoder, store_dtype, shard)
    done_manifest = _check_existing(out, ident, force)
    picked = shard_indices(src.keys, shard)
    keys = [src.keys[j] for j in picked]
    texts = [src.texts[j] for j in picked]
    if done_manifest is not None:
        return EmbedResult(out, len(keys), int(done_manifest['dim']),
                           src.failures, done_manifest.get('truncated'),
                           time.time() - t0, up_to_date=True,
                           manifest=done_manifest)
    if not keys:
        raise StoreError(f'shard {shard}: no rows (only {len(src.keys)} '
                         'descriptions)')

    def run_batches(order, rows, state, work):
        _run_batches(encoder, texts, order, rows, state, work, batch_size,
                     progress, flush_every, flush_seconds, on_batch, keys)
    resumed, state = _write_store(out, encoder, src, keys, texts, ident,
                                  store_dtype, resume, run_batches)
    return EmbedResult(out, len(keys), int(encoder.dim), src.failures,
                       state['truncated'], time.time() - t0,
                       resumed_rows=resumed, manifest=read_manifest(out))


def _write_store(out: str, encoder: TextEncoder, src: DescriptionTexts,
                 keys: List[str], texts: List[str], ident: Dict[str, Any],
                 store_dtype: str, resume: bool,
                 run_batches: Callable[..., None]
                 ) -> Tuple[int, Dict[str, Any]]:
    """Encode ``texts`` (resuming ``<out>.partial/`` when it is this same
    job) and commit the store; returns the resumed row count and the final
    progress state. The work dir's lock is held throughout."""
    n, dim = len(keys), int(encoder.dim)
    # longest first (by tokens where the encoder can count them); stable
    # ties by row, so a rerun processes the same order
    order = np.argsort(-encoder.lengths(texts), kind='stable')
    state = dict(ident, count=n, dim=dim, done=0, truncated=0)
    work = _WorkDir(out)
    try:
        for stale in glob.glob(glob.escape(out) + '.tmp-*'):
            shutil.rmtree(stale, ignore_errors=True)  # a crashed commit
        same = _resume_or_reset(work, state, resume)
        resumed = state['done']
        rows = work.open_rows((n, dim), store_dtype, resume=same)
        if not same:
            work.save_progress(state)
        run_batches(order, rows, state, work)
        _commit(out, rows, order, keys, dim, store_dtype, encoder.name,
                src.checksum, _manifest_extra(encoder, src, ident, state))
        del rows
    except BaseException:
        work.release()
        raise
    work.remove()
    return resumed, state


def _resume_or_reset(work: _WorkDir, state: Dict[str, Any],
                     resume: bool) -> bool:
    """Take ``done``/``truncated`` from the work dir's progress when it was
    saved by this same job (else clear the work dir); True when resuming."""
    prev = work.progress() if resume else None
    same = prev is not None and all(
        prev.get(k) == json.loads(json.dumps(v)) for k, v in state.items()
        if k not in ('done', 'truncated'))
    if not same:
        work.reset()
    else:
        state['done'] = int(prev['done'])
        state['truncated'] = prev.get('truncated')
    return same


def _manifest_extra(encoder: TextEncoder, src: DescriptionTexts,
                    ident: Dict[str, Any], state: Dict[str, Any]
                    ) -> Dict[str, Any]:
    """The manifest fields beyond what :func:`_commit` writes itself."""
    return dict(
        encoder_revision=encoder.revision,
        encoder_settings=encoder.settings(), encoder_kind=encoder.kind,
        shard=ident['shard'], shard_rule=ident['shard_rule'],
        total_count=len(src.keys), failures_skipped=src.failures,
        truncated=state['truncated'], max_length=encoder.max_length,
        descriptions=src.paths, source_datasets=src.sources)


def _run_batches(encoder: TextEncoder, texts: List[str], order: np.ndarray,
                 rows: np.ndarray, state: Dict[str, Any], work: _WorkDir,
                 batch_size: int, progress: bool, flush_every: int,
                 flush_seconds: float,
                 on_batch: Optional[Callable[[int], None]],
                 keys: Optional[List[str]] = None) -> None:
    """Encode ``texts`` in ``order`` into ``rows`` from ``state['done']``.

    Tokenisation of the next batch overlaps the model's forward pass (a
    helper thread; the tokenizers release the GIL). Whatever ends the loop
    (a bad answer, an interrupt), the rows finished before it are saved as
    progress first: a rerun starts at the batch that failed.
    """
    from tqdm import tqdm

    n = len(order)
    start = state['done']
    spans = list(_batches(n, start, batch_size))
    bar = tqdm(total=n, initial=start, unit='text', disable=not progress,
               dynamic_ncols=True, smoothing=0.05, desc='embed')
    base_trunc = encoder.truncated
    trunc0 = state['truncated']
    last_flush, flushed_at = start, time.time()
    done = start

    def batch_texts(a: int, b: int) -> List[str]:
        return [texts[j] for j in order[a:b]]

    def flush(upto: int) -> None:
        rows.flush()
        state['done'] = upto
        if trunc0 is not None and encoder.truncated is not None:
            state['truncated'] = trunc0 + encoder.truncated - base_trunc
        else:
            state['truncated'] = None
        work.save_progress(state)

    try:
        with ThreadPoolExecutor(1) as pool, torch.inference_mode():
            nxt = pool.submit(encoder.prepare, batch_texts(*spans[0])) \
                if spans else None
            for idx, (a, b) in enumerate(spans):
                prepared = nxt.result()
                if idx + 1 < len(spans):
                    nxt = pool.submit(encoder.prepare,
                                      batch_texts(*spans[idx + 1]))
                where = _batch_name(idx, len(spans), a, b, order, keys)
                rows[a:b] = _encode_batch(encoder, prepared, b - a,
                                          rows.shape[1], where)
                done = b
                bar.update(b - a)
                if on_batch is not None:
                    on_batch(b)
                if (b - last_flush >= flush_every
                        or time.time() - flushed_at >= flush_seconds):
                    flush(b)
                    last_flush, flushed_at = b, time.time()
    except BaseException:
        if done > last_flush:
            try:
                flush(done)  # keep what is finished
            except Exception:  # noqa: BLE001 - the first error is the news
                pass
        raise
    finally:
        bar.close()
    flush(n)


def _batch_name(idx: int, count: int, a: int, b: int, order: np.ndarray,
                keys: Optional[List[str]]) -> str:
    """How an error names a batch: its number, rows and first key."""
    first = f', first key {keys[order[a]]!r}' if keys else ''
    return f'batch {idx + 1} of {count} (texts {a}-{b - 1} in processing ' \
           f'order{first})'


def _encode_batch(encoder: TextEncoder, prepared: Any, size: int, dim: int,
                  where: str) -> np.ndarray:
    """One batch's vectors, checked before they are written: the right
    shape, finite and non-zero (a NaN row written now would only be found
    when the store is committed, and a resumed run would keep it)."""
    try:
        vec = encoder.run(prepared)
    except ToolError as e:  # an answer or a model that failed: say where
        raise ToolError(f'{where}: {e}', e.exit_code) from None
    if tuple(vec.shape) != (size, dim):
        raise StoreError(f'{encoder.name}: {where}: got vectors of shape '
                         f'{tuple(vec.shape)} for {size} texts of {dim}-d')
    arr = vec.float().cpu().numpy()
    bad = np.flatnonzero(~np.isfinite(arr).all(1) | ~arr.any(1))
    if len(bad):
        raise StoreError(f'{encoder.name}: {where}: {len(bad)} vectors are '
                         f'NaN/inf or all zero (text {int(bad[0])} of the '
                         'batch first); nothing of this batch was kept -- '
                         'check the encoder (fp16 overflow? try --dtype '
                         'float32) and rerun to resume')
    return arr


def _commit(out: str, rows: np.ndarray, order: np.ndarray, keys: List[str],
            dim: int, store_dtype: str, encoder_name: str, checksum: str,
            extra: Dict[str, Any]) -> None:
    """Permute processing order back to key order into a committed store."""
    n = len(keys)
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    writer = StoreWriter(out, n, dim, store_dtype, overwrite=True)
    try:
        for a in range(0, n, _COPY_ROWS):
            b = min(n, a + _COPY_ROWS)
            idx = inv[a:b]
            perm = np.argsort(idx)  # read the map in ascending order
            block = np.empty((b - a, dim), rows.dtype)
            block[perm] = rows[idx[perm]]
            writer.rows[a:b] = block
        writer.commit(keys, encoder_name, normalized=True,
                      source_checksum=checksum, **extra)
    except BaseException:
        writer.abort()
        raise


def _merged_key_order(stores: Sequence[EmbeddingStore]
                      ) -> Tuple[List[str], np.ndarray]:
    """All parts' keys in sorted order, and for each its row in the parts
    laid end to end; refuses a key twice or a key in the wrong shard."""
    all_keys: List[str] = []
    for s in stores:
        i, n = s.manifest['shard']
        part = s.keys()
        wrong = next((k for k in part if shard_of(k, n) != i), None)
        if wrong is not None:
            raise StoreError(f'{s.path}: key {wrong!r} is not in shard '
                             f'{i}/{n}')
        all_keys.extend(part)
    order = np.argsort(np.array(all_keys, dtype=object), kind='stable')
    keys = [all_keys[j] for j in order]
    dup = next((k for a, k in zip(keys, keys[1:]) if a == k), None)
    if dup is not None:
        raise StoreError(f'merge: key {dup!r} is in two parts; were they '
                         'made from one descriptions file?')
    return keys, order


def _copy_rows(stores: Sequence[EmbeddingStore], order: np.ndarray,
               rows: np.ndarray) -> None:
    """Fill ``rows`` (in merged key order) from the parts, a chunk at a
    time so memory stays flat."""
    starts = np.cumsum([0] + [s.count for s in stores])
    for a in range(0, len(order), _COPY_ROWS):
        src = order[a:a + _COPY_ROWS]
        part = np.searchsorted(starts, src, side='right') - 1
        for p, s in enumerate(stores):
            at = np.nonzero(part == p)[0]
            if len(at):
                rows[a + at] = s.embeddings[src[at] - starts[p]]


def _check_part(path: str, man: Dict[str, Any], first_path: str,
                first: Dict[str, Any]) -> None:
    """Refuse a part that is no shard store of the same run as the first."""
    if not man.get('shard'):
        raise StoreError(f'{path}: not a shard store (made without '
                         '--shard)')
    if man.get('shard_rule') != SHARD_RULE:
        raise StoreError(f'{path}: made under another --shard rule '
                         f'({man.get("shard_rule") or "contiguous slices"}'
                         f', not {SHARD_RULE}); embed the parts again')
    i, n = man['shard']
    if n != first['shard'][1]:
        raise StoreError(f'{path}: shard {i}/{n}, but {first_path} is of '
                         f'{first["shard"][1]} shards')
    for k in ('source_checksum', 'encoder_revision', 'encoder_settings',
              'dim', 'dtype'):
        if man.get(k) != first.get(k):
            raise StoreError(f'{path}: {k} differs from {first_path}; the '
                             'parts are not of one run')
    if not first.get('encoder_revision') and man['encoder'] != \
            first['encoder']:
        raise StoreError(f'{path}: encoder {man["encoder"]!r} differs '
                         f'from {first["encoder"]!r}')


def merge_stores(parts: Sequence[str], out_dir: str, force: bool = False
                 ) -> Dict[str, Any]:
    """Join the n shard stores of one run into the unsharded store.

    All parts must come from the same descriptions (checksum), encoder and
    store dtype, and together hold shards 0..n-1 exactly once.
    """
    out = real_path(out_dir)
    if not parts:
        raise StoreError('merge: no parts given')
    for p in parts:
        if real_path(p) == out:
            raise StoreError(f'merge: {out_dir} is also a part ({p}); '
                             'choose another --out')
    mans = [read_manifest(p) for p in parts]
    by_index: Dict[int, Tuple[str, Dict[str, Any]]] = {}
    first = mans[0]
    for path, man in zip(parts, mans):
        _check_part(path, man, parts[0], first)
        i = man['shard'][0]
        if i in by_index:
            raise StoreError(f'shard {i} given twice: {by_index[i][0]} and '
                             f'{path}')
        by_index[i] = (path, man)
    n_shards = first['shard'][1]
    missing = sorted(set(range(n_shards)) - by_index.keys())
    if missing:
        raise StoreError(f'merge: shards {missing} of {n_shards} missing')
    ident = {k: first.get(k) for k in ('source_checksum', 'encoder',
                                      'encoder_revision', 'encoder_settings',
                                      'dtype')}
    ident['shard'] = None
    existing = _check_existing(out, ident, force)
    if existing is not None:
        return existing
    stores = [EmbeddingStore(by_index[i][0]) for i in range(n_shards)]
    keys, order = _merged_key_order(stores)
    total = len(keys)
    if total != first.get('total_count', total):
        raise StoreError(f'merge: parts hold {total} rows, the run had '
                         f'{first["total_count"]}')
    dim = int(first['dim'])
    writer = StoreWriter(out, total, dim, first['dtype'], overwrite=True)
    try:
        _copy_rows(stores, order, writer.rows)
        truncs = [m.get('truncated') for m in mans]
        writer.commit(
            keys, first['encoder'], normalized=bool(first['normalized']),
            source_checksum=first.get('source_checksum'),
            encoder_revision=first.get('encoder_revision'),
            encoder_settings=first.get('encoder_settings'),
            encoder_kind=first.get('encoder_kind'), shard=None,
            total_count=total, failures_skipped=first.get('failures_skipped'),
            truncated=None if None in truncs else sum(truncs),
            max_length=first.get('max_length'),
            descriptions=first.get('descriptions'), merged_from=n_shards,
            source_datasets=first.get('source_datasets') or [])
    except BaseException:
        writer.abort()
        raise
    return read_manifest(out)

