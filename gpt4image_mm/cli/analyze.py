"""``analyze_descriptions``: how good are the descriptions, before training?

    python tools/analyze_descriptions.py D.jsonl --store S --config CFG \\
        --out report/
    python tools/analyze_descriptions.py class.jsonl --per-class --store S \\
        --compare other.jsonl --compare-store S2 --out report/

Writes ``report.md`` (also printed), ``report.html`` (its path printed),
``metrics.json`` and PNG figures into ``--out``. See docs/analysis.md.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from gpt4image_mm.analysis.embeddings import (
    EXACT_NEAR_DUP_MAX,
    class_signal,
    near_duplicates,
)
from gpt4image_mm.analysis.flagged import flag_records, write_flagged_keys
from gpt4image_mm.analysis.html import ImageOf, page_data, write_page
from gpt4image_mm.analysis.metrics import text_metrics
from gpt4image_mm.analysis.records import (
    ClassNames,
    ClassSynonyms,
    LabelOf,
    class_label_of,
    display_of,
    id_like_preview,
    scan_records,
    stable_hash,
)
from gpt4image_mm.analysis.report import (
    confusions_shown,
    render,
    write_figures,
)
from gpt4image_mm.utils.class_names import class_synonyms
from gpt4image_mm.utils.errors import ToolError
from gpt4image_mm.utils.files import atomic_write_bytes, atomic_write_json


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``analyze``: measure a descriptions JSONL (and its embedding store)
    before training: failures, refusals, duplicates, lengths and
    truncation, class naming, class signal in the embeddings."""
    from gpt4image_mm.cli.main import DictAction
    p.add_argument('descriptions', help='descriptions JSONL')
    p.add_argument('--store', help='its embedding store (tools/embed.py)')
    p.add_argument('--out', required=True, help='directory for report.md, '
                   'metrics.json and the figures')
    p.add_argument('--config', help='dataset config: class names and the '
                   'label of each per-image key')
    p.add_argument('--split', default='train', choices=('train', 'val',
                                                         'test'))
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries (as tools/train.py)')
    p.add_argument('--class-names', metavar='FILE', help='the names texts '
                   'use for the class folders (JSON {folder: name}, CSV '
                   'folder,name or one per line; default: folder names with '
                   'underscores as spaces)')
    p.add_argument('--per-class', action='store_true',
                   help='no config: take the class names from the '
                   'class:<name> keys of the file(s)')
    p.add_argument('--encoder', help='text encoder whose tokens are counted '
                   "(default: the store's encoder when it is a local "
                   'directory; none: no token figures)')
    p.add_argument('--compare', metavar='OTHER.jsonl',
                   help='a second description set, side by side')
    p.add_argument('--compare-store', metavar='S', help='its store')
    p.add_argument('--near-dup-exact-max', type=int,
                   default=EXACT_NEAR_DUP_MAX,
                   help='compare all pairs up to this many rows; LSH above')
    p.add_argument('--no-near-dups', action='store_true',
                   help='skip the near-duplicate search (LSH over a large, '
                   'strongly clustered store is slow: docs/analysis.md)')
    p.add_argument('--no-figures', action='store_true')
    p.add_argument('--no-progress', action='store_true')
    p.set_defaults(handler=run_analysis)
    return p


def _config_labels(args: argparse.Namespace
                   ) -> Tuple[List[str], Optional[LabelOf], ImageOf]:
    """Class names, a per-image key -> label lookup and a key -> image
    lookup (the page's thumbnails) from a config; the lookups hold sorted
    key hashes, labels and sample indices (20 bytes a sample)."""
    from gpt4image_mm.datasets import build_split_dataset
    from gpt4image_mm.utils.keys import class_names, dataset_keys
    ds = build_split_dataset(args.config, args.split, args.cfg_options)
    names = list(class_names(ds))
    keys = dataset_keys(ds)
    hashes = np.fromiter((stable_hash(k) for k in keys), np.uint64, len(keys))
    labels = np.asarray(ds.get_gt_labels(), np.int32)
    order = np.argsort(hashes)
    hashes, labels = hashes[order], labels[order]

    def find(key: str) -> int:
        h = np.uint64(stable_hash(key))
        i = int(np.searchsorted(hashes, h))
        return i if i < len(hashes) and hashes[i] == h else -1

    def per_image(key: str) -> int:
        i = find(key)
        return int(labels[i]) if i >= 0 else -1

    def image_of(key: str) -> Any:
        i = find(key)
        info = ds.get_data_info(int(order[i])) if i >= 0 else {}
        return info.get('img_path', info.get('img'))
    return names, per_image, image_of


