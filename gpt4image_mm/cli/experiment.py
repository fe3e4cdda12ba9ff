"""``experiment``: the controlled comparison of GPT4Image against the plain
config and control arms, on any dataset and config (docs/experiment.md)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import ContextManager, Iterator, TextIO

logger = logging.getLogger('gpt4image_mm.experiment')


def _ints(text: str) -> list:
    try:
        values = [int(x) for x in text.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r}: expected K[,K...]') from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: expected K >= 1')
    return values


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument('--config', required=True,
                   help='the plain mmpretrain config (baseline arm)')
    p.add_argument('--gpt4image-config', required=True,
                   help='your GPT4Image config (its store: per-image or '
                   'class-level)')
    p.add_argument('--arms', default='baseline,gpt4image,classname,random',
                   help='comma list of registered arms, or all (default: '
                   '%(default)s)')
    p.add_argument('--seeds', type=int, default=3,
                   help='train every arm with seeds 0..N-1 (default 3)')
    p.add_argument('--work-dir', default='work_dirs/experiment')
    p.add_argument('--store', default=None,
                   help="the gpt4image arm's store (default: the config's)")
    p.add_argument('--shots', type=_ints, default=[],
                   help='K[,K...]: also train every arm on K images per '
                   'class (a seeded subset, the same for every arm/seed)')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='key=value overrides for every arm (as train.py)')
    p.add_argument('--parallel', type=int, default=1,
                   help='runs at once on this machine (one device each '
                   'where there are several)')
    p.add_argument('--threads', type=int, default=None,
                   help='torch threads per run (default: cores / parallel)')
    p.add_argument('--descriptions', default=None,
                   help="the store's descriptions JSONL: their analysis "
                   'goes into the report')
    p.add_argument('--class-names', metavar='FILE', default=None,
                   help="the words texts use for the dataset's classes "
                   "(the classname arm's prompts, the analysis), as "
                   "caption/analyze read it (default: folder names with "
                   'underscores as spaces)')
    p.add_argument('--custom-imports', nargs='+', default=[],
                   metavar='MODULE', help='modules that register more arms '
                   '(gpt4image_mm.experiment.register_arm)')
    p.add_argument('--title', default='GPT4Image experiment')
    p.add_argument('--run-timeout', type=float, default=None,
                   metavar='SECONDS',
                   help="kill a run whose log has not grown for SECONDS (a "
                   'stuck data loader, a dead mount) and report it as '
                   'failed; the others go on (default: no limit)')
    p.add_argument('--supersede', action='store_true',
                   help='with --print-commands: move runs planned with '
                   'other settings aside (to <folder>.superseded-<key>) '
                   'so the new ones can be planned; make sure no job '
                   'still writes them')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--print-commands', action='store_true',
                      help='print the unfinished runs as shell lines (for '
                      'a scheduler) instead of running them')
    mode.add_argument('--report-only', action='store_true',
                      help='collect the finished runs into the report')
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.print_commands:
        with stdout_for_lines_only() as lines:
            return _run(args, lines)
    return _run(args, sys.stdout)


def _run(args: argparse.Namespace, lines: TextIO) -> int:
    from gpt4image_mm.cli.caption import import_custom_modules
    from gpt4image_mm.experiment.arms import parse_arms
    from gpt4image_mm.experiment.cache import children_die_with_us
    from gpt4image_mm.experiment.pipeline import run_experiment
    from gpt4image_mm.experiment.plan import ExperimentSettings
    from gpt4image_mm.utils.errors import ToolError
    import_custom_modules(args.custom_imports)
    try:
        arms = parse_arms(args.arms)
    except ValueError as e:
        raise ToolError(f'--arms: {e}') from None
    if args.seeds < 1 or args.parallel < 1:
        raise ToolError('--seeds and --parallel must be at least 1')
    if args.run_timeout is not None and args.run_timeout <= 0:
        raise ToolError('--run-timeout must be a positive number of seconds')
    if args.supersede and not args.print_commands:
        raise ToolError('--supersede goes with --print-commands (a training '
                        'run moves superseded runs aside by itself)')
    s = ExperimentSettings(
        config=args.config, gpt4image_config=args.gpt4image_config,
        work_dir=args.work_dir, arms=arms, seeds=args.seeds,
        cfg_options=list(args.cfg_options), store=args.store,
        shots=args.shots, parallel=args.parallel, threads=args.threads,
        descriptions=args.descriptions, class_names=args.class_names,
        title=args.title, run_timeout=args.run_timeout,
        supersede=args.supersede)
    with narration_on_stdout(), children_die_with_us(), \
            contextlib.redirect_stdout(lines):
        if not (args.print_commands or args.report_only):
            s.parallel = capped_parallel(s.parallel)
        return run_experiment(s, print_commands=args.print_commands,
                              report_only=args.report_only)


def capped_parallel(parallel: int) -> int:
    """At most one run per core: more only slows every run down."""
    cores = len(os.sched_getaffinity(0)) if hasattr(
        os, 'sched_getaffinity') else (os.cpu_count() or 1)
    if parallel > cores:
        logger.warning('--parallel %d: this machine gives this process %d '
                       'core(s); running %d at a time', parallel, cores,
                       cores)
        return cores
    return parallel


@contextlib.contextmanager
def stdout_for_lines_only() -> Iterator[TextIO]:
    """``--print-commands``: stdout carries the shell lines alone (it is fed
    to a scheduler). Everything else written to stdout meanwhile -- a
    ``--custom-imports`` module's print, a library writing to file
    descriptor 1, a child tool -- goes to stderr; the lines go to a copy
    of the real stdout, which this yields."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    lines = os.fdopen(os.dup(saved), 'w', encoding='utf-8')
    old = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield lines
    finally:
        lines.flush()
        lines.close()
        sys.stdout = old
        os.dup2(saved, 1)
        os.close(saved)


def narration_on_stdout() -> ContextManager[None]:
    """While a command runs: the experiment's narration (step banners, a
    line per finished run: INFO records of this package's loggers) on
    stdout, ahead of the report it leads to."""
    from gpt4image_mm.utils.errors import terminal_logging
    return terminal_logging('gpt4image_mm.experiment', 'stdout')
