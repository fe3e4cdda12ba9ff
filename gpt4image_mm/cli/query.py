"""``query``: classify or search images by text through a trained neck.

    gpt4image query CFG CKPT --images DIR --classify cat dog ship
    python tools/query.py CFG CKPT --images DIR --classify-file class.jsonl
    python tools/query.py CFG CKPT --images DIR --search "a red car" \\
        --topk 8 --out hits/

See docs/query.md for when this works (and when it cannot).
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List, Optional

from gpt4image_mm.utils.errors import ToolError
from gpt4image_mm.utils.files import atomic_write_json


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``query``: zero-shot classification and text search of images
    through the alignment neck of a GPT4Image checkpoint."""
    from gpt4image_mm.cli.main import DictAction
    p.add_argument('config', help='the GPT4Image training config')
    p.add_argument('checkpoint', help='a checkpoint that holds align_neck')
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument('--images', help='image folder (searched '
                       'recursively; features cached)')
    where.add_argument('--split', choices=('train', 'val', 'test'),
                       help="--classify*: the config's own dataset split "
                       '(array datasets too); reports its top-1')
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument('--classify', nargs='*', metavar='TEXT',
                      help='one text per class: a name (a folder name '
                      'reads as words: saint_bernard -> saint bernard) or '
                      "a description; with --split and no TEXT, the split's "
                      'class names (with --class-names for their words)')
    what.add_argument('--classify-file', metavar='CLASS.jsonl',
                      help='class-level descriptions (class:<name>#k keys); '
                      "each class's texts are averaged")
    what.add_argument('--search', metavar='QUERY', help='rank the images')
    p.add_argument('--template', default='{}',
                   help="--classify: text around each name, e.g. 'a photo "
                   "of a {}.' (default: the name alone)")
    p.add_argument('--class-names', metavar='FILE', help='--classify: the '
                   'words each class name stands for in the text (JSON '
                   '{name: words}, CSV name,words or one per line; default: '
                   'underscores as spaces); results keep the names given')
    p.add_argument('--topk', type=int, default=8)
    p.add_argument('--out', help='directory for results.json (and the '
                   "search's contact sheet search.png)")
    p.add_argument('--encoder', help="text encoder (default: the training "
                   "store's, from its manifest)")
    p.add_argument('--device', default=None)
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--cache-dir', help='image-feature cache (default: '
                   '$GPT4IMAGE_CACHE/query)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries (as tools/test.py)')
    p.set_defaults(handler=run_query)
    return p


def class_texts_from_file(path: str) -> Dict[str, List[str]]:
    """``{class name: [descriptions]}`` of a class-level descriptions file."""
    from gpt4image_mm.utils.descriptions import read_descriptions
    from gpt4image_mm.utils.keys import CLASS_PREFIX, base_key
    texts: Dict[str, List[str]] = {}
    for key, rec in read_descriptions(path).items():
        base = base_key(key)
        if not base.startswith(CLASS_PREFIX):
            raise ToolError(f'{path}: key {key!r} is not class:<name>[#k]; '
                            '--classify-file takes class-level descriptions')
        texts.setdefault(base[len(CLASS_PREFIX):], []).append(rec['text'])
    if not texts:
        raise ToolError(f'{path}: no descriptions')
    return texts


def class_texts_from_args(args: argparse.Namespace,
                          split_names: Optional[List[str]] = None
                          ) -> Dict[str, List[str]]:
    """The class texts: from --classify-file, or one per --classify name
    (the split's class names when none are given), said in words."""
    if args.classify_file:
        return class_texts_from_file(args.classify_file)
    if '{}' not in args.template:
        raise ToolError(f'--template {args.template!r} has no {{}} for the '
                        'class name')
    from gpt4image_mm.utils.class_names import class_display_names
    classes = args.classify or split_names or []
    # says once, on stderr, when the names are ids and names the fix
    shown = class_display_names(classes, args.class_names)
    return {t: [args.template.format(s)] for t, s in zip(classes, shown)}


def folder_accuracy(paths: List[str], preds: List[dict],
                    names: List[str]) -> Optional[float]:
    """Top-1 when the folder is laid out ``<class>/<image>`` with the
    queried class names (None otherwise)."""
    truth = [p.split('/', 1)[0] if '/' in p else None for p in paths]
    if not paths or not set(truth) <= set(names):
        return None
    return sum(t == r['pred_class'] for t, r in zip(truth, preds)) / len(paths)


def main(argv: Optional[List[str]] = None) -> int:
    """``query`` from Python; errors propagate."""
    from gpt4image_mm.cli.main import parse_and_run
    return parse_and_run('query', argv, 'query')


