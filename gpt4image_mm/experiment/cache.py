"""Step caching and tool runs of an experiment (and the demo's steps).

Every step writes a marker holding the digest of its inputs; a rerun with the
same inputs skips the step, so adding a seed or an arm costs only its runs.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set

from gpt4image_mm.utils.errors import ToolError

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: no locking
    fcntl = None  # type: ignore[assignment]
from gpt4image_mm.utils.files import atomic_write_json

logger = logging.getLogger(__name__)


def command(name: str) -> List[str]:
    """``gpt4image NAME`` as this interpreter runs it, through the installed
    package (no checkout needed, e.g. on a cluster node with only the
    wheel): runs are the user's own commands."""
    return [sys.executable, '-m', 'gpt4image_mm.cli', name]


def banner(step: str, text: str) -> None:
    """A step's heading in the experiment's narration (an INFO record of
    ``gpt4image_mm.experiment``, which the commands show on stdout)."""
    logger.info('\n==> [%s] %s', step, text)


def digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode('utf-8')
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()[:16]


def config_digest(config: str) -> str:
    """Digest of a config *with its bases*: editing either retrains."""
    from gpt4image_mm.utils.config import load_config
    return digest(load_config(config).pretty_text)


class Marker:
    """A step's "done" file: holds the digest of its inputs and its result.

    A step is skipped only when the marker exists and the digest matches;
    markers are written last (atomically), so a killed step reruns.
    """

    def __init__(self, path: str, inputs: Dict[str, Any]):
        self.path = path
        self.inputs = inputs
        self.key = digest(inputs)

    def _read(self) -> Dict[str, Any]:
        try:
            with open(self.path, encoding='utf-8') as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def load(self) -> Optional[Dict[str, Any]]:
        data = self._read()
        return data.get('result') if data.get('key') == self.key else None

    def stale(self) -> bool:
        """Whether the step last ran (or started) with other inputs."""
        data = self._read()
        return bool(data) and data.get('key') != self.key

    def begin(self) -> None:
        """Record the inputs before a resumable step starts, so a rerun
        with the same inputs resumes and one with others starts afresh."""
        self.save(None)

    def save(self, result: Optional[Dict[str, Any]]) -> None:
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        atomic_write_json(self.path, dict(key=self.key, inputs=self.inputs,
                                          result=result),
                          indent=2, default=str)


class Stopped(RuntimeError):
    """The experiment is stopping (a signal): no new tool process starts."""


class QuietTooLong(RuntimeError):
    """A tool process wrote nothing to its log for too long: killed."""


