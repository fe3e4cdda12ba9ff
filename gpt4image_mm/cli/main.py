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
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

from gpt4image_mm.utils import register_all_modules
from gpt4image_mm.utils.errors import run_tool
from gpt4image_mm.version import __version__

Configure = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


class Command(NamedTuple):
    """Where a subcommand's ``configure`` function lives, and its help line.

    ``light``: the command imports torch, mmengine, mmpretrain or
    transformers only where it uses them and registers the package's
    components itself where it needs them (``gpt4image_cli``'s light start);
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
        'CSV (key,text) or JSON {key: text} -> descriptions', light=True),
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
        configure = configure_function(name)
        # only the command named reads argv (another's --custom-imports
        # is not caption's)
        extra = ({'argv': list(argv) if name == chosen else []}
                 if argv is not None and 'argv' in
                 inspect.signature(configure).parameters else {})
        configure(sub.add_parser(name, help=cmd.help, description=cmd.help),
                  **extra)
    return parser


def parse_and_run(name: str, argv: Optional[Sequence[str]], prog: str,
                  configure: Optional[Configure] = None) -> int:
    """Subcommand ``name`` as its own program ``prog`` (``argv`` None: the
    process's arguments), registering the plugin first unless the command
    is light; errors propagate (for callers in Python and tests)."""
    parser = (configure or configure_function(name))(
        argparse.ArgumentParser(prog=prog, description=COMMANDS[name].help))
    args = parser.parse_args(None if argv is None else list(argv))
    return run_parsed(name, args)


def run_parsed(name: str, args: argparse.Namespace) -> int:
    """Run a parsed command: the plugin registered first unless light."""
    if not COMMANDS[name].light:
        register_all_modules()
    return args.handler(args)


def run_subcommand(name: str, argv: Optional[Sequence[str]],
                   prog: str) -> int:
    """A ``tools/*.py`` script: subcommand ``name`` under the script's own
    name, every error one scrubbed line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_tool(lambda a: parse_and_run(name, a, prog), argv)


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
