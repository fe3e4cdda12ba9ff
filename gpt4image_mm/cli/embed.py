"""The embedding commands: ``embed``, ``embed-merge`` and the importers.

    gpt4image embed DESC.jsonl --encoder MODEL_DIR --out STORE
    gpt4image embed-merge part0 part1 --out STORE
    gpt4image import-map descriptions.csv --out D.jsonl

Each ``configure_*`` function follows the CLI protocol of
:mod:`gpt4image_mm.cli.main`; ``tools/embed.py`` keeps its first-word spelling
(``embed.py merge ...``) over the same functions. See docs/embedding.md.
"""
from __future__ import annotations

import argparse
from typing import List, Optional

from gpt4image_mm.utils.errors import InputError


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``embed``: descriptions JSONL -> embedding store."""
    p.add_argument('descriptions', nargs='+',
                   help='descriptions JSONL file(s) of tools/caption.py or '
                   'an importer; per-image and per-class files may be mixed')
    p.add_argument('--encoder', required=True,
                   help='local model dir (CLIP / sentence-transformers / HF),'
                   ' openai:<model>, open_clip:<arch>/<pretrained>, or a hub '
                   'id from the local cache')
    p.add_argument('--out', required=True, help='store directory to write')
    p.add_argument('--device', default=None,
                   help='cpu, cuda, cuda:1 (default: cuda if available)')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--dtype', default='auto',
                   help='compute dtype: auto (bf16 on a GPU that has it, '
                   'else fp16 on GPU; fp32 on CPU), float32, float16, '
                   'bfloat16')
    p.add_argument('--store-dtype', default='float16',
                   choices=('float16', 'float32'))
    p.add_argument('--shard', default=None, help='i/N: embed shard i of N, '
                   'the keys whose SHA-1 is i mod N (docs/distributed.md); '
                   'merge the parts with `embed.py merge`')
    p.add_argument('--pooling', default=None,
                   help='HF encoders: mean, cls, max, last, ... (default: the '
                   "model's sentence-transformers config, else mean)")
    p.add_argument('--max-length', type=int, default=None,
                   help='token limit (default: the model\'s; 77 for CLIP)')
    _add_api_arguments(p)
    p.add_argument('--no-resume', action='store_true',
                   help='discard the progress of an interrupted run')
    p.add_argument('--force', action='store_true', help='replace a store '
                   'made from other descriptions or another encoder')
    p.add_argument('--flush-every', type=int, default=8192,
                   help='rows between progress checkpoints')
    p.add_argument('--no-progress', action='store_true')
    p.set_defaults(handler=run_embed)
    return p


def _add_api_arguments(p: argparse.ArgumentParser) -> None:
    """Options of embeddings endpoints (``--encoder openai:<model>``)."""
    from gpt4image_mm.utils.openai_client import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
    p.add_argument('--api-base', default=None,
                   help='OpenAI-compatible endpoint (vLLM, TEI, ...)')
    p.add_argument('--api-key-env', default=None, metavar='VAR',
                   help='env var holding the key for --api-base (default: '
                   'OPENAI_API_KEY, sent only to api.openai.com; other '
                   'endpoints get no key)')
    p.add_argument('--dimensions', type=int, default=None,
                   help='embeddings API: output size (text-embedding-3-*)')
    p.add_argument('--concurrency', type=int, default=4,
                   help='embeddings API: requests in flight')
    p.add_argument('--max-retries', type=int, default=DEFAULT_MAX_RETRIES,
                   help='embeddings API: retries of a failed request (the '
                   'SDK backs off and honours Retry-After)')
    p.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT,
                   help='embeddings API: seconds to wait for an answer')


def run_embed(args: argparse.Namespace) -> int:
    from gpt4image_mm.embedding.embed import embed_descriptions
    from gpt4image_mm.embedding.encoders import build_text_encoder
    from gpt4image_mm.utils.devices import resolve_device
    encoder = build_text_encoder(
        args.encoder, device=resolve_device(args.device),
        dtype=args.dtype, pooling=args.pooling, max_length=args.max_length,
        api_base=args.api_base, api_key_env=args.api_key_env,
        dimensions=args.dimensions, request_size=args.batch_size,
        concurrency=args.concurrency, max_retries=args.max_retries,
        timeout=args.timeout)
    res = embed_descriptions(
        args.descriptions, encoder, args.out, batch_size=args.batch_size,
        store_dtype=args.store_dtype, shard=args.shard,
        resume=not args.no_resume, force=args.force,
        progress=not args.no_progress, flush_every=args.flush_every)
    if res.up_to_date:
        print(f'{res.out}: up to date ({res.rows} rows of {res.dim}-d from '
              'these descriptions and this encoder); --force rebuilds')
        return 0
    print(summary_line(res, encoder.max_length))
    return 0


def summary_line(res, max_length: Optional[int]) -> str:
    """The end-of-run line: no ``None`` where a figure is unknown, and a
    rate that stays readable below one text a second."""
    if res.truncated is None or max_length is None:
        trunc = 'truncation: n/a (the API rejects over-long texts)'
    else:
        trunc = f'truncated to {max_length} tokens: {res.truncated}'
    done = res.rows - res.resumed_rows
    rate = f'{done / res.seconds:.3g} texts/s' if done and res.seconds > 0 \
        else 'no new rows'
    return (f'{res.out}: {res.rows} rows x {res.dim}-d '
            f'({res.manifest["dtype"]}) | skipped failures: {res.failures} | '
            f'{trunc} | resumed at row {res.resumed_rows} | '
            f'{res.seconds:.1f} s ({rate})')


def configure_merge_parser(p: argparse.ArgumentParser
                           ) -> argparse.ArgumentParser:
    """``embed-merge``: join ``--shard i/N`` part stores."""
    p.add_argument('parts', nargs='+')
    p.add_argument('--out', required=True)
    p.add_argument('--force', action='store_true')
    p.set_defaults(handler=run_merge)
    return p


def run_merge(args: argparse.Namespace) -> int:
    from gpt4image_mm.embedding.embed import merge_stores
    man = merge_stores(args.parts, args.out, force=args.force)
    print(f'{args.out}: {man["count"]} rows x {man["dim"]}-d merged from '
          f'{len(args.parts)} parts')
    return 0


def configure_import_gpt4image_parser(p: argparse.ArgumentParser
                                      ) -> argparse.ArgumentParser:
    """``import-gpt4image``: key the paper's released descriptions (a
    torch-saved list of strings in ImageFolder order) to a dataset."""
    p.add_argument('release', help='the .pt file')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--config', help='training config naming the dataset')
    src.add_argument('--images', help='ImageFolder root (train/ of ImageNet)')
    p.add_argument('--split', default='train')
    p.add_argument('--order', default='imagefolder',
                   choices=('imagefolder', 'dataset'))
    p.add_argument('--out', required=True, help='descriptions JSONL to write')
    p.add_argument('--force', action='store_true')
    p.set_defaults(handler=run_import_gpt4image)
    return p


def run_import_gpt4image(args: argparse.Namespace) -> int:
    from gpt4image_mm.embedding.importers import image_folder_keys, import_gpt4image
    if args.config:
        from gpt4image_mm.datasets import build_split_dataset
        from gpt4image_mm.utils.keys import dataset_keys
        keys = dataset_keys(build_split_dataset(args.config, args.split))
    else:
        keys = image_folder_keys(args.images)
    n = import_gpt4image(args.release, keys, args.out, order=args.order,
                         force=args.force)
    print(f'{args.out}: {n} descriptions')
    return 0


def configure_import_gpt4image_embeddings_parser(
        p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``import-gpt4image-embeddings``: the official N x D tensor
    (description2embedding.py output; row i = ImageFolder index i) -> a
    store keyed like the dataset."""
    from gpt4image_mm.embedding.importers import OFFICIAL_ENCODER
    p.add_argument('embeddings', help='e.g. imagenet_clip_text_emb_0_1281166'
                   '.pth')
    p.add_argument('--images', required=True,
                   help='the ImageFolder root it was made for (train/ of '
                   'ImageNet)')
    p.add_argument('--out', required=True, help='store directory to write')
    p.add_argument('--encoder-name', default=OFFICIAL_ENCODER,
                   help='encoder recorded in the manifest (default: '
                   f'{OFFICIAL_ENCODER}, 1024-d; ViT-L/14 files are 768-d: '
                   'open_clip:ViT-L-14/openai)')
    p.add_argument('--store-dtype', default='float16',
                   choices=('float16', 'float32'))
    p.add_argument('--force', action='store_true',
                   help='replace an existing store')
    p.set_defaults(handler=run_import_gpt4image_embeddings)
    return p