def _load_prctl() -> Optional[Callable[[int, int], int]]:
    """libc's ``prctl`` on Linux, loaded once in the parent (a forked child
    only calls it)."""
    if not sys.platform.startswith('linux'):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when its parent dies, even
    by ``kill -9`` (Linux ``PR_SET_PDEATHSIG``); a parent that died before
    the call is noticed by the changed parent pid."""
    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:
            os._exit(1)
    return preexec


class Children:
    """The tool processes this process started and that still run.

    On SIGTERM/SIGINT :meth:`stop` ends them (SIGTERM, then SIGKILL after a
    grace period) and waits for them, and refuses to start new ones: a
    stopped experiment leaves no trainer behind writing its run folders.
    """

    GRACE_S = 10.0

    def __init__(self) -> None:
        self._procs: Set[subprocess.Popen] = set()
        self._lock = threading.RLock()  # the signal handler may re-enter
        self.stopping = False

    def start(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            if self.stopping:
                raise Stopped('the experiment is stopping')
            proc = subprocess.Popen(list(cmd), preexec_fn=_die_with(
                os.getpid()), **kwargs)
            self._procs.add(proc)
        return proc

    def forget(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop(self) -> None:
        """End every child and wait for them (bounded)."""
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        for proc in procs:
            terminate(proc, self.GRACE_S)


CHILDREN = Children()


def terminate(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, ``grace_s`` to exit, then SIGKILL; waited for."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def children_die_with_us() -> Iterator[None]:
    """While an experiment runs (main thread only): SIGTERM and SIGINT stop
    the tool processes it started, wait for them, then end it -- SIGTERM
    with exit status 143, SIGINT as Ctrl-C. ``kill -9`` cannot be caught:
    there the children's parent-death signal ends them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        CHILDREN.stop()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise ToolError(f'stopped by {signal.Signals(signum).name}; the runs '
                        'it started were stopped with it. Rerun the same '
                        'command to continue: finished runs are kept, the '
                        'others resume from their last checkpoint',
                        exit_code=128 + signum)

    old = {sig: signal.signal(sig, on_signal)
           for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run_tool(cmd: Sequence[str], log: Optional[str] = None,
             env: Optional[Dict[str, str]] = None,
             cwd: Optional[str] = None, append: bool = False,
             quiet_timeout: Optional[float] = None,
             pass_fds: Sequence[int] = (),
             on_start: Optional[Callable[[subprocess.Popen], None]] = None
             ) -> None:
    """Run a command as a user would (from ``cwd``, default the current
    directory), as a child that dies with this process; output to the
    terminal or to ``log`` (appended to with ``append``: a resumed run
    keeps its earlier log). ``quiet_timeout``: seconds the log may stay
    unchanged before the child is killed (:class:`QuietTooLong`). A failure
    names the command and the log."""
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    cwd = cwd or os.getcwd()
    if log is None:
        rc = _wait(CHILDREN.start(cmd, cwd=cwd, env=full_env,
                                  pass_fds=tuple(pass_fds)), on_start)
    else:
        with open(log, 'a' if append else 'w', encoding='utf-8') as f:
            proc = CHILDREN.start(cmd, cwd=cwd, env=full_env, stdout=f,
                                  stderr=subprocess.STDOUT,
                                  pass_fds=tuple(pass_fds))
            rc = _wait(proc, on_start, log, quiet_timeout)
    if rc != 0:
        where = f'; see {log}' if log else ''
        raise RuntimeError(f'command failed with exit status {rc}{where}:\n'
                           f'  {" ".join(cmd)}')


def _wait(proc: subprocess.Popen,
          on_start: Optional[Callable[[subprocess.Popen], None]],
          log: Optional[str] = None,
          quiet_timeout: Optional[float] = None) -> int:
    """The child's exit status; killed when its log stays unchanged for
    ``quiet_timeout`` seconds (a stuck data loader, a dead mount)."""
    try:
        if on_start is not None:
            on_start(proc)
        size, since = -1, time.monotonic()
        while True:
            try:
                return proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
            if not quiet_timeout or not log:
                continue
            now_size = _size(log)
            if now_size != size:
                size, since = now_size, time.monotonic()
            elif time.monotonic() - since > quiet_timeout:
                terminate(proc, CHILDREN.GRACE_S)
                raise QuietTooLong(
                    f'no output for {quiet_timeout:.0f} s (--run-timeout): '
                    f'killed; see {log}')
    finally:
        if proc.poll() is None:  # an error here: never leave it running
            terminate(proc, CHILDREN.GRACE_S)
        CHILDREN.forget(proc)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


class RunBusy(RuntimeError):
    """Another live process holds a run folder's lock."""


class RunLock:
    """``run.lock`` in a run folder: one trainer per folder.

    An exclusive ``flock`` taken by the experiment and handed to the run's
    train/test processes (``pass_fds``), so it is held as long as any of
    them lives -- even a trainer that outlived a killed experiment -- and
    the kernel drops it when the last one dies (no staleness guess). The
    file names the holder: the trainer's pid and the experiment's.
    """

    NAME = 'run.lock'

    def __init__(self, folder: str):
        self.path = osp.join(folder, self.NAME)
        self.fd: Optional[int] = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_flock(fd):
            os.close(fd)
            raise RunBusy(f'{osp.dirname(self.path)} is being trained by '
                          f'{self._read() or "another process"}; wait for '
                          'it to finish or stop it, then rerun')
        self.fd = fd
        self.name_holder(os.getpid())
        return self

    def name_holder(self, pid: int) -> None:
        """Record ``pid`` (the process now training) as the holder."""
        if self.fd is None:
            return
        text = json.dumps(dict(pid=pid, experiment_pid=os.getpid(),
                               host=socket.gethostname(),
                               since=time.strftime('%Y-%m-%dT%H:%M:%S%z')))
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode('utf-8'), 0)

    def holder(self) -> Optional[str]:
        """Who holds the lock now (alive: the kernel says so), or None."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if _try_flock(fd):
                return None  # nobody: our probe took it (dropped on close)
            return self._read() or 'another process'
        finally:
            os.close(fd)

    def _read(self) -> str:
        try:
            with open(self.path, encoding='utf-8') as f:
                data = json.load(f)
            return (f'pid {data["pid"]} on {data["host"]} (started by '
                    f'experiment pid {data["experiment_pid"]} at '
                    f'{data["since"]}; lock file {self.path})')
        except (OSError, ValueError, KeyError, TypeError):
            return ''

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _try_flock(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover - non-POSIX: no locking
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def thread_env(threads: int) -> Dict[str, str]:
    """One process per core, ``threads`` threads each (docs/demo.md)."""
    return {'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
