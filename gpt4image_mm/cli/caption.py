"""``tools/caption.py`` and ``gpt4image caption``: the command line over
:func:`caption`, built from ``CAPTION_BACKENDS``.

Each registered backend declares its own options
(:meth:`~.base.CaptionBackend.add_arguments`) and builds itself from the
parsed ones, so this module names no backend. ``--custom-imports MODULE``
imports modules that register more backends before the parser is built
(docs/extending.md).

Exit status (:mod:`gpt4image_mm.utils.errors`, also in docs/captioning.md):

* 0   all done, or stopped on purpose by --limit / --max-cost;
* 1   failures are left in the output (rerun to retry them);
* 2   fix something first (bad key, unknown model, bad arguments), or --out
      is locked by another run;
* 3   the server is unreachable or keeps failing (rerun later to resume);
* 128+N  stopped by signal N: 130 for SIGINT (Ctrl-C), 143 for SIGTERM; the
      answers received are in the output, rerun to continue.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Set, Union

from gpt4image_mm.captioning.base import CaptionBackend, CaptionOptions
from gpt4image_mm.captioning.local_hf import local_model_path  # noqa: F401  (its former home)
from gpt4image_mm.captioning.merge import merge
from gpt4image_mm.captioning.pricing import CostMeter, load_prices
from gpt4image_mm.captioning.prompts import (
    TEXT_SYSTEM,
    class_text_prompts,
    image_prompts,
)
from gpt4image_mm.captioning.registry import CAPTION_BACKENDS
from gpt4image_mm.captioning.runner import Summary, estimate
from gpt4image_mm.captioning.sources import (
    Plan,
    plan_from_dataset,
    plan_from_images,
    plan_per_class,
    read_class_names,
)
from gpt4image_mm.cli.main import DictAction
from gpt4image_mm.utils.errors import InputError, ToolError
from gpt4image_mm.utils.files import real_path

DEFAULT_BACKEND = 'openai'
DESCRIPTION = ('Describe every training image with a multimodal LLM '
               '(GPT4Image stage 1). Resumable: rerun the same command to '
               'continue. `caption.py merge OUT PART...` joins shards.')


def build_plan(*, config: Optional[str] = None, split: str = 'train',
               images: Optional[str] = None,
               classes: Union[None, str, Sequence[str]] = None,
               per_class: Optional[int] = None, per_image: int = 1,
               prompt: str = 'generic',
               cfg_options: Optional[dict] = None,
               class_names_file: Optional[str] = None) -> Plan:
    """The work items of the chosen input (see :mod:`.sources`);
    ``class_names_file`` maps class folders to the names prompts say."""
    if per_class:
        if classes is not None:
            names = (read_class_names(classes) if isinstance(classes, str)
                     else list(classes))
        elif config:
            from gpt4image_mm.datasets.from_config import build_split_dataset
            from gpt4image_mm.utils.keys import class_names
            names = list(class_names(build_split_dataset(config, split,
                                                         cfg_options)))
        else:
            raise InputError('--per-class needs --config or --classes')
        return plan_per_class(names, per_class, class_text_prompts(prompt),
                              class_names_file)
    prompts = image_prompts(prompt)
    if (config is None) == (images is None):
        raise InputError('give exactly one of --config and --images')
    if images is not None:
        return plan_from_images(images, prompts, per_image,
                                class_names_file)
    from gpt4image_mm.datasets.from_config import build_split_dataset
    return plan_from_dataset(build_split_dataset(config, split, cfg_options),
                             prompts, per_image, class_names_file)


# -- the backends -----------------------------------------------------------
def backend_names() -> List[str]:
    """The registered backends (the built-in ones imported first)."""
    CAPTION_BACKENDS.import_from_location()
    for name, obj in CAPTION_BACKENDS.module_dict.items():
        if not (isinstance(obj, type) and issubclass(obj, CaptionBackend)):
            raise ToolError(f'caption backend {name!r} is registered as '
                            f'{obj!r}, not a CaptionBackend subclass')
    return sorted(CAPTION_BACKENDS.module_dict)


def backend_class(name: str) -> type:
    """The registered backend class ``name``; ValueError names the
    others."""
    names = backend_names()
    if name not in names:
        raise InputError(f'--backend {name!r}: one of {names} (a module '
                         'given to --custom-imports can register more)')
    return CAPTION_BACKENDS.get(name)


def import_custom_modules(modules: Optional[Sequence[str]]) -> None:
    """Import the modules that register backends (``--custom-imports``)."""
    for name in modules or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ToolError(f'--custom-imports {name}: cannot import it '
                            f'({type(e).__name__}: {e}); is its folder on '
                            'PYTHONPATH?') from None


class _PreScanError(Exception):
    pass


class _PreScan(argparse.ArgumentParser):
    """Reads ``--custom-imports`` alone; the full parser reports errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _PreScanError(message)


