"""Output files: the one home of atomic writes, output locks, the rule
for what ``--force`` may replace, what a path's identity is, and what a
full disk looks like to the user.

Why one home: every tool writes outputs that a crash must not tear, that two
processes must not write at once, that a careless ``--force`` must not
confuse with somebody's data, and that a full disk must not turn into a bus
error or a torn file. Each rule lives here once.
"""
from __future__ import annotations

import errno
import io
import json
import os
import socket
import stat
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from gpt4image_mm.utils.errors import ToolError

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: no locking
    fcntl = None  # type: ignore[assignment]


# errnos that mean "the disk (or the user's quota) is full"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(ToolError):
    """A write found no space left: one line naming the path, exit 2."""


def real_path(path: str) -> str:
    """The identity of an output: its absolute path with every symlink
    resolved (a missing tail is kept as named). Two names of one file --
    ``d.jsonl`` and a link to it -- are one output for locks, ``--force``
    and merges."""
    return os.path.realpath(os.path.abspath(path))


def same_path(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` name one file (by real path)."""
    return real_path(a) == real_path(b)


@contextmanager
def no_space_names(path: str) -> Iterator[None]:
    """Turn "no space left on device" inside the block into :class:`DiskFull`
    naming ``path`` (the kernel's error names no file)."""
    try:
        yield
    except OSError as e:
        if e.errno not in _NO_SPACE:
            raise
        raise DiskFull(f'{path}: no space left on device ({e.strerror}) -- '
                       'free space there or write elsewhere, then rerun the '
                       'same command') from None


def allocate(path: str) -> None:
    """Reserve the disk blocks of ``path``'s whole length now.

    A file written through a memory map gets its blocks only when a page is
    first written back; on a full disk that is a SIGBUS that kills the
    process without a word. Allocated up front, a full disk is an ENOSPC
    here, at the start (:class:`DiskFull` naming the path). Filesystems
    that cannot allocate ahead (copy-on-write ones) are left as they are.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        with no_space_names(path):
            try:
                if size:
                    os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP,
                                   errno.ENOSYS):
                    raise
    finally:
        os.close(fd)


def temp_sibling(path: str) -> str:
    """A fresh temporary name next to ``path`` (same directory, so the final
    rename stays on one filesystem and is atomic). The ``.tmp-`` infix is what
    cleanup code globs for."""
    return f'{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'


def fsync_file(path: str) -> None:
    """Flush a written file's data to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Make a rename inside directory ``path`` durable (POSIX: the directory
    entry lives in the directory's own data). A no-op where directories
    cannot be opened (Windows)."""
    try:
        fd = os.open(path or '.', os.O_RDONLY)
    except OSError:  # pragma: no cover - non-POSIX
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse dir fsync
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path to write ``path``'s new content to; on a clean
    exit fsync it, rename it over ``path`` and fsync the directory; on any
    error remove it and leave ``path`` untouched.

    The one write-to-temp-then-rename of the project: a crash at any point
    leaves either the old file or the new one, never a torn one; a full disk
    is :class:`DiskFull` naming ``path``. A symlink is written through: its
    target is replaced, the link stays.
    """
    path = real_path(path)
    tmp = temp_sibling(path)
    try:
        with no_space_names(path):
            yield tmp
            fsync_file(tmp)
            os.replace(tmp, path)
            fsync_dir(os.path.dirname(path))
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    """Replace ``path`` by UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_json(path: str, obj: Any, indent: Optional[int] = None,
                      default: Optional[Callable[[Any], Any]] = None) -> None:
    """Replace ``path`` by ``obj`` as JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, default=default))


class LockHeld(ToolError):
    """Another live process holds an output's lock (holder named): exit 2."""


def lock_path(out: str) -> str:
    """The lock file next to an output file or directory -- next to its
    real path, so every name of one output shares one lock."""
    return real_path(out).rstrip(os.sep) + '.lock'


class OutputLock:
    """An exclusive, non-blocking lock on one output, naming its holder.

    ``flock`` on ``<lock file>``: the kernel drops it when the holder dies,
    however it dies, so a lock left by a killed run is taken over without
    any staleness guess. The file records pid, host, tool and start time,
    which the refusal message of a second run names. The file stays after
    release (removing it would let two processes lock two different inodes).
    """

    def __init__(self, path: str, what: str, tool: str = ''):
        self.path = path
        self.what = what
        self.tool = tool
        self._f: Optional[Any] = None

    def acquire(self) -> OutputLock:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)),
                    exist_ok=True)
        f = open(self.path, 'a+', encoding='utf-8')
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or 'unknown process'
                f.close()
                raise LockHeld(
                    f'{self.what} is being written by another run ({holder});'
                    f' wait for it to finish (lock file {self.path})') from None
        try:
            with no_space_names(self.path):
                f.seek(0)
                f.truncate()
                f.write(json.dumps({
                    'pid': os.getpid(), 'host': socket.gethostname(),
                    'tool': self.tool,
                    'since': time.strftime('%Y-%m-%dT%H:%M:%S%z')}))
                f.flush()
        except BaseException:
            f.close()
            raise
        self._f = f
        return self

    def release(self) -> None:
        if self._f is not None and not self._f.closed:
            self._f.close()  # closing drops the flock
        self._f = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def check_replaceable(path: str, is_ours: Callable[[str], bool],
                      kind: str, error: type = ValueError) -> None:
    """Refuse to replace ``path`` unless it is absent, an empty directory,
    or something this tool wrote (``is_ours``).

    The rule behind every ``--force``: it may replace a *kind* the tool made
    (a store, a descriptions file), never an unknown file or directory.
    """
    real = real_path(path)  # a link's target is what would be replaced
    if not os.path.lexists(real):
        return
    if os.path.isdir(real) and not os.listdir(real):
        return
    if not is_ours(real):
        raise error(
            f'{path} exists and is not {kind}; refusing to replace it even '
            'with --force (move it away or choose another --out)')


class NotRegularFile(ToolError):
    """An input that is not a regular file, or that grows while it is read:
    one line naming it, exit 2."""


def _kind_of(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, 'a FIFO'),
                       (stat.S_ISSOCK, 'a socket'),
                       (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return kind
    return 'a special file'


class _SizeBoundReader(io.RawIOBase):
    """A file descriptor read no further than the size the file had when it
    was opened: a file that grows while it is read (a log still being
    written, a /proc-like file of size 0) is an error, not a stream that
    never ends."""

    def __init__(self, fd: int, path: str):
        super().__init__()
        self._raw = io.FileIO(fd, 'rb', closefd=True)
        self._limit = os.fstat(fd).st_size
        self._path = path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buf: Any) -> Optional[int]:
        n = self._raw.readinto(buf)
        if self._raw.tell() > self._limit:
            raise NotRegularFile(
                f'{self._path}: grew while being read (past the '
                f'{self._limit} bytes it had when opened) -- wait until the '
                'program writing it has finished, or copy it, then rerun')
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_regular(path: str, encoding: str = 'utf-8',
                 newline: Optional[str] = None,
                 buffer_size: int = 1 << 20) -> io.TextIOWrapper:
    """Open an input for reading as text, or refuse it in one line.

    Only a regular file is read: a FIFO would block the command for ever
    (even a ``--dry-run``), and a device such as ``/dev/zero`` never ends.
    The open itself does not block (``O_NONBLOCK``, cleared once the file
    is known to be regular), and reading stops at the size the file had
    when it was opened (:class:`_SizeBoundReader`). A missing file is the
    usual :class:`OSError` naming it.
    """
    flags = os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(
        os, 'O_CLOEXEC', 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise NotRegularFile(f'{path}: a directory -- pass a file')
        if not stat.S_ISREG(mode):
            raise NotRegularFile(
                f'{path}: {_kind_of(mode)}, not a regular file (reading it '
                'could block or never end) -- save its content to a file '
                'and pass that')
        if fcntl is not None and getattr(os, 'O_NONBLOCK', 0):
            fcntl.fcntl(fd, fcntl.F_SETFL,
                        fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        raw = _SizeBoundReader(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return io.TextIOWrapper(io.BufferedReader(raw, buffer_size),
                            encoding=encoding, newline=newline)
