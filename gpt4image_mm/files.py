"""Output files: the one home of atomic writes, output locks and the rule
for what ``--force`` may replace.

Why one home: every tool writes outputs that a crash must not tear, that two
processes must not write at once, and that a careless ``--force`` must not
confuse with somebody's data. Each rule lives here once.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Callable, Optional

from .cli_errors import ToolError

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: no locking
    fcntl = None  # type: ignore[assignment]


def atomic_write_json(path: str, obj: Any, indent: Optional[int] = None
                      ) -> None:
    """Replace ``path`` by ``obj`` as JSON: temp file, fsync, rename."""
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(obj, f, indent=indent)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data``: temp file, fsync, rename (reports,
    figures, caches)."""
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class LockHeld(ToolError):
    """Another live process holds an output's lock (holder named): exit 2."""


def lock_path(out: str) -> str:
    """The lock file next to an output file or directory."""
    return os.path.abspath(out).rstrip(os.sep) + '.lock'


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
        f.seek(0)
        f.truncate()
        f.write(json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                            'tool': self.tool,
                            'since': time.strftime('%Y-%m-%dT%H:%M:%S%z')}))
        f.flush()
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
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path) \
            and not os.listdir(path):
        return
    if not is_ours(path):
        raise error(
            f'{path} exists and is not {kind}; refusing to replace it even '
            'with --force (move it away or choose another --out)')