def custom_imports_in(argv: Sequence[str]) -> List[str]:
    """The ``--custom-imports`` modules of a command line, read before the
    parser is built (their backends add options to it)."""
    pre = _PreScan(add_help=False)
    pre.add_argument('--custom-imports', nargs='+', default=[])
    try:
        return pre.parse_known_args(list(argv))[0].custom_imports
    except _PreScanError:
        return []


# -- the parser -------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every default (options without help text too)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        shown = not any(action.default is v for v in (
            None, False, True, argparse.SUPPRESS))  # 0 is a default shown
        if '%(default)' in text or not shown:
            return text
        return f'{text} (default: %(default)s)'.lstrip()


class _OptionsOnce:
    """An argument group that adds each option once: backends may share
    one (both OpenAI backends declare --base-url)."""

    def __init__(self, group: Any, declared: Set[str]):
        self.group, self.declared = group, declared

    def add_argument(self, *flags: str, **kwargs: Any) -> Any:
        if any(f in self.declared for f in flags):
            return None
        self.declared.update(flags)
        return self.group.add_argument(*flags, **kwargs)


def _input_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group('input')
    src.add_argument('--config', help='mmpretrain config: caption its '
                     'dataset with the keys training uses')
    src.add_argument('--split', default='train',
                     choices=('train', 'val', 'test'),
                     help='dataset split of --config')
    src.add_argument('--images', help='caption every image below DIR '
                     '(key = path relative to DIR)')
    src.add_argument('--per-class', type=int, metavar='K', help='class-level '
                     'mode: K text-only descriptions per class name, no '
                     'images sent')
    src.add_argument('--classes', help='class names file (one per line) for '
                     '--per-class without --config')
    src.add_argument('--per-image', type=int, default=1, metavar='K',
                     help='descriptions per image (keys <key>#k)')
    src.add_argument('--cfg-options', nargs='+', action=DictAction,
                     default=None, help='override config settings, '
                     'key=value')
    parser.add_argument('--out', required=True, help='descriptions JSONL '
                        '(appended to; resumes)')


def _backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend and the answer options every backend takes, then each
    registered backend's own options in a group of its own."""
    names = backend_names()
    be = parser.add_argument_group('backend')
    be.add_argument('--backend', default=DEFAULT_BACKEND, choices=names,
                    help='; '.join(f'{n}: {CAPTION_BACKENDS.get(n).help}'
                                   for n in names).replace('%', '%%'))
    be.add_argument('--model', required=True, help='model name (API), or '
                    'for --backend transformers a local directory, hub id, '
                    '.gguf file or `smollm2` (the bundled SmolLM2-135M GGUF)')
    be.add_argument('--max-tokens', type=int, default=300,
                    help='answer length cap; answers that hit it are '
                    'counted as truncated')
    be.add_argument('--temperature', type=float, default=None,
                    help='sampling temperature (unset: greedy for '
                    'transformers, the server default for APIs)')
    be.add_argument('--system', default=None, help='system prompt')
    be.add_argument('--custom-imports', nargs='+', metavar='MODULE',
                    default=None, help='import these modules first: they '
                    'may register more backends (docs/extending.md)')
    declared: Set[str] = set()
    for name in names:
        cls = CAPTION_BACKENDS.get(name)
        group = parser.add_argument_group(f'--backend {name}', cls.help)
        cls.add_arguments(_OptionsOnce(group, declared))


