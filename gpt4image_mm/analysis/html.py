"""report.html of a description analysis: the images beside their texts.

Judging descriptions means looking at the image next to what the model
said about it, so the page shows the flagged records (up to a cap) and a
few seeded samples per class as thumbnails with their descriptions, the
reason each was flagged, its class and, with a store, the nearest other
class; plain inline JavaScript filters them by reason and class.

Safe by construction: a description is data written by a model, so every
text goes through :func:`html.escape`, and the page carries a
Content-Security-Policy that allows no remote load and runs only the one
script whose hash it names (so even markup that slipped through escaping
could not run). The folder opens from disk: thumbnails are small JPEGs
next to the page, decoded once through the project's safe image opener,
and made only for the samples shown.

:func:`page_shell` is the one home of that head (the experiment's page
uses it too). What the analysis flags, and why, reaches the page through
one adapter, :func:`flagged_from_analysis` (``Flags.reasons``: a mask of
records per reason name); the page renders whatever reasons it names, so
how records are flagged can change without touching the rendering.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
from dataclasses import dataclass, field
from html import escape
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

PAGE = 'report.html'
THUMBS = 'thumbs'  # folder of the thumbnails, next to the page
THUMB_SIDE = 224  # pixels, longest side (shown at 112: sharp on HiDPI)
FLAGGED_CAP = 200  # flagged records shown per set; the rest are counted
SAMPLES_PER_CLASS = 4  # seeded samples of per-image descriptions
CLASS_LEVEL_PER_CLASS = 12  # descriptions shown per class without images
SAMPLE_SEED = 0

ImageOf = Callable[[str], Any]  # key -> image path, HxW[xC] array or None

REASON_TITLES = {
    'failure': 'failed (no description)',
    'refusal': 'refusal',
    'empty': 'empty (no letter or digit)',
    'other_class': 'names another class',
    'cut_by_encoder': 'truncated by the encoder',
    'exact_duplicate': 'exact duplicate',
    'near_duplicate': 'near-duplicate',
}


@dataclass
class Shown:
    """One description as the page shows it. ``reasons``: why it was
    flagged (empty for a class sample); ``note``: e.g. which key it
    near-duplicates; ``thumb``: the thumbnail's file name, once made."""

    key: str
    text: str
    label: int = -1
    reasons: Tuple[str, ...] = ()
    note: str = ''
    nearest: Optional[str] = None
    failed: bool = False
    thumb: Optional[str] = None
    image_error: str = ''


@dataclass
class ClassView:
    """One class's section: its samples and what is known about it."""

    label: int
    count: int
    own_share: Optional[float] = None
    confused_with: Optional[str] = None
    samples: List[Shown] = field(default_factory=list)


@dataclass
class PageData:
    """What one description set contributes to the page."""

    flagged: List[Shown]
    flagged_total: int
    classes: List[ClassView]
    image_of: Optional[ImageOf] = None  # per-image keys: their images

    @property
    def images(self) -> bool:
        return self.image_of is not None

    def shown(self) -> List[Shown]:
        return self.flagged + [s for v in self.classes for s in v.samples]


# ---------------------------------------------------------------- data ---

def flagged_from_analysis(stats: Any, flags: Any) -> Tuple[
        Dict[int, Tuple[str, ...]], List[int]]:
    """The analysis's flagged records as ``{scan index: reasons}`` and the
    hashes of the failed keys, from :func:`~gpt4image_mm.analysis.flagged.
    flag_records`'s per-reason masks."""
    import numpy as np
    reasons: Dict[int, List[str]] = {}
    for name, mask in flags.reasons.items():
        for i in np.flatnonzero(mask).tolist():
            reasons.setdefault(i, []).append(name)
    return ({i: tuple(r) for i, r in reasons.items()},
            [int(h) for h in flags.failed.tolist()])


def class_sample_indices(labels: Any, keep: Any, per_class: int,
                         seed: int = SAMPLE_SEED) -> Dict[int, List[int]]:
    """Up to ``per_class`` counted records of each class (scan indices),
    drawn with a fixed seed: the same samples on every run."""
    import numpy as np
    idx = np.flatnonzero(keep & (labels >= 0))
    idx = idx[np.random.default_rng(seed).permutation(len(idx))]
    idx = idx[np.argsort(labels[idx], kind='stable')]
    lab = labels[idx]
    starts = np.r_[0, np.flatnonzero(np.diff(lab)) + 1] if len(idx) else []
    out = {}
    for s in starts:
        group = idx[s:s + per_class]
        group = group[lab[s:s + len(group)] == lab[s]]
        out[int(lab[s])] = sorted(group.tolist())
    return out


