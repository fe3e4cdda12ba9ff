"""``tools/caption.py``: the command line over :func:`caption`.

Exit status (:mod:`gpt4image_mm.cli_errors`, also in docs/captioning.md):

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
import json
import sys
from typing import Any, Dict, List, Optional, Sequence, Union

from ..cli_errors import run_tool
from ..openai_client import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from ..sharding import parse_shard
from .base import FatalError, Scrubber
from .merge import merge
from .pricing import CostMeter, load_prices
from .prompts import TEXT_SYSTEM, class_text_prompts, image_prompts
from .runner import caption_async, estimate
from .sources import (
    Plan,
    plan_from_dataset,
    plan_from_images,
    plan_per_class,
    read_class_names,
)

BACKENDS = ('openai', 'openai-batch', 'transformers')


def build_plan(*, config: Optional[str] = None, split: str = 'train',
               images: Optional[str] = None,
               classes: Union[None, str, Sequence[str]] = None,
               per_class: Optional[int] = None, per_image: int = 1,
               prompt: str = 'generic',
               cfg_options: Optional[dict] = None) -> Plan:
    """The work items of the chosen input (see :mod:`.sources`)."""
    if per_class:
        if classes is not None:
            names = (read_class_names(classes) if isinstance(classes, str)
                     else list(classes))
        elif config:
            from ..datasets.from_config import build_split_dataset
            from ..keys import class_names
            names = list(class_names(build_split_dataset(config, split,
                                                         cfg_options)))
        else:
            raise ValueError('--per-class needs --config or --classes')
        return plan_per_class(names, per_class, class_text_prompts(prompt))
    prompts = image_prompts(prompt)
    if (config is None) == (images is None):
        raise ValueError('give exactly one of --config and --images')
    if images is not None:
        return plan_from_images(images, prompts, per_image)
    from ..datasets.from_config import build_split_dataset
    return plan_from_dataset(build_split_dataset(config, split, cfg_options),
                             prompts, per_image)


def local_model_path(model: str) -> str:
    """``--model`` for the transformers backend: a short name of a bundled
    model (``smollm2``) becomes its file; a missing one is a fatal error that
    says where the file should be and how to install it."""
    from ..embedding.assets import resolve_bundled_llm
    try:
        return resolve_bundled_llm(model)
    except FileNotFoundError as e:
        raise FatalError(str(e)) from None


def caption(out: str, *, backend: str = 'openai', model: str = '',
            base_url: Optional[str] = None,
            api_key_env: Optional[str] = None,
            config: Optional[str] = None, split: str = 'train',
            images: Optional[str] = None,
            classes: Union[None, str, Sequence[str]] = None,
            per_class: Optional[int] = None, per_image: int = 1,
            prompt: str = 'generic', system: Optional[str] = None,
            concurrency: int = 16, batch_size: int = 8, rpm: float = 0,
            tpm: float = 0, max_tokens: int = 300,
            temperature: Optional[float] = None,
            repetition_penalty: Optional[float] = None,
            timeout: float = DEFAULT_TIMEOUT,
            max_retries: int = DEFAULT_MAX_RETRIES, detail: str = 'auto',
            max_side: int = 512,
            jpeg_quality: int = 85, shard: Optional[str] = None,
            limit: Optional[int] = None, max_cost: Optional[float] = None,
            dry_run: bool = False, price_table: Optional[str] = None,
            device: str = 'auto', dtype: str = 'auto', seed: int = 0,
            poll_interval: float = 30.0, batch_max_requests: int = 50_000,
            batch_max_bytes: int = 190 << 20, batch_max_active: int = 0,
            wait: bool = True, abort_after_failures: int = 50,
            progress: Optional[bool] = None, handle_signals: bool = False,
            cfg_options: Optional[dict] = None) -> Dict[str, Any]:
    """Caption a dataset / image folder / class list into ``out``.

    Returns the run summary (``ok`` False when failures are left) or, with
    ``dry_run``, the estimate. Raises :class:`FatalError` for conditions no
    retry can fix.
    """
    if backend not in BACKENDS:
        raise ValueError(f'--backend {backend!r}: one of {BACKENDS}')
    if not model:
        raise ValueError('--model is required')
    if backend == 'transformers':
        model = local_model_path(model)
    plan = build_plan(config=config, split=split, images=images,
                      classes=classes, per_class=per_class,
                      per_image=per_image, prompt=prompt,
                      cfg_options=cfg_options)
    if plan.text_only and backend == 'openai-batch':
        pass  # fine: text-only lines in the batch file
    if system is None and plan.text_only:
        system = TEXT_SYSTEM
    shard_t = parse_shard(shard)
    meter = CostMeter(model, load_prices(price_table),
                      batch=backend == 'openai-batch')
    if dry_run:
        est = estimate(plan, meter, shard=shard_t, out=out,
                       max_side=max_side, detail=detail,
                       max_tokens=max_tokens, limit=limit, system=system)
        est['backend'] = backend
        return est
    if backend in ('openai', 'openai-batch'):
        from ..openai_client import check_served_model
        check_served_model(base_url, api_key_env, model, timeout)
    if backend == 'openai-batch':
        from .batch_api import BatchBackend
        bb = BatchBackend(model, base_url, api_key_env=api_key_env,
                          max_tokens=max_tokens, temperature=temperature,
                          detail=detail, system=system,
                          poll_interval=poll_interval,
                          max_requests=batch_max_requests,
                          max_bytes=batch_max_bytes,
                          max_active=batch_max_active, wait=wait,
                          max_retries=max_retries)
        summary = asyncio.run(bb.run(plan, out, shard=shard_t, limit=limit,
                                     max_cost=max_cost, meter=meter,
                                     max_side=max_side,
                                     jpeg_quality=jpeg_quality,
                                     progress=progress))
        return summary.as_dict()
    scrub = Scrubber()
    if backend == 'openai':
        from .openai_api import OpenAIBackend
        be: Any = OpenAIBackend(model, base_url, api_key_env=api_key_env,
                                concurrency=concurrency,
                                max_tokens=max_tokens,
                                temperature=temperature, timeout=timeout,
                                max_retries=max_retries, detail=detail,
                                system=system)
        scrub = be.scrub
    else:
        from .local_hf import TransformersLLM, TransformersVLM
        cls = TransformersLLM if plan.text_only else TransformersVLM
        be = cls(model, device=device, dtype=dtype, batch_size=batch_size,
                 max_tokens=max_tokens, temperature=temperature, seed=seed,
                 system=system if plan.text_only else None,
                 repetition_penalty=repetition_penalty)
    summary = asyncio.run(caption_async(
        plan, be, out, shard=shard_t, limit=limit, max_cost=max_cost,
        meter=meter, rpm=rpm, tpm=tpm, max_side=max_side,
        jpeg_quality=jpeg_quality, detail=detail,
        abort_after_failures=abort_after_failures, progress=progress,
        scrub=scrub, handle_signals=handle_signals))
    return summary.as_dict()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every default (options without help text too)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        if '%(default)' in text or action.default in (None, False,
                                                       argparse.SUPPRESS):
            return text
        return f'{text} (default: %(default)s)'.lstrip()


def _run_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog='caption.py', formatter_class=_HelpFormatter,
        description='Describe every training image with a multimodal LLM '
        '(GPT4Image stage 1). Resumable: rerun the same command to '
        'continue. `caption.py merge OUT PART...` joins shards.')
    src = ap.add_argument_group('input')
    src.add_argument('--config', help='mmpretrain config: caption its '
                     'dataset with the keys training uses')
    src.add_argument('--split', default='train', choices=('train', 'val',
                                                          'test'),
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
    src.add_argument('--cfg-options', nargs='+', default=None,
                     help='override config settings, key=value')
    ap.add_argument('--out', required=True, help='descriptions JSONL '
                    '(appended to; resumes)')
    be = ap.add_argument_group('backend')
    be.add_argument('--backend', default='openai', choices=BACKENDS,
                    help='openai: any OpenAI-compatible server; '
                    'transformers: a local model in this process')
    be.add_argument('--model', required=True, help='model name (API), or '
                    'for --backend transformers a local directory, hub id, '
                    '.gguf file or `smollm2` (the bundled SmolLM2-135M GGUF)')
    be.add_argument('--base-url', help='OpenAI-compatible endpoint, e.g. '
                    'http://localhost:8000/v1 (vLLM)')
    be.add_argument('--api-key-env', default=None, metavar='VAR',
                    help='environment variable holding the key for '
                    '--base-url (default: OPENAI_API_KEY, sent only to '
                    'api.openai.com; other endpoints get no key)')
    be.add_argument('--concurrency', type=int, default=16,
                    help='API requests in flight at once')
    be.add_argument('--rpm', type=float, default=0, help='requests/min '
                    'limit (0: none)')
    be.add_argument('--tpm', type=float, default=0, help='tokens/min '
                    'limit (0: none)')
    be.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT,
                    help='seconds per API request')
    be.add_argument('--max-retries', type=int, default=DEFAULT_MAX_RETRIES,
                    help='API retries per request (rate limits, 5xx)')
    be.add_argument('--max-tokens', type=int, default=300,
                    help='answer length cap; answers that hit it are '
                    'counted as truncated')
    be.add_argument('--temperature', type=float, default=None,
                    help='sampling temperature (unset: greedy for '
                    'transformers, the server default for APIs)')
    be.add_argument('--repetition-penalty', type=float, default=None,
                    help='transformers: e.g. 1.2 stops small models looping')
    be.add_argument('--system', default=None, help='system prompt')
    be.add_argument('--device', default='auto', help='transformers: cpu, '
                    'cuda, cuda:1, auto')
    be.add_argument('--dtype', default='auto', help='transformers: auto, '
                    'float32, float16, bfloat16')
    be.add_argument('--batch-size', type=int, default=8,
                    help='transformers: images per generate call')
    be.add_argument('--seed', type=int, default=0,
                    help='transformers: sampling seed')
    be.add_argument('--poll-interval', type=float, default=30.0,
                    help='openai-batch: seconds between polls')
    be.add_argument('--batch-max-requests', type=int, default=50_000,
                    help='openai-batch: requests per batch file')
    be.add_argument('--batch-max-active', type=int, default=0,
                    help='openai-batch: batches in flight at once (0: any)')
    be.add_argument('--no-wait', action='store_true', help='openai-batch: '
                    'submit and exit; rerun to collect')
    pr = ap.add_argument_group('prompt and images')
    pr.add_argument('--prompt', default='generic', help='generic, class '
                    '(class name in the prompt) or a template file')
    pr.add_argument('--max-side', type=int, default=512, help='downscale '
                    'longest side before upload (0: keep)')
    pr.add_argument('--jpeg-quality', type=int, default=85,
                    help='JPEG quality of uploaded images')
    pr.add_argument('--detail', default='auto', choices=('auto', 'low',
                                                         'high'),
                    help='image detail level sent to the API')
    run = ap.add_argument_group('run control')
    run.add_argument('--shard', help='i/N: this machine takes shard i of N, '
                     'the keys whose SHA-1 is i mod N (docs/distributed.md)')
    run.add_argument('--limit', type=int, help='at most N requests this run')
    run.add_argument('--max-cost', type=float, help='stop scheduling before '
                     'the estimated spend exceeds this many USD')
    run.add_argument('--dry-run', action='store_true', help='print requests, '
                     'tokens and cost; send nothing')
    run.add_argument('--price-table', help='JSON overriding the price table')
    run.add_argument('--abort-after-failures', type=int, default=50,
                     help='stop after N failures in a row (0: never)')
    run.add_argument('--no-progress', action='store_true',
                     help='no progress bar / periodic progress lines')
    return ap


def _cfg_options(items: Optional[List[str]]) -> Optional[dict]:
    if not items:
        return None
    from mmengine.config import DictAction
    ns = argparse.Namespace()
    DictAction(option_strings=[], dest='o')(None, ns, items)
    return ns.o


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool; every error ends as one line and an exit code."""
    return run_tool(_main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: List[str]) -> int:
    if argv and argv[0] == 'merge':
        mp = argparse.ArgumentParser(prog='caption.py merge',
                                     description='join shard outputs')
        mp.add_argument('out')
        mp.add_argument('parts', nargs='+')
        mp.add_argument('--overwrite', action='store_true')
        a = mp.parse_args(argv[1:])
        print(json.dumps(merge(a.out, a.parts, a.overwrite)))
        return 0
    a = _run_parser().parse_args(argv)
    res = caption(
        a.out, backend=a.backend, model=a.model, base_url=a.base_url,
        api_key_env=a.api_key_env, config=a.config, split=a.split,
        images=a.images, classes=a.classes, per_class=a.per_class,
        per_image=a.per_image, prompt=a.prompt, system=a.system,
        concurrency=a.concurrency, batch_size=a.batch_size, rpm=a.rpm,
        tpm=a.tpm, max_tokens=a.max_tokens, temperature=a.temperature,
        repetition_penalty=a.repetition_penalty,
        timeout=a.timeout, max_retries=a.max_retries, detail=a.detail,
        max_side=a.max_side, jpeg_quality=a.jpeg_quality, shard=a.shard,
        limit=a.limit, max_cost=a.max_cost, dry_run=a.dry_run,
        price_table=a.price_table, device=a.device, dtype=a.dtype,
        seed=a.seed, poll_interval=a.poll_interval,
        batch_max_requests=a.batch_max_requests,
        batch_max_active=a.batch_max_active, wait=not a.no_wait,
        abort_after_failures=a.abort_after_failures,
        progress=False if a.no_progress else None, handle_signals=True,
        cfg_options=_cfg_options(a.cfg_options))
    if a.dry_run:
        print(json.dumps(res, indent=1))
        return 0
    _print_summary(res)
    return exit_code(res)


def exit_code(res: Dict[str, Any]) -> int:
    """The exit status of a run summary (see the module doc)."""
    if res.get('fatal'):
        return 2
    if res.get('signal'):
        return 128 + int(res['signal'])
    return 0 if res['ok'] else 1


def _print_summary(res: Dict[str, Any]) -> None:
    from .runner import Summary
    fields = {k: v for k, v in res.items() if k != 'ok'}
    print(Summary(**fields).format(), file=sys.stderr)
    print(json.dumps(res), flush=True)