def _prompt_arguments(parser: argparse.ArgumentParser) -> None:
    pr = parser.add_argument_group('prompt and images')
    pr.add_argument('--prompt', default='generic', help='generic, class '
                    '(class name in the prompt) or a template file')
    pr.add_argument('--class-names', metavar='FILE', help='names the '
                    'prompts say for the class folders, format read from the '
                    "content: ImageNet's LOC_synset_mapping.txt or "
                    'imagenet_class_index.json, a JSON object {folder: '
                    'name}, CSV folder,name or one name per line in class '
                    "order (default: the dataset's names, or the folder "
                    'name with underscores as spaces); a changed name is '
                    'asked again on a rerun')
    pr.add_argument('--max-side', type=int, default=512, help='downscale '
                    'longest side before upload (0: keep)')
    pr.add_argument('--jpeg-quality', type=int, default=85,
                    help='JPEG quality of uploaded images')
    pr.add_argument('--detail', default='auto',
                    choices=('auto', 'low', 'high'),
                    help='image detail level sent to the API')


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group('run control')
    run.add_argument('--shard', help='i/N: this machine takes shard i of N, '
                     'the keys whose SHA-1 is i mod N (docs/distributed.md)')
    run.add_argument('--limit', type=int, help='at most N requests this run')
    run.add_argument('--max-cost', type=float, help='stop scheduling before '
                     'the estimated spend exceeds this many USD')
    run.add_argument('--rpm', type=float, default=0, help='requests/min '
                     'limit (0: none)')
    run.add_argument('--tpm', type=float, default=0, help='tokens/min '
                     'limit (0: none)')
    run.add_argument('--dry-run', action='store_true', help='print requests, '
                     'tokens and cost; send nothing')
    run.add_argument('--redo-keys', metavar='FILE', help='ask exactly these '
                     'keys again (one per line, e.g. flagged_keys.txt of '
                     'analyze_descriptions.py), even those with an answer; '
                     'the new answers supersede the old ones; rerun the '
                     'same command to continue an interrupted pass')
    run.add_argument('--price-table', help='JSON overriding the price table')
    run.add_argument('--abort-after-failures', type=int, default=50,
                     help='stop after N failures in a row (0: never)')
    run.add_argument('--no-progress', dest='progress', action='store_const',
                     const=False, default=None,
                     help='no progress bar / periodic progress lines')


def configure_parser(parser: argparse.ArgumentParser,
                     argv: Optional[Sequence[str]] = None
                     ) -> argparse.ArgumentParser:
    """Add the caption run's arguments to ``parser`` (the CLI protocol).

    ``argv`` (default ``sys.argv``) is read for ``--custom-imports`` first:
    the modules it names register backends whose options the parser
    needs.
    """
    import_custom_modules(custom_imports_in(
        sys.argv[1:] if argv is None else argv))
    parser.formatter_class = _HelpFormatter
    _input_arguments(parser)
    _backend_arguments(parser)
    _prompt_arguments(parser)
    _run_arguments(parser)
    parser.set_defaults(handler=run_from_args)
    return parser