def _names_from_keys(paths: Sequence[str]) -> List[str]:
    from gpt4image_mm.utils.descriptions import iter_records
    from gpt4image_mm.utils.keys import CLASS_PREFIX, base_key
    names: Dict[str, None] = {}
    for path in paths:
        for _, rec in iter_records(path):
            base = base_key(rec['key'])
            if base.startswith(CLASS_PREFIX):
                names.setdefault(base[len(CLASS_PREFIX):])
    if not names:
        raise ToolError(f'{paths[0]}: --per-class, but no key is class:<name>'
                        '; pass --config for per-image descriptions')
    return sorted(names)


def _tokenizer(args: argparse.Namespace, store: Optional[str]
               ) -> Tuple[Any, Optional[int]]:
    spec = args.encoder
    if spec is None and store:
        from gpt4image_mm.datasets.store import read_manifest
        enc = read_manifest(store)['encoder']
        spec = enc if os.path.isdir(str(enc)) else None
    if not spec or spec == 'none':
        return None, None
    from gpt4image_mm.embedding.encoders import build_text_encoder
    encoder = build_text_encoder(spec, device='cpu')
    tok = getattr(encoder, 'tokenizer', None)
    if tok is None:
        return None, None
    return tok, encoder.max_length


def analyse(path: str, store: Optional[str], names: List[ClassSynonyms],
            label_of: LabelOf, tokenizer: Any, max_length: Optional[int],
            args: argparse.Namespace, flagged_out: Optional[str] = None,
            image_of: Optional[ImageOf] = None) -> Dict[str, Any]:
    """Every figure of one description set (and its store); with
    ``flagged_out``, the keys to ask again are written there and what the
    page shows is gathered. ``names``: each class's names in label order
    (display name first, then its synonyms), or its display name alone;
    ``image_of``: a per-image key's image."""
    classes = ClassNames(names) if names else None
    stats = scan_records(path, label_of, classes, tokenizer,
                         progress=not args.no_progress)
    m = text_metrics(stats, max_length)
    nearer = None
    if store:
        store_m, nearer = store_metrics(
            store, stats, classes.names if classes else [], label_of,
            args.near_dup_exact_max, not args.no_near_dups)
        m.update(store_m)
    if flagged_out:
        flags = flag_records(stats, max_length, nearer)
        write_flagged_keys(path, flags, flagged_out, classes)
        m['flagged'] = flags.counts
        m['flagged_share'] = {k: v / max(m['descriptions'], 1)
                              for k, v in flags.counts.items() if k != 'keys'}
        m['mentions'] = flags.mention_counts
        m['flagged_evidence'] = 'text and store' if nearer is not None \
            else 'text'
        m['_flag_examples'] = flags.examples
        m['_flagged_file'] = flagged_out
    m['_path'] = path
    m['_words'] = stats.words
    if flagged_out:
        m['_page'] = page_data(path, stats, flags,
                               classes.names if classes else [], m, store,
                               image_of, label_of)
    return m


def store_metrics(store: str, stats: Any, names: List[str],
                  label_of: LabelOf, exact_max: int,
                  near_dups: bool = True
                  ) -> Tuple[Dict[str, Any], Optional[np.ndarray]]:
    """Near-duplicates and class signal of the store's vectors, and for
    each text naming only other classes (``stats.other_named``) whether
    its vector lies nearer that class than its own (None: no labels)."""
    from gpt4image_mm.analysis.embeddings import class_sums, nearer_other_class
    from gpt4image_mm.datasets.store import EmbeddingStore
    st = EmbeddingStore(store)
    keys = st.keys()
    order = np.argsort(stats.key_hash)
    sorted_keys = stats.key_hash[order]
    row_hash = np.fromiter((stable_hash(k) for k in keys), np.uint64,
                           len(keys))
    pos = np.clip(np.searchsorted(sorted_keys, row_hash), 0,
                  max(len(sorted_keys) - 1, 0))
    known = sorted_keys[pos] == row_hash if len(sorted_keys) else \
        np.zeros(len(keys), bool)
    # rows whose key is not in the file get a unique text id of their own
    text_hash = np.where(known, stats.text_hash[order][pos],
                         np.arange(len(keys), dtype=np.uint64) ^ np.uint64(
                             0x9E3779B97F4A7C15))
    labels = np.fromiter((label_of(k) for k in keys), np.int32, len(keys))
    del keys
    m = near_duplicates(st.embeddings, text_hash, exact_max=exact_max) \
        if near_dups else {'near_duplicate_method': 'skipped'}
    nearer = None
    if names and (labels >= 0).any():
        sums = class_sums(st.embeddings, labels, len(names))
        m.update(class_signal(st.embeddings, labels, names, sums=sums,
                              top_pairs=confusions_shown(len(names))))
        pairs = stats.other_named
        rows = _rows_of(row_hash, stats.key_hash[pairs[:, 0]])
        nearer = nearer_other_class(st.embeddings, rows,
                                    stats.label[pairs[:, 0]].astype(np.int64),
                                    pairs[:, 1], *sums)
    m['store_rows'] = st.count
    return m, nearer


