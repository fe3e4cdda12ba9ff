"""The one error path of the command-line tools (`gpt4image`, tools/*.py).

An error a user can act on is one line, ``error: <what> -- <the fix>``,
scrubbed of keys, and an exit code; anything else is a bug and shows its
traceback, scrubbed too, exit 1. The two are told apart where the input is
checked, not by exception type: the code that checks an argument, a file or
a record raises :class:`ToolError` (or :class:`InputError`, also a
``ValueError`` for library callers); a ``ValueError`` or ``OSError`` from
anywhere else is a bug. One exception: an ``OSError`` on a path the user
named on the command line (a missing input, an unwritable output) is that
path's one line. ``GPT4IMAGE_DEBUG=1`` prints the traceback of a one-line
error too.

Exit codes (docs/captioning.md and docs/embedding.md list them):

* 0 -- the work is done (or stopped on purpose by ``--limit``/``--max-cost``);
* 1 -- not done: failures left in the output (rerun to retry them), or an
  unexpected error (a scrubbed traceback is printed);
* 2 -- fix something first: arguments, input files, the key, the model name,
  a server that is not set up for this request;
* 3 -- the server is unreachable or keeps failing: rerun later, the run
  resumes where it stopped;
* 128+N -- stopped by signal N (130 Ctrl-C, 143 SIGTERM): what was finished
  is kept, rerun the same command to continue.

The library reports through :mod:`logging` (loggers under ``gpt4image_mm``,
silent unless configured); a command shows those records on the terminal
for its duration (:func:`terminal_logging`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import traceback
from typing import Any, Callable, Iterator, List, Optional, Sequence, TypeVar


def scrub(text: object) -> str:
    """:func:`gpt4image_mm.utils.security.scrub`, imported when first used:
    security's own errors are :class:`InputError` s, defined here."""
    from gpt4image_mm.utils.security import scrub as scrub_keys
    return scrub_keys(text)

EXIT_OK = 0
EXIT_NOT_DONE = 1
EXIT_FIX_INPUT = 2
EXIT_SERVER = 3
EXIT_INTERRUPTED = 128 + int(signal.SIGINT)
PACKAGE_LOGGER = 'gpt4image_mm'  # every module's logger is below it
DEBUG_ENV = 'GPT4IMAGE_DEBUG'  # 1: a one-line error shows its traceback too
T = TypeVar('T')


class ToolError(RuntimeError):
    """An error that ends a run with a one-line message and ``exit_code``."""

    exit_code = EXIT_FIX_INPUT

    def __init__(self, message: str, exit_code: Optional[int] = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(ToolError, ValueError):
    """Bad input, found where it is checked (an argument, a file, a
    record): one line and exit 2. Also a ``ValueError``, so a library
    caller that catches those keeps working."""


class _TerminalHandler(logging.StreamHandler):
    """Bare, scrubbed messages on whatever ``sys.<name>`` is at each record
    (as :data:`logging.lastResort` does), so redirections and test captures
    made after the command started still see them."""

    def __init__(self, stream_name: str):
        self._stream_name = stream_name
        super().__init__()
        self.setFormatter(logging.Formatter('%(message)s'))

    @property
    def stream(self) -> Any:
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.<name>

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


@contextlib.contextmanager
def terminal_logging(name: str = PACKAGE_LOGGER,
                     stream: str = 'stderr') -> Iterator[None]:
    """While a command runs, show what logger ``name`` reports (INFO and
    up) on ``sys.<stream>`` as the bare message, the lines users read
    before the library logged; restore the logger afterwards, so a Python
    caller's own configuration (or none: silence) holds again. A logger
    below the package routed to its own stream stops propagating
    meanwhile, or its lines would show twice."""
    logger = logging.getLogger(name)
    if any(isinstance(h, _TerminalHandler) for h in logger.handlers):
        yield  # a command inside a command: shown once already
        return
    handler = _TerminalHandler(stream)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = propagate and name == PACKAGE_LOGGER
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def print_error(message: object) -> None:
    """One scrubbed line on stderr."""
    line = ' '.join(scrub(message).split())
    print(f'error: {line}', file=sys.stderr, flush=True)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, '') not in ('', '0')


def print_traceback() -> None:
    """The traceback of the exception being handled, keys removed."""
    print(scrub(traceback.format_exc()).rstrip(), file=sys.stderr,
          flush=True)


def report_user_error(error: BaseException) -> None:
    """A user error's one line (after its traceback under
    ``GPT4IMAGE_DEBUG=1``)."""
    if _debug():
        print_traceback()
    print_error(error)


def _named_paths(argv: Sequence[str]) -> Iterator[str]:
    """Every argument that could name a path: positionals, option values
    (``--out=X`` too) and the value of ``key=value`` overrides."""
    for arg in argv:
        if not isinstance(arg, str) or not arg:
            continue
        if not arg.startswith('-'):
            yield os.path.abspath(arg)
        if '=' in arg:
            yield os.path.abspath(arg.split('=', 1)[1])


def named_path_error(error: OSError, argv: Sequence[str]) -> bool:
    """Whether ``error`` is about a path the user named in ``argv`` (the
    path itself, a file below a named folder, or the temporary sibling an
    atomic write of a named file uses): the user's to fix. Any other
    OSError is ours: a bug until shown otherwise."""
    paths = [os.path.abspath(os.fsdecode(p))
             for p in (error.filename, error.filename2)
             if isinstance(p, (str, bytes, os.PathLike))]
    named = [n.rstrip(os.sep) for n in _named_paths(argv)]
    return any(path.startswith(n) for path in paths for n in named if n)


def run_tool(main: Callable[[List[str]], int], argv: List[str]) -> int:
    """Run ``main(argv)`` with the library's records on stderr: a user
    error is its line and code, anything else a scrubbed traceback."""
    with terminal_logging():
        return _run_tool(main, argv)


def _run_tool(main: Callable[[List[str]], int], argv: List[str]) -> int:
    try:
        return main(argv)
    except ToolError as e:
        report_user_error(e)
        return e.exit_code
    except KeyboardInterrupt:  # outside a runner's own signal handling
        print('interrupted; rerun the same command to continue',
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except OSError as e:
        if not named_path_error(e, argv):
            print_traceback()  # our own file, not the user's: a bug
            return EXIT_NOT_DONE
        report_user_error(e)
        return EXIT_FIX_INPUT
    except Exception:  # noqa: BLE001 - a bug: show where, keys removed
        print_traceback()
        return EXIT_NOT_DONE


def exit_on_tool_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command-line entry point that returns its own result (such as
    ``tools/train.py``'s): a :class:`ToolError` ends the process with its
    one line and code; anything else propagates untouched."""
    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            with terminal_logging():
                return main(*args, **kwargs)
        except ToolError as e:
            report_user_error(e)
            raise SystemExit(e.exit_code) from None
    return wrapper