def configure_merge_parser(
        parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``caption-merge`` / ``caption.py merge``: join shard outputs."""
    parser.add_argument('out', help='the merged descriptions JSONL')
    parser.add_argument('parts', nargs='+', help='the shard outputs')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace OUT (a descriptions file only)')
    parser.set_defaults(handler=_run_merge)
    return parser


def _run_parser(argv: Optional[Sequence[str]] = None
                ) -> argparse.ArgumentParser:
    """The parser of ``tools/caption.py``."""
    return configure_parser(argparse.ArgumentParser(
        prog='caption.py', description=DESCRIPTION), argv)


# -- running ---------------------------------------------------------------
def caption(out: str, **options: Any) -> Dict[str, Any]:
    """Caption a dataset / image folder / class list into ``out``.

    The keywords are the command line's options with ``_`` for ``-``
    (``caption.py --help``), with the same defaults: e.g.
    ``caption(out, images='imgs', model='gpt-4o-mini', concurrency=32)``;
    ``wait=False`` is ``--no-wait``, ``progress=False`` ``--no-progress``;
    ``handle_signals=True`` installs the command line's SIGINT/SIGTERM stop.
    Returns the run summary (``ok`` False when failures are left) or, with
    ``dry_run``, the estimate. Raises :class:`FatalError` for conditions no
    retry can fix.
    """
    return run_caption(keyword_options(out, options))


def keyword_options(out: str, options: Dict[str, Any]) -> CaptionOptions:
    """:func:`caption`'s keywords over the command line's defaults."""
    options = dict(options)
    handle_signals = bool(options.pop('handle_signals', False))
    mods = options.get('custom_imports') or []
    args = _run_parser(['--custom-imports', *mods] if mods else []).parse_args(
        ['--out', out, '--model', str(options.get('model') or '')])
    unknown = sorted(set(options) - set(vars(args)) - {'handler'})
    if unknown:
        raise TypeError(f'caption(): unknown option(s) {unknown}; the '
                        'options are those of caption.py --help')
    vars(args).update(options)
    return replace(CaptionOptions.from_namespace(args),
                   handle_signals=handle_signals)


def run_caption(opts: CaptionOptions) -> Dict[str, Any]:
    """One run: the plan, then the estimate (--dry-run) or the backend's
    run. The run summary (or estimate) as a dict."""
    cls = backend_class(opts.backend)
    if not opts.model:
        raise InputError('--model is required')
    opts = replace(opts, model=cls.resolve_model(opts.model))
    plan = build_plan(config=opts.config, split=opts.split,
                      images=opts.images, classes=opts.classes,
                      per_class=opts.per_class, per_image=opts.per_image,
                      prompt=opts.prompt, cfg_options=opts.cfg_options,
                      class_names_file=opts.class_names)
    if opts.system is None and plan.text_only:
        opts = replace(opts, system=TEXT_SYSTEM)
    control = opts.control(CostMeter(opts.model,
                                     load_prices(opts.price_table),
                                     batch=cls.batch_pricing))
    if control.redo is not None:
        check_redo_keys(plan, control.redo, opts.redo_keys, cls)
    if opts.dry_run:
        est = estimate(plan, control.meter, shard=control.shard,
                       out=opts.out, max_side=opts.max_side,
                       detail=opts.detail, max_tokens=opts.max_tokens,
                       limit=opts.limit, system=opts.system,
                       redo=control.redo)
        return dict(est, backend=opts.backend)
    t = time.monotonic()
    backend: CaptionBackend = cls.from_options(opts, plan)
    if getattr(backend, 'loads_model', False):  # apart from the req/s
        print(f'caption: model loaded in {time.monotonic() - t:.1f} s',
              file=sys.stderr, flush=True)
    # one output, one identity: a link to it shares its lock and sidecars
    out = real_path(opts.out)
    return asyncio.run(backend.run(plan, out, control)).as_dict()


def check_redo_keys(plan: Plan, redo: frozenset, path: str,
                    cls: type) -> None:
    """Every key of ``--redo-keys`` must be one this run can ask: a key of
    another dataset (or a typo) would be skipped silently otherwise."""
    if cls.batch_pricing:
        raise InputError('--redo-keys asks request by request: use an '
                         'online backend (e.g. --backend openai) for the '
                         'repair pass')
    missing = set(redo)
    for j in range(len(plan)):
        missing.discard(plan.keys[j])
        if not missing:
            return
    first = sorted(missing)[:3]
    raise InputError(f'--redo-keys {path}: {len(missing)} of {len(redo)} keys '
                     f'are not keys of this input, e.g. {first}; pass the '
                     'same --config/--images (and --per-image) as the run '
                     'that wrote them')


def run_from_args(args: argparse.Namespace) -> int:
    """The handler of a parsed caption command line: run, print the
    summary (JSON on stdout), return the exit status."""
    opts = replace(CaptionOptions.from_namespace(args), handle_signals=True)
    res = run_caption(opts)
    if opts.dry_run:
        print(json.dumps(res, indent=1))
        return 0
    _print_summary(res)
    return exit_code(res)


def _run_merge(args: argparse.Namespace) -> int:
    print(json.dumps(merge(args.out, args.parts, args.overwrite)))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``tools/caption.py [merge] ...`` from Python; every error ends as one
    line and an exit code."""
    from gpt4image_mm.cli.main import run_subcommand
    return run_subcommand('caption', argv, 'caption.py')


def exit_code(res: Dict[str, Any]) -> int:
    """The exit status of a run summary (see the module doc)."""
    if res.get('fatal'):
        return 2
    if res.get('signal'):
        return 128 + int(res['signal'])
    return 0 if res['ok'] else 1


def _print_summary(res: Dict[str, Any]) -> None:
    fields = {k: v for k, v in res.items() if k != 'ok'}
    print(Summary(**fields).format(), file=sys.stderr)
    print(json.dumps(res), flush=True)
