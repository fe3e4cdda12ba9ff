"""The embedding store: the one home of its on-disk format.

A directory with

* ``embeddings.npy``  -- an N x D array (fp16 by default), memory-mappable;
* ``keys.txt``        -- the N keys in row order, one per line (UTF-8);
* ``manifest.json``   -- encoder, dim, dtype, normalized, count, the checksum
  of the source descriptions, the SHA-256 of ``keys.txt`` (checked on open:
  a reordered or edited keys file is refused), the source datasets the
  descriptions were made from (where known) and the format version.

Keys are unique: duplicates are refused when written and when opened.

Stores are written into a sibling temporary directory and renamed into place,
so a crash never leaves a directory that :class:`EmbeddingStore` accepts: the
manifest is the last file written and is required to open one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from gpt4image_mm.utils.errors import InputError
from gpt4image_mm.utils.files import (
    allocate,
    atomic_write_json,
    check_replaceable,
    fsync_dir,
    fsync_file,
    no_space_names,
    real_path,
    temp_sibling,
)
from gpt4image_mm.utils.keys import check_key

FORMAT_NAME = 'gpt4image-mm-embedding-store'
FORMAT_VERSION = 1
EMBEDDINGS_FILE = 'embeddings.npy'
KEYS_FILE = 'keys.txt'
MANIFEST_FILE = 'manifest.json'
# numpy has no bfloat16, and memory maps need a numpy dtype.
SUPPORTED_DTYPES = ('float16', 'float32')


class StoreError(InputError):
    """An embedding store is missing, malformed or does not fit its use."""


def read_manifest(path: str) -> Dict[str, Any]:
    """The manifest of the store at ``path`` (validated)."""
    mpath = os.path.join(path, MANIFEST_FILE)
    if not os.path.isfile(mpath):
        raise StoreError(f'{path}: not an embedding store (no {MANIFEST_FILE}; '
                         'an interrupted write leaves none -- rerun embed.py)')
    try:
        with open(mpath, encoding='utf-8') as f:
            manifest = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreError(f'{mpath}: unreadable manifest ({e})') from None
    version = manifest.get('format_version')
    if manifest.get('format') != FORMAT_NAME or version != FORMAT_VERSION:
        raise StoreError(
            f'{mpath}: unknown store format {manifest.get("format")!r} '
            f'version {version!r}; this gpt4image-mm reads {FORMAT_NAME!r} '
            f'version {FORMAT_VERSION}')
    for field in ('dim', 'count', 'dtype', 'normalized', 'encoder'):
        if field not in manifest:
            raise StoreError(f'{mpath}: manifest lacks {field!r}')
    return manifest


def check_unique(keys: Sequence[str], where: str) -> None:
    """Refuse duplicate row keys: a key must name exactly one vector."""
    seen: set = set()
    for row, key in enumerate(keys):
        if key in seen:
            first = next(i for i, k in enumerate(keys) if k == key)
            raise StoreError(f'{where}: key {key!r} appears twice (rows '
                             f'{first} and {row}); a store needs unique keys')
        seen.add(key)


def is_store(path: str) -> bool:
    """Whether ``path`` holds a committed store (a readable manifest): what
    ``--force`` may replace."""
    try:
        read_manifest(path)
    except StoreError:
        return False
    return True


def create_rows(path: str, shape: Tuple[int, int], dtype: str,
                resume: bool = False) -> np.ndarray:
    """A ``.npy`` array at ``path`` memory-mapped for writing, its disk
    blocks allocated up front (:func:`~gpt4image_mm.utils.files.allocate`): a
    full disk is one line naming ``path`` now, never a SIGBUS mid-run.

    ``resume``: reopen an existing file of this shape and dtype (else
    start a new one).
    """
    if resume:
        try:
            rows = np.lib.format.open_memmap(path, mode='r+')
            if rows.shape == tuple(shape) and str(rows.dtype) == dtype:
                allocate(path)  # a file of an older version may be sparse
                return rows
            del rows
        except (OSError, ValueError):
            pass
    try:
        with no_space_names(path):
            rows = np.lib.format.open_memmap(
                path, mode='w+', dtype=np.dtype(dtype), shape=tuple(shape))
        allocate(path)
    except BaseException:
        try:
            os.remove(path)  # give the space back
        except OSError:
            pass
        raise
    return rows


def bad_rows(array: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Indices of rows that are non-finite or all zero (scanned in chunks)."""
    bad = []
    for start in range(0, len(array), chunk):
        block = np.asarray(array[start:start + chunk], dtype=np.float32)
        mask = ~np.isfinite(block).all(1) | ~(block != 0).any(1)
        bad.append(np.flatnonzero(mask) + start)
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