def run_import_gpt4image_embeddings(args: argparse.Namespace) -> int:
    from gpt4image_mm.embedding.importers import import_gpt4image_embeddings
    man = import_gpt4image_embeddings(
        args.embeddings, args.images, args.out,
        encoder_name=args.encoder_name, store_dtype=args.store_dtype,
        force=args.force)
    print(f'{args.out}: {man["count"]} rows x {man["dim"]}-d '
          f'({man["dtype"]}, {man["encoder"]})')
    return 0


def configure_import_map_parser(p: argparse.ArgumentParser
                                ) -> argparse.ArgumentParser:
    """``import-map``: captions from other tools (JSON {name: text |
    [texts]}, JSON Lines, CSV with a header, LLaVA conversations, COCO
    captions) -> descriptions JSONL, on the dataset's keys with
    --images/--config."""
    from gpt4image_mm.embedding.caption_sources import (
        DEFAULT_MAX_RECORD,
        FORMATS,
    )
    p.add_argument('source', help='a caption file: '
                   + '; '.join(f'{k}: {v}' for k, v in FORMATS.items()))
    p.add_argument('--out', required=True)
    p.add_argument('--format', default='auto',
                   choices=('auto',) + tuple(FORMATS),
                   help="the source's format (default: told by its "
                   'content)')
    p.add_argument('--max-record-mb', type=float,
                   default=DEFAULT_MAX_RECORD / 2**20,
                   help='refuse a source with a record, line or JSON value '
                   'larger than this (default: %(default)g MiB; no caption '
                   'is that long, a corrupt or endless file is)')
    onto = p.add_mutually_exclusive_group()
    onto.add_argument('--images', metavar='ROOT', help='put the captions on '
                      'the keys caption --images gives this folder: a name '
                      'is matched by '
                      'its path relative to ROOT, else by a key it ends with'
                      ' (a prefix such as coco/train2017/), else by a key '
                      'that ends with it (a bare file name) that only one '
                      'image has; a name whose folders contradict the '
                      "dataset's is not matched")
    onto.add_argument('--config', help='as --images, on the keys of the '
                      "dataset this training config uses")
    p.add_argument('--split', default='train', choices=('train', 'val',
                                                        'test'),
                   help='dataset split of --config')
    p.add_argument('--class-level', action='store_true',
                   help='keys are class names (-> class:<name> keys)')
    p.add_argument('--force', action='store_true')
    p.set_defaults(handler=run_import_map)
    return p