def _read_texts(path: str, wanted: Iterable[int], failed: Iterable[int]
                ) -> Tuple[Dict[int, Tuple[str, str]], Dict[int, Tuple[
                    str, str]]]:
    """Second streaming pass: ``{scan index: (key, text)}`` of the wanted
    success records and ``{key hash: (key, error)}`` of the failed keys
    (their latest failure)."""
    from gpt4image_mm.analysis.records import stable_hash
    from gpt4image_mm.utils.descriptions import iter_records
    wanted, failed = set(wanted), set(failed)
    texts: Dict[int, Tuple[str, str]] = {}
    errors: Dict[int, Tuple[str, str]] = {}
    i = 0
    for _, rec in iter_records(path):
        if 'error' in rec:
            if failed:
                h = stable_hash(rec['key'])
                if h in failed:
                    errors[h] = (rec['key'], str(rec['error']))
            continue
        if i in wanted:
            texts[i] = (rec['key'], rec['text'])
        i += 1
    return texts, errors


def _store_rows(store: str, keys: Iterable[str]) -> Dict[str, Any]:
    """The store's unit vectors of ``keys`` (one pass over its key list)."""
    import numpy as np

    from gpt4image_mm.datasets.store import EmbeddingStore
    st = EmbeddingStore(store)
    wanted = set(keys)
    rows = {k: i for i, k in enumerate(st.keys()) if k in wanted}
    out = {}
    for k, i in rows.items():
        v = np.asarray(st.embeddings[i], dtype=np.float32)
        out[k] = v / max(float(np.linalg.norm(v)), 1e-12)
    return out


def _nearest_other(shown: List[Shown], vectors: Dict[str, Any],
                   centroids: Any, names: Sequence[str]) -> None:
    """Name, for each shown record with a vector, the class whose centroid
    is closest to it other than its own."""
    import numpy as np
    for s in shown:
        v = vectors.get(s.key)
        if v is None or s.label < 0:
            continue
        scores = centroids @ v
        scores[s.label] = -np.inf
        s.nearest = names[int(np.argmax(scores))]


def _near_duplicate_items(m: Dict[str, Any], store: str, stats: Any,
                          keep: Any) -> Dict[int, str]:
    """``{scan index: note}`` of the near-duplicate pairs the store
    analysis kept (a few examples): each record names its twin's key."""
    import numpy as np

    from gpt4image_mm.analysis.records import stable_hash
    from gpt4image_mm.datasets.store import EmbeddingStore
    pairs = m.get('_near_pairs')
    if pairs is None or not len(pairs):
        return {}
    keys = EmbeddingStore(store).keys()
    counted = np.flatnonzero(keep)
    by_hash = dict(zip(stats.key_hash[counted].tolist(), counted.tolist()))
    out = {}
    for a, b in np.asarray(pairs).tolist():
        i = by_hash.get(stable_hash(keys[a]))
        if i is not None and i not in out:
            out[i] = f'near-duplicate of {keys[b]}'
    return out


def page_data(path: str, stats: Any, flags: Any, names: Sequence[str],
              m: Dict[str, Any], store: Optional[str] = None,
              image_of: Optional[ImageOf] = None,
              label_of: Optional[Callable[[str], int]] = None,
              cap: int = FLAGGED_CAP) -> PageData:
    """What the page shows of one analysed set: the flagged records (first
    ``cap`` in file order), seeded samples per class and, with a store,
    each shown record's nearest other class."""
    import numpy as np

    from gpt4image_mm.analysis.metrics import first_per_key
    from gpt4image_mm.utils.keys import CLASS_PREFIX
    keep = first_per_key(stats)
    reasons, failed = flagged_from_analysis(stats, flags)
    notes = _near_duplicate_items(m, store, stats, keep) if store else {}
    for i in notes:
        reasons[i] = reasons.get(i, ()) + ('near_duplicate',)
    total = len(reasons) + len(failed)
    order = sorted(reasons)[:cap]
    failed_shown = failed[:max(0, cap - len(order))]
    per_class = SAMPLES_PER_CLASS if image_of else CLASS_LEVEL_PER_CLASS
    samples = class_sample_indices(stats.label, keep, per_class)
    texts, errors = _read_texts(path, set(order).union(
        *samples.values()), failed_shown)
    flagged = [Shown(*texts[i], label=int(stats.label[i]),
                     reasons=reasons[i], note=notes.get(i, ''))
               for i in order]
    flagged += [Shown(k, e, label=label_of(k) if label_of else -1,
                      reasons=('failure',), failed=True)
                for k, e in (errors[h] for h in failed_shown if h in errors)]
    classes = _class_views(stats, keep, names, m.get('_confusion'))
    for view in classes:
        view.samples = [Shown(*texts[i], label=view.label)
                        for i in samples.get(view.label, [])]
    data = PageData(flagged, total, classes)
    shown = data.shown()
    if store and m.get('_centroids') is not None:
        _nearest_other(shown, _store_rows(store, {s.key for s in shown}),
                       np.asarray(m['_centroids']), names)
    if image_of is not None and not all(
            s.key.startswith(CLASS_PREFIX) for s in shown):
        data.image_of = image_of
    return data