class StoreWriter:
    """Write a store row block by row block, then :meth:`commit` atomically.

    ``rows`` is a writable memory map, so a store larger than RAM streams to
    disk; its blocks are allocated when it is made, so a full disk fails
    here, not as a bus error later. Nothing is visible at ``path`` until
    :meth:`commit`; a symlink ``path`` is committed at its target.
    """

    def __init__(self, path: str, count: int, dim: int,
                 dtype: str = 'float16', overwrite: bool = False):
        if dtype not in SUPPORTED_DTYPES:
            raise StoreError(f'unsupported store dtype {dtype!r}; use one of '
                             f'{SUPPORTED_DTYPES}')
        if os.path.exists(path) and not overwrite:
            raise StoreError(f'{path} exists; pass overwrite=True to replace')
        if os.path.exists(path):  # fail before the work, not at commit
            check_replaceable(path, is_store, 'an embedding store',
                              StoreError)
        self.path = real_path(path)
        self.count, self.dim, self.dtype = count, dim, dtype
        self.tmp = temp_sibling(self.path)
        with no_space_names(self.path):
            os.makedirs(self.tmp)
        try:
            self.rows = create_rows(os.path.join(self.tmp, EMBEDDINGS_FILE),
                                    (count, dim), dtype)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def commit(self, keys: Sequence[str], encoder: str,
               normalized: bool = True, source_checksum: Optional[str] = None,
               check: bool = True, **extra: Any) -> str:
        """Write keys and manifest, then move the store into place."""
        with no_space_names(self.path):
            return self._commit(keys, encoder, normalized, source_checksum,
                                check, **extra)

    def _commit(self, keys: Sequence[str], encoder: str, normalized: bool,
                source_checksum: Optional[str], check: bool,
                **extra: Any) -> str:
        if len(keys) != self.count:
            raise StoreError(f'{self.path}: {len(keys)} keys for '
                             f'{self.count} rows')
        if check:
            bad = bad_rows(self.rows)
            if len(bad):
                raise StoreError(
                    f'{self.path}: {len(bad)} rows are NaN/inf or all zero, '
                    f'e.g. key {keys[int(bad[0])]!r} (row {int(bad[0])})')
        check_unique(keys, self.path)
        self.rows.flush()
        del self.rows
        digest = hashlib.sha256()
        with open(os.path.join(self.tmp, KEYS_FILE), 'w',
                  encoding='utf-8', newline='\n') as f:
            for i, key in enumerate(keys):
                line = check_key(key, f'row {i}: ') + '\n'
                f.write(line)
                digest.update(line.encode('utf-8'))
        manifest = dict(format=FORMAT_NAME, format_version=FORMAT_VERSION,
                        encoder=encoder, dim=self.dim, dtype=self.dtype,
                        normalized=bool(normalized), count=self.count,
                        source_checksum=source_checksum,
                        keys_sha256=digest.hexdigest(),
                        created=time.strftime('%Y-%m-%dT%H:%M:%S%z'), **extra)
        atomic_write_json(os.path.join(self.tmp, MANIFEST_FILE), manifest,
                          indent=2)
        for name in (EMBEDDINGS_FILE, KEYS_FILE):
            fsync_file(os.path.join(self.tmp, name))
        fsync_dir(self.tmp)
        old = None
        if os.path.exists(self.path):
            check_replaceable(self.path, is_store, 'an embedding store',
                              StoreError)
            old = f'{self.path}.old-{uuid.uuid4().hex[:8]}'
            os.rename(self.path, old)
        os.rename(self.tmp, self.path)  # a directory: atomic_path is for files
        fsync_dir(os.path.dirname(self.path))
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        self.rows = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_store(path: str, keys: Sequence[str], embeddings: np.ndarray,
                encoder: str, dtype: str = 'float16', normalized: bool = True,
                source_checksum: Optional[str] = None,
                overwrite: bool = False, **extra: Any) -> str:
    """Write a whole in-memory N x D array as a store (atomically)."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise StoreError(f'{path}: embeddings must be N x D, got shape '
                         f'{embeddings.shape}')
    writer = StoreWriter(path, len(embeddings), embeddings.shape[1], dtype,
                         overwrite=overwrite)
    try:
        writer.rows[:] = embeddings
        return writer.commit(keys, encoder, normalized, source_checksum,
                             **extra)
    except BaseException:
        writer.abort()
        raise


class EmbeddingStore:
    """Read-only view of a store; the array is memory-mapped on first use.

    Pickles without its memory map, so each dataloader worker maps the file
    itself and all workers share the page cache instead of copies.
    :meth:`row` reads with ``os.pread`` instead of the map (see there).
    """

    def __init__(self, path: str, expected_dim: Optional[int] = None,
                 expected_encoder: Optional[str] = None):
        self.path = os.path.abspath(path)
        self.manifest = read_manifest(self.path)
        self.dim = int(self.manifest['dim'])
        self.count = int(self.manifest['count'])
        self._array: Optional[np.ndarray] = None
        self._fd: Optional[int] = None
        if expected_dim is not None and expected_dim != self.dim:
            raise StoreError(
                f'{self.path}: store vectors are {self.dim}-d but the model '
                f'aligns to {expected_dim}-d (align_neck.out_channels); use a '
                'store from the matching encoder or change out_channels')
        if expected_encoder and expected_encoder != self.manifest['encoder']:
            raise StoreError(
                f'{self.path}: made by encoder {self.manifest["encoder"]!r}, '
                f'expected {expected_encoder!r}')
        arr = self.embeddings  # validates shape and dtype up front
        # rows are contiguous at this byte offset unless Fortran-ordered
        self._row_offset = int(arr.offset) if arr.flags.c_contiguous else None
        self._row_dtype = arr.dtype
        del arr

    @property
    def embeddings(self) -> np.ndarray:
        if self._array is None:
            fpath = os.path.join(self.path, EMBEDDINGS_FILE)
            try:
                arr = np.load(fpath, mmap_mode='r', allow_pickle=False)
            except (OSError, ValueError) as e:
                raise StoreError(f'{fpath}: unreadable ({e})') from None
            if arr.shape != (self.count, self.dim):
                raise StoreError(
                    f'{fpath}: shape {arr.shape} does not match the manifest '
                    f'(count={self.count}, dim={self.dim})')
            if str(arr.dtype) != self.manifest['dtype']:
                raise StoreError(f'{fpath}: dtype {arr.dtype} but manifest '
                                 f'says {self.manifest["dtype"]}')
            self._array = arr
        return self._array

    def keys(self) -> List[str]:
        """The row keys (read on demand; large stores hold millions)."""
        kpath = os.path.join(self.path, KEYS_FILE)
        try:
            with open(kpath, encoding='utf-8', newline='\n') as f:
                keys = f.read().split('\n')
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f'{kpath}: unreadable ({e})') from None
        if keys and keys[-1] == '':
            keys.pop()
        if len(keys) != self.count:
            raise StoreError(f'{kpath}: {len(keys)} keys but the manifest '
                             f'counts {self.count} rows')
        self._check_keys_digest(kpath, keys)
        check_unique(keys, kpath)
        return keys

    def _check_keys_digest(self, kpath: str, keys: List[str]) -> None:
        """Refuse a keys.txt edited or reordered after the store was written:
        every row would get another key's vector. (Stores written before
        the digest existed have none to check.)"""
        want = self.manifest.get('keys_sha256')
        if want is None:
            return
        digest = hashlib.sha256()
        for key in keys:
            digest.update(key.encode('utf-8') + b'\n')
        if digest.hexdigest() != want:
            raise StoreError(
                f'{kpath}: the keys do not match the manifest\'s keys_sha256 '
                '(reordered or edited after the store was written): rows '
                'would get the wrong vectors; rebuild the store with embed.py')

    def row(self, index: int, key: Optional[str] = None) -> np.ndarray:
        """Row ``index`` as float32; NaN/inf/zero rows raise naming the key."""
        vec = self._read_row(index)
        if not np.isfinite(vec).all() or not vec.any():
            name = key if key is not None else f'row {index}'
            raise StoreError(f'{self.path}: the vector of {name!r} (row '
                             f'{index}) is NaN/inf or all zero')
        return vec

    def _read_row(self, index: int) -> np.ndarray:
        """One row copied out of the page cache with ``os.pread``.

        Reading through the memory map would count every touched page in
        the worker's resident memory, and the kernel maps up to 64 KB around
        each fault: a worker reading random rows of a 2.6 GB store "holds"
        ~64 KB per row read and, over an epoch, the whole store (page-cache
        pages, but they inflate RSS-based accounting such as Slurm's, times
        the number of workers). ``pread`` keeps only the 2 KB copy.
        """
        if self._row_offset is None:  # Fortran order: rows not contiguous
            return np.asarray(self.embeddings[index], dtype=np.float32)
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(f'{self.path}: row {index} of {self.count}')
        if self._fd is None:
            self._fd = os.open(os.path.join(self.path, EMBEDDINGS_FILE),
                               os.O_RDONLY)
        size = self.dim * self._row_dtype.itemsize
        buf = os.pread(self._fd, size, self._row_offset + index * size)
        if len(buf) != size:
            raise StoreError(f'{self.path}: {EMBEDDINGS_FILE} is truncated '
                             f'(row {index} is past its end)')
        return np.frombuffer(buf, self._row_dtype).astype(np.float32)

    def close(self) -> None:
        """Close the row reader's file descriptor (reopened on demand)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass

    def verify(self) -> None:
        """Scan every row for NaN/inf/zero vectors (slow on huge stores)."""
        bad = bad_rows(self.embeddings)
        if len(bad):
            raise StoreError(f'{self.path}: {len(bad)} rows are NaN/inf or '
                             f'all zero, first row {int(bad[0])}')

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state['_array'] = None
        state['_fd'] = None  # each process opens its own
        return state
