"""``gpt4image``: the one console entry point, a subcommand per tool.

    gpt4image --help
    gpt4image embed D.jsonl --encoder MODEL_DIR --out STORE
    gpt4image analyze D.jsonl --store STORE --per-class --out report/

Every command module exposes ``configure_parser(parser)``, which adds the
command's arguments and ``parser.set_defaults(handler=...)`` (a callable of
the parsed namespace returning the exit code). This module builds the
subparsers from :data:`COMMANDS` and runs the handler inside
:func:`~gpt4image_mm.utils.errors.run_tool` (one scrubbed line, the project's
exit codes). ``tools/*.py`` are thin wrappers over :func:`run_subcommand`,
so both spellings run the same code.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from gpt4image_mm.utils import register_all_modules
from gpt4image_mm.utils.errors import run_tool
from gpt4image_mm.version import __version__

Configure = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


class Command(NamedTuple):
    """Where a subcommand's ``configure`` function lives, and its help line.

    ``light``: the command imports torch, mmengine, mmpretrain or
    transformers only where it uses them and registers the package's
    components itself where it needs them (the light start);
    every other command runs after :func:`gpt4image_mm.utils.register_all_modules`.
    """

    module: str
    function: str
    help: str
    light: bool = False


COMMANDS: Dict[str, Command] = {
    'caption': Command(
        'gpt4image_mm.cli.caption', 'configure_parser',
        'describe training images with a multimodal LLM', light=True),
    'caption-merge': Command(
        'gpt4image_mm.cli.caption', 'configure_merge_parser',
        'join the outputs of caption --shard i/N runs', light=True),
    'embed': Command(
        'gpt4image_mm.cli.embed', 'configure_parser',
        'descriptions -> embedding store (frozen text encoder)'),
    'embed-merge': Command(
        'gpt4image_mm.cli.embed', 'configure_merge_parser',
        'join the part stores of embed --shard i/N runs'),
    'import-gpt4image': Command(
        'gpt4image_mm.cli.embed', 'configure_import_gpt4image_parser',
        "the paper's released descriptions -> descriptions"),
    'import-gpt4image-embeddings': Command(
        'gpt4image_mm.cli.embed',
        'configure_import_gpt4image_embeddings_parser',
        "the paper's text-embedding tensor -> embedding store"),
    'import-map': Command(
        'gpt4image_mm.cli.embed', 'configure_import_map_parser',
        'captions of other tools (LLaVA, COCO, JSON, CSV)', light=True),
    'analyze': Command(
        'gpt4image_mm.cli.analyze', 'configure_parser',
        'measure descriptions (and a store) before training', light=True),
    'query': Command(
        'gpt4image_mm.cli.query', 'configure_parser',
        'classify or search images by text through the neck'),
    'strip': Command(
        'gpt4image_mm.cli.strip', 'configure_parser',
        'drop the alignment neck from a checkpoint (deploy)'),
    'train': Command(
        'gpt4image_mm.cli.train', 'configure_parser',
        'train a config (mmpretrain train.py options)'),
    'test': Command(
        'gpt4image_mm.cli.test', 'configure_parser',
        'evaluate a checkpoint (mmpretrain test.py options)'),
    'configs': Command(
        'gpt4image_mm.cli.configs', 'configure_parser',
        'list the shipped configs (gpt4image_mm::NAME)', light=True),
    'experiment': Command(
        'gpt4image_mm.cli.experiment', 'configure_parser',
        'does the text help? arms x seeds with paired intervals'),
}


#: ``tools/<script>.py WORD ...``: a script's first word that names another
#: subcommand (``tools/embed.py merge`` is ``gpt4image embed-merge``).
FIRST_WORDS: Dict[str, Dict[str, str]] = {
    'caption': {'merge': 'caption-merge'},
    'embed': {'merge': 'embed-merge',
              'import-gpt4image': 'import-gpt4image',
              'import-gpt4image-embeddings': 'import-gpt4image-embeddings',
              'import-map': 'import-map'},
}


class DictAction(argparse.Action):
    """mmengine's ``DictAction`` (``--cfg-options key=value``), imported
    when the option is given: building a parser imports no mmengine."""

    def __call__(self, parser: argparse.ArgumentParser,
                 namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        from mmengine.config import DictAction as MMEngineDictAction
        MMEngineDictAction(self.option_strings, self.dest, nargs=self.nargs)(
            parser, namespace, values, option_string)


def configure_function(name: str) -> Configure:
    """The ``configure`` function of subcommand ``name`` (imported late, so
    ``--help`` does not load every tool's dependencies)."""
    cmd = COMMANDS[name]
    return getattr(importlib.import_module(cmd.module), cmd.function)


def configure(name: str, parser: argparse.ArgumentParser,
              argv: Optional[Sequence[str]] = None
              ) -> argparse.ArgumentParser:
    """Add subcommand ``name``'s arguments to ``parser``; ``argv`` goes to
    the commands that read it before parsing (caption's
    ``--custom-imports`` registers backends whose options it must know)."""
    function = configure_function(name)
    extra = ({'argv': argv} if argv is not None and 'argv' in
             inspect.signature(function).parameters else {})
    return function(parser, **extra)


def build_parser(argv: Optional[Sequence[str]] = None
                 ) -> argparse.ArgumentParser:
    """``gpt4image`` with one subparser per entry of :data:`COMMANDS`;
    ``argv`` goes to the commands that read it before parsing (caption's
    ``--custom-imports`` registers backends whose options it must know)."""
    parser = argparse.ArgumentParser(
        prog='gpt4image', description='GPT4Image for MMPretrain: describe '
        'images, embed the descriptions, analyse, query, deploy. '
        'Each subcommand is also a script in tools/ (docs/get_started.md).')
    parser.add_argument('--version', action='version',
                        version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND',
                                required=True)
    chosen = next((a for a in argv or () if a in COMMANDS), None)
    for name, cmd in COMMANDS.items():
        # only the command named reads argv (another's --custom-imports
        # is not caption's)
        configure(name, sub.add_parser(name, help=cmd.help,
                                       description=cmd.help),
                  None if argv is None else
                  (list(argv) if name == chosen else []))
    return parser


def parse_and_run(name: str, argv: Optional[Sequence[str]], prog: str,
                  configure_parser: Optional[Configure] = None) -> int:
    """Subcommand ``name`` as its own program ``prog`` (``argv`` None: the
    process's arguments), registering the plugin first unless the command
    is light; errors propagate (for callers in Python and tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog,
                                     description=COMMANDS[name].help)
    if configure_parser is None:
        configure(name, parser, argv)
    else:
        configure_parser(parser)
    return run_parsed(name, parser.parse_args(argv))


def run_parsed(name: str, args: argparse.Namespace) -> int:
    """Run a parsed command: the plugin registered first unless light."""
    if not COMMANDS[name].light:
        register_all_modules()
    return args.handler(args)


def script_command(name: str, argv: Sequence[str], prog: str
                   ) -> Tuple[str, List[str], str]:
    """``(subcommand, its argv, its prog)`` of ``tools/<prog> ARGV``: a
    first word of :data:`FIRST_WORDS` names the subcommand."""
    argv = list(argv)
    words = FIRST_WORDS.get(name, {})
    if argv and argv[0] in words:
        return words[argv[0]], argv[1:], f'{prog} {argv[0]}'
    return name, argv, prog


def run_script(name: str, argv: Optional[Sequence[str]], prog: str) -> int:
    """A ``tools/*.py`` script from Python (``argv`` None: the process's
    arguments); errors propagate."""
    return parse_and_run(*script_command(
        name, sys.argv[1:] if argv is None else argv, prog))


def run_subcommand(name: str, argv: Optional[Sequence[str]],
                   prog: str) -> int:
    """A ``tools/*.py`` script: subcommand ``name`` (or the one its first
    word names) under the script's own name, every error one scrubbed line
    and an exit code. Its start is as light as ``gpt4image``'s: only the
    command's own module is imported before the arguments are read."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_tool(lambda a: run_script(name, a, prog), argv)


def main(argv: Optional[List[str]] = None) -> int:
    """The ``gpt4image`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def run(argv: List[str]) -> int:
        # inside run_tool: a bad --custom-imports is one line
        args = build_parser(argv).parse_args(argv)
        return run_parsed(args.command, args)
    return run_tool(run, argv)


if __name__ == '__main__':
    sys.exit(main())