def _class_views(stats: Any, keep: Any, names: Sequence[str],
                 confusion: Any) -> List[ClassView]:
    """Each class with descriptions: how many, the share that name it and
    (with a store) its most confused class; counted in one bincount each,
    not one pass per class."""
    import numpy as np

    from gpt4image_mm.analysis.records import OWN_CLASS
    labels = stats.label[keep]
    own = (stats.flags[keep] & OWN_CLASS).astype(bool)
    known = labels >= 0
    counts = np.bincount(labels[known], minlength=len(names))
    naming = np.bincount(labels[known & own], minlength=len(names))
    return [ClassView(c, int(counts[c]), float(naming[c] / counts[c]),
                      _most_confused(confusion, c, names))
            for c in range(len(names)) if counts[c]]


def _most_confused(confusion: Any, c: int, names: Sequence[str]
                   ) -> Optional[str]:
    """The class that leave-one-out nearest-centroid most often picks for
    class ``c``'s descriptions instead of ``c`` (with a store)."""
    if confusion is None:
        return None
    row = confusion[c].copy()
    row[c] = 0
    j = int(row.argmax())
    return f'{names[j]} ({int(row[j])} of {int(confusion[c].sum())})' \
        if row[j] > 0 else None


# ---------------------------------------------------------- thumbnails ---

def thumb_name(key: str) -> str:
    """A thumbnail's file name: a digest of the key (keys may hold any
    character; file names here hold only hex digits)."""
    return hashlib.blake2b(key.encode('utf-8'), digest_size=10).hexdigest() \
        + '.jpg'


def make_thumbnails(out: str, shown: Iterable[Shown], image_of: ImageOf
                    ) -> int:
    """Small JPEGs of the shown records' images in ``out/thumbs``, each
    made once (an existing one is kept); an unreadable image is noted on
    its record, never the end of the page. Returns how many were made."""
    from gpt4image_mm.captioning.images import (
        ImageError,
        downscale,
        encode_jpeg,
        open_rgb,
    )
    from gpt4image_mm.utils.files import atomic_write_bytes
    from gpt4image_mm.utils.keys import base_key
    folder = os.path.join(out, THUMBS)
    os.makedirs(folder, exist_ok=True)
    made = 0
    for s in shown:
        name = thumb_name(base_key(s.key))
        target = os.path.join(folder, name)
        if not os.path.isfile(target):
            source = image_of(base_key(s.key))
            if source is None:
                continue
            try:
                img = downscale(open_rgb(source, s.key), THUMB_SIDE)
            except (ImageError, OSError) as e:
                s.image_error = str(e)
                continue
            atomic_write_bytes(target, encode_jpeg(img, 80))
            made += 1
        s.thumb = f'{THUMBS}/{name}'
    return made


# ---------------------------------------------------------- page shell ---

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;
 padding:0 1em;color:#1d1d1f}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}