def run_query(args: argparse.Namespace) -> int:
    from gpt4image_mm.apis.query import TextQueryInferencer, contact_sheet
    from gpt4image_mm.utils.config import load_config
    cfg = load_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.classify == [] and not args.split:
        raise ToolError('--classify without names takes them from --split; '
                        'with --images, give one text per class')
    # with --split and bare --classify, the texts wait for the split's names
    texts = None if args.search or args.classify == [] else \
        class_texts_from_args(args)
    inferencer = TextQueryInferencer(cfg, args.checkpoint, args.device,
                                     text_encoder=args.encoder,
                                     cache_dir=args.cache_dir)
    if args.split:
        if args.search:
            raise ToolError('--search ranks an image folder: pass --images')
        result = split_report(inferencer, texts, args)
    else:
        paths, feats, counts = inferencer.folder_features(args.images,
                                                          args.batch_size)
        print(f'image features: {counts["cached"]} cached, '
              f'{counts["embedded"]} embedded')
        result = search_report(inferencer, args, contact_sheet) \
            if args.search else classify_report(inferencer, texts, paths,
                                                feats)
    if args.out:
        if not args.search:
            result.update(text_sources(args))
        os.makedirs(args.out, exist_ok=True)
        atomic_write_json(os.path.join(args.out, 'results.json'), result,
                          indent=1)
    return 0


def text_sources(args: argparse.Namespace) -> dict:
    """Where the class texts came from, beside them in results.json."""
    if args.classify_file:
        return {'classify_file': args.classify_file}
    return {'template': args.template, 'class_names_file': args.class_names}


def search_report(inferencer, args, sheet) -> dict:
    hits = inferencer.search(args.search, args.images, args.topk,
                             args.batch_size)
    for n, hit in enumerate(hits, 1):
        print(f'{n:3d}. {hit["score"]:.4f}  {hit["path"]}')
    result = {'query': args.search, 'hits': hits}
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        result['contact_sheet'] = sheet(
            args.images, hits, os.path.join(args.out, 'search.png'))
        print(f'contact sheet: {result["contact_sheet"]}')
    return result


def classify_report(inferencer, texts, paths, feats) -> dict:
    preds = inferencer.classify_embeddings(feats, texts)
    for path, r in zip(paths, preds):
        print(f'{path}: {r["pred_class"]} ({r["pred_score"]:.3f})')
    acc = folder_accuracy(paths, preds, list(texts))
    if acc is not None:
        print(f'top-1 by text through the neck: {100 * acc:.2f} % of '
              f'{len(paths)} images')
    return {'classes': list(texts), 'texts': texts, 'top1': acc,
            'predictions': [
        {'path': p, 'pred_class': r['pred_class'],
         'pred_score': r['pred_score']} for p, r in zip(paths, preds)]}


def _preview(names: List[str], n: int = 3) -> str:
    return ', '.join(names[:n]) + (', ...' if len(names) > n else '')


def missing_texts(missing: List[str], names: List[str], given: List[str],
                  args: argparse.Namespace) -> ToolError:
    """The split's classes that got no text, and how to give them one:
    texts are keyed by the split's class names (folder names, ImageNet's
    wnids), while --class-names says the words each stands for."""
    head = (f'no text for {len(missing)} of the {len(names)} classes of the '
            f'{args.split} split, e.g. {missing[0]!r} (texts were given for '
            f'{_preview(given)})')
    if args.classify_file:
        fix = (f'{args.classify_file} needs class:<name> keys named as the '
               f"split's classes ({_preview(names)}); write them with "
               '--class-names FILE so the texts say words')
    else:
        fix = ("pass --classify with no names (the split's class names: "
               f'{_preview(names)}) and --class-names FILE (e.g. '
               'LOC_synset_mapping.txt, JSON {name: words}) for the words '
               'each stands for')
    return ToolError(f'{head} -- {fix}')


def split_report(inferencer, texts: Dict[str, List[str]],
                 args: argparse.Namespace) -> dict:
    """Top-1 of classifying a dataset split by the class texts."""
    feats, labels, names = inferencer.split_features(args.split,
                                                     args.batch_size)
    if texts is None:
        texts = class_texts_from_args(args, names)
    missing = [n for n in names if n not in texts]
    if missing:
        raise missing_texts(missing, names, list(texts), args)
    preds = inferencer.classify_embeddings(feats, texts)
    top1 = sum(r['pred_class'] == names[y] for r, y in zip(preds, labels)) \
        / len(labels)
    print(f'{args.split} top-1 by text through the neck: {100 * top1:.2f} % '
          f'of {len(labels)} images ({len(texts)} classes)')
    return {'classes': list(texts), 'texts': texts, 'split': args.split,
            'images': len(labels),
            'top1': top1}