def _max_record(args: argparse.Namespace) -> int:
    if not args.max_record_mb > 0:
        raise InputError('--max-record-mb must be > 0')
    return int(args.max_record_mb * 2**20)


def run_import_map(args: argparse.Namespace) -> int:
    if args.images or args.config:
        if args.class_level:
            raise InputError('--class-level keys are class names: drop '
                             '--images/--config')
        return _import_onto_dataset(args)
    from gpt4image_mm.embedding.map_import import import_map
    n = import_map(args.source, args.out, class_level=args.class_level,
                   force=args.force, fmt=args.format,
                   max_record=_max_record(args))
    print(f'{args.out}: {n} descriptions')
    return 0


def _import_onto_dataset(args: argparse.Namespace) -> int:
    from gpt4image_mm.embedding.map_import import import_onto_dataset
    if args.images:
        import os

        from gpt4image_mm.utils.image_files import image_keys
        if not os.path.isdir(args.images):
            raise InputError(f'--images {args.images}: not a directory')
        keys = image_keys(args.images)  # the keys caption --images gives
        source = {'root': os.path.realpath(args.images), 'split': None}
    else:
        from gpt4image_mm.datasets.from_config import build_split_dataset
        from gpt4image_mm.utils.keys import dataset_keys, dataset_source
        ds = build_split_dataset(args.config, args.split)
        keys, source = dataset_keys(ds), dataset_source(ds)
    if not keys:
        raise InputError(f'{args.images or args.config}: no images')
    report = import_onto_dataset(args.source, keys, args.out,
                                 force=args.force, source=source,
                                 fmt=args.format,
                                 max_record=_max_record(args))
    print(report.format())
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``tools/embed.py [FIRST-WORD] ...`` from Python (``merge``,
    ``import-map``, ...: :data:`gpt4image_mm.cli.main.FIRST_WORDS`); errors
    propagate."""
    from gpt4image_mm.cli.main import run_script
    return run_script('embed', argv, 'embed.py')