code{font-size:.92em;background:#f3f3f3;padding:0 .2em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));
 gap:.8em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em;background:#fff}
.card img{display:block;width:112px;height:112px;object-fit:contain;
 margin-bottom:.4em;background:#f6f6f6}
.text{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3em 0;
 max-height:14em;overflow:auto}
.meta{color:#555;font-size:.9em;overflow-wrap:anywhere}
.reason{display:inline-block;background:#fde2e1;color:#8a1c12;
 border-radius:3px;padding:0 .35em;margin-right:.3em;font-size:.85em}
.noimg{color:#888;font-size:.85em}
section.cls{content-visibility:auto;contain-intrinsic-size:auto 320px}
.filters{position:sticky;top:0;background:#fafafa;padding:.5em;
 border:1px solid #ddd;z-index:1}
figure{display:inline-block;margin:.5em}
figure img{max-width:min(100%,760px)}
"""


def csp_hash(text: str) -> str:
    """The CSP source expression that allows exactly this inline text."""
    digest = hashlib.sha256(text.encode('utf-8')).digest()
    return "'sha256-" + base64.b64encode(digest).decode('ascii') + "'"


def page_shell(title: str, body: str, script: str = '') -> str:
    """A whole page: the Content-Security-Policy allows no remote load,
    images only from the page's own folder, and only this style and
    script (by hash); every text in ``body`` is already escaped."""
    csp = ("default-src 'none'; img-src 'self' data:; style-src "
           f"{csp_hash(STYLE)}; script-src "
           f"{csp_hash(script) if script else chr(39) + 'none' + chr(39)}; "
           "base-uri 'none'; form-action 'none'")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
            '<meta name="referrer" content="no-referrer">\n'
            f'<meta name="viewport" content="width=device-width">\n'
            f'<title>{escape(title)}</title><style>{STYLE}</style></head>\n'
            f'<body>\n{body}\n'
            + (f'<script>{script}</script>' if script else '')
            + '</body></html>\n')


def table_html(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of plain texts (each escaped)."""
    head = ''.join(f'<th>{escape(h)}</th>' for h in header)
    body = ''.join('<tr>' + ''.join(f'<td>{escape(str(c))}</td>' for c in r)
                   + '</tr>' for r in rows)
    return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>' \
        '</table>'


# --------------------------------------------------------------- page ---

FILTER_SCRIPT = """(function () {
  var reason = document.getElementById('f-reason');
  var cls = document.getElementById('f-class');
  var count = document.getElementById('f-count');
  function apply() {
    var r = reason.value, c = cls.value, shown = 0;
    document.querySelectorAll('.card').forEach(function (el) {
      var rs = (el.getAttribute('data-reasons') || '').split(' ');
      var ok = (!r || rs.indexOf(r) >= 0) &&
               (!c || el.getAttribute('data-class') === c);
      el.hidden = !ok;
      if (ok) { shown += 1; }
    });
    document.querySelectorAll('section.cls').forEach(function (el) {
      el.hidden = (!!c && el.getAttribute('data-class') !== c) || !!r;
    });
    count.textContent = shown + ' shown';
  }
  reason.addEventListener('change', apply);
  cls.addEventListener('change', apply);
  apply();
})();"""


def _card(s: Shown, names: Sequence[str], images: bool) -> str:
    cls = names[s.label] if 0 <= s.label < len(names) else ''
    parts = [f'<div class="card" data-class="{s.label}" data-reasons="'
             f'{escape(" ".join(s.reasons))}">']
    if images:
        if s.thumb:
            parts.append(f'<img src="{escape(s.thumb)}" alt="" width="112" '
                         'height="112" loading="lazy" decoding="async">')
        else:
            parts.append('<div class="noimg">' + escape(
                s.image_error or 'no image') + '</div>')
    parts += [''.join(f'<span class="reason">{escape(REASON_TITLES.get(r, r))}'
                      '</span>' for r in s.reasons),
              f'<p class="text">{escape(s.text)}</p>',
              f'<div class="meta">key <code>{escape(s.key)}</code>']
    if cls:
        parts.append(f'<br>class: {escape(cls)}')
    if s.nearest:
        parts.append(f'<br>nearest other class: {escape(s.nearest)}')
    if s.note:
        parts.append(f'<br>{escape(s.note)}')
    parts.append('</div></div>')
    return ''.join(parts)


def _metrics_table(sets: Sequence[Dict[str, Any]],
                   titles: Sequence[str]) -> str:
    from gpt4image_mm.analysis.report import ROWS, fmt
    rows = [[label] + [fmt(m.get(key), kind) for m in sets]
            for key, label, kind in ROWS if any(key in m for m in sets)]
    return table_html(['metric', *titles], rows)


def _filters(datas: Sequence[PageData], names: Sequence[str]) -> str:
    reasons = sorted({r for d in datas for s in d.flagged for r in s.reasons})
    labels = sorted({v.label for d in datas for v in d.classes}
                    | {s.label for d in datas for s in d.flagged
                       if s.label >= 0})
    ropts = ''.join(f'<option value="{escape(r)}">'
                    f'{escape(REASON_TITLES.get(r, r))}</option>'
                    for r in reasons)
    copts = ''.join(f'<option value="{c}">{escape(names[c])}</option>'
                    for c in labels if c < len(names))
    return ('<div class="filters">reason <select id="f-reason"><option '
            f'value="">any (flagged or not)</option>{ropts}</select> class '
            f'<select id="f-class"><option value="">all</option>{copts}'
            '</select> <span id="f-count"></span></div>')


def _flagged_section(d: PageData, names: Sequence[str], title: str,
                     flagged_file: str) -> str:
    head = f'<h2>Flagged descriptions{escape(title)}</h2>'
    if not d.flagged_total:
        return head + '<p>Nothing flagged.</p>'
    rest = d.flagged_total - len(d.flagged)
    note = (f'<p>{d.flagged_total:,} flagged; the first {len(d.flagged):,} '
            f'are shown, {rest:,} more are in <code>{escape(flagged_file)}'
            '</code>.</p>' if rest > 0 else
            f'<p>{d.flagged_total:,} flagged (keys in <code>'
            f'{escape(flagged_file)}</code>).</p>')
    cards = ''.join(_card(s, names, d.images) for s in d.flagged)
    return f'{head}{note}<div class="grid">{cards}</div>'


def _class_sections(d: PageData, names: Sequence[str], title: str) -> str:
    what = ('seeded samples' if d.images else 'descriptions')
    out = [f'<h2>Per class{escape(title)}</h2><p>For each class: {what} '
           '(the same on every run), the share of its descriptions that '
           'name it and, with a store, the class its descriptions are most '
           'often taken for (leave-one-out nearest centroid).</p>']
    for v in d.classes:
        facts = [f'{v.count:,} descriptions']
        if v.own_share is not None:
            facts.append(f'{100 * v.own_share:.0f} % name their class')
        if v.confused_with:
            facts.append(f'most confused with {v.confused_with}')
        cards = ''.join(_card(s, names, d.images) for s in v.samples)
        out.append(f'<section class="cls" data-class="{v.label}"><h3>'
                   f'{escape(names[v.label])}</h3><p class="meta">'
                   f'{escape("; ".join(facts))}</p><div class="grid">{cards}'
                   '</div></section>')
    return ''.join(out)


def _confused(m: Dict[str, Any], title: str) -> str:
    pairs = m.get('_confused_pairs') or []
    if not pairs:
        return ''
    return (f'<h3>Most confused class pairs{escape(title)}</h3>' + table_html(
        ['classes', 'confused', 'centroid cosine'],
        [[f'{p["a"]} / {p["b"]}', p['confused'],
          f'{p["centroid_cosine"]:.3f}'] for p in pairs]))


def render_page(sets: Sequence[Dict[str, Any]], titles: Sequence[str],
                names: Sequence[str], datas: Sequence[PageData],
                figures: Sequence[str] = ()) -> str:
    """The whole report.html text (every text escaped)."""
    many = len(sets) > 1
    tag = (lambda t: f' ({t})') if many else (lambda t: '')
    sources = ', '.join(f'{escape(t)}: <code>{escape(str(m["_path"]))}</code>'
                        for m, t in zip(sets, titles))
    body = ['<h1>Description analysis</h1>', f'<p>{sources}</p>',
            '<h2>Metrics</h2>', _metrics_table(sets, titles),
            *(_confused(m, tag(t)) for m, t in zip(sets, titles))]
    if figures:
        body.append('<h2>Figures</h2>' + ''.join(
            f'<figure><img src="{escape(os.path.basename(f))}" alt="'
            f'{escape(os.path.basename(f))}"></figure>' for f in figures))
    body.append(_filters(datas, names))
    for m, t, d in zip(sets, titles, datas):
        body.append(_flagged_section(d, names, tag(t), os.path.basename(
            m.get('_flagged_file', 'flagged_keys.txt'))))
    for t, d in zip(titles, datas):
        body.append(_class_sections(d, names, tag(t)))
    return page_shell('Description analysis', '\n'.join(body), FILTER_SCRIPT)


def write_page(out: str, sets: Sequence[Dict[str, Any]],
               titles: Sequence[str], names: Sequence[str],
               figures: Sequence[str] = ()) -> Optional[str]:
    """``out/report.html`` (and its thumbnails) from the sets'
    :func:`page_data` (``m['_page']``); returns its path, or None when no
    set carries page data."""
    from gpt4image_mm.utils.files import atomic_write_text
    datas = [m.get('_page') for m in sets]
    if any(d is None for d in datas):
        return None
    for d in datas:
        if d.image_of is not None:
            made = make_thumbnails(out, d.shown(), d.image_of)
            logger.debug('%d thumbnails made', made)
    path = os.path.join(out, PAGE)
    atomic_write_text(path, render_page(sets, titles, names, datas, figures))
    return path