def _rows_of(row_hash: np.ndarray, key_hash: np.ndarray) -> np.ndarray:
    """The store row of each key hash (-1 where the store has none)."""
    order = np.argsort(row_hash)
    sorted_rows = row_hash[order]
    pos = np.clip(np.searchsorted(sorted_rows, key_hash), 0,
                  max(len(sorted_rows) - 1, 0))
    hit = sorted_rows[pos] == key_hash if len(sorted_rows) else \
        np.zeros(len(key_hash), bool)
    return np.where(hit, order[pos], -1)


def _class_setup(args: argparse.Namespace
                 ) -> Tuple[List[ClassSynonyms], LabelOf, Optional[ImageOf]]:
    """Each class's names (what texts say: the display name first, then
    its synonyms), the key -> label lookup (keys keep the folder names)
    and, with a config, the key -> image lookup."""
    image_of = None
    if args.config:
        names, per_image, image_of = _config_labels(args)
        label_of = class_label_of(names, per_image)
    elif args.per_class:
        paths = [args.descriptions] + ([args.compare] if args.compare else [])
        names = _names_from_keys(paths)
        label_of = class_label_of(names)
    else:
        if args.class_names:
            raise ToolError('--class-names needs --config or --per-class')
        return [], class_label_of([]), None
    return class_synonyms(names, args.class_names), label_of, image_of


def main(argv: Optional[List[str]] = None) -> int:
    """``analyze`` from Python; errors propagate."""
    from gpt4image_mm.cli.main import parse_and_run
    return parse_and_run('analyze', argv, 'analyze')


def run_analysis(args: argparse.Namespace) -> int:
    """Analyse one set (or two with ``--compare``); 0 when the report is
    written."""
    if args.compare_store and not args.compare:
        raise ToolError('--compare-store needs --compare OTHER.jsonl')
    for path in filter(None, (args.descriptions, args.compare)):
        if not os.path.isfile(path):
            raise ToolError(f'{path}: no such descriptions file')
    # class_synonyms has said once, on stderr, when the names are ids;
    # the report and metrics.json say it too
    names, label_of, image_of = _class_setup(args)
    ids = id_like_preview(display_of(names))
    tokenizer, max_length = _tokenizer(args, args.store)
    os.makedirs(args.out, exist_ok=True)
    tag = '_A' if args.compare else ''
    sets = [analyse(args.descriptions, args.store, names, label_of,
                    tokenizer, max_length, args,
                    os.path.join(args.out, f'flagged_keys{tag}.txt'),
                    image_of)]
    titles = ['A' if args.compare else 'descriptions']
    if args.compare:
        sets.append(analyse(args.compare, args.compare_store, names,
                            label_of, tokenizer, max_length, args,
                            os.path.join(args.out, 'flagged_keys_B.txt'),
                            image_of))
        titles.append('B')
    if ids:
        sets[0]['class_names_look_like_ids'] = ids
    write_report(sets, titles, display_of(names), args.out,
                 not args.no_figures)
    return 0


def write_report(sets: List[Dict[str, Any]], titles: List[str],
                 names: List[str], out: str, figures: bool,
                 echo: Callable[[str], None] = print) -> str:
    """report.md, report.html, metrics.json and figures into ``out``;
    returns the text."""
    os.makedirs(out, exist_ok=True)
    pngs: List[str] = []
    if figures:
        for m, t in zip(sets, titles):
            tag = '' if len(sets) == 1 else f'_{t}'
            pngs += write_figures(m, names, out, tag)
    text = render(sets, titles, pngs)
    atomic_write_bytes(os.path.join(out, 'report.md'), text.encode('utf-8'))
    atomic_write_json(os.path.join(out, 'metrics.json'), {
        t: {k: v for k, v in m.items() if not k.startswith('_')}
        | {'path': m['_path'],
           'confused_pairs': m.get('_confused_pairs', []),
           'flagged_examples': m.get('_flag_examples', {})}
        for m, t in zip(sets, titles)}, indent=1)
    echo(text)
    page = write_page(out, sets, titles, names, pngs)
    if page:
        echo(f'page: {page}')
    return text
