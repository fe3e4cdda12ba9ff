"""Figures of an embedding store: near-duplicates and class signal.

Both read the memory-mapped store in row chunks, so a 1.28 M x 1024 store is
never copied into memory. Class statistics need only per-class sums: the
leave-one-out centroid of a row's class is ``(S_y - x) / (n_y - 1)``, and the
mean pairwise within/between-class cosines follow from the sums' norms --
exact, without the N x N similarity matrix.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

if TYPE_CHECKING:  # torch is imported where used: analyze without a
    import torch  # store needs none of it (gpt4image analyze)

NEAR_DUP_COSINE = 0.98  # near-duplicate descriptions: cosine above this
EXACT_NEAR_DUP_MAX = 20_000  # rows up to which all pairs are compared
# LSH for larger stores: 16-bit random-hyperplane signatures in 12 tables.
# Two vectors at cosine 0.98 (11.5 degrees) share a 16-bit signature with
# p >= (1 - 11.5/180)^16 = 0.35, so 12 tables miss such a pair with
# p <= 0.65^12 < 0.6 %; closer pairs are missed even less often.
LSH_BITS, LSH_TABLES = 16, 12
_ROWS = 8192  # rows per chunk read from the store
_WINDOW = 32  # LSH buckets up to this size + 1 are compared by offset
_SIM_CELLS = 1 << 22  # similarity entries at once (16 MB of float32)


def unit_chunks(emb: np.ndarray, rows: int = _ROWS
                ) -> Iterator[Tuple[int, torch.Tensor]]:
    """``(start, L2-normalised float32 rows)`` over a (memory-mapped) array."""
    import torch
    for start in range(0, len(emb), rows):
        block = torch.from_numpy(np.asarray(emb[start:start + rows],
                                            dtype=np.float32))
        yield start, torch.nn.functional.normalize(block, dim=1)


def _pairs_within(rows: np.ndarray, emb: np.ndarray, threshold: float
                  ) -> np.ndarray:
    """``k x 2`` row pairs (i < j) among ``rows`` above ``threshold``."""
    import torch
    rows = np.sort(rows)
    x = torch.nn.functional.normalize(torch.from_numpy(np.asarray(
        emb[rows], dtype=np.float32)), dim=1)
    found = []
    block = max(1, min(2048, _SIM_CELLS // max(len(rows), 1)))
    for a in range(0, len(rows), block):
        sim = x[a:a + block] @ x.T
        ii, jj = torch.nonzero(sim > threshold, as_tuple=True)
        ii = ii + a
        keep = ii < jj
        found.append(np.stack([rows[ii[keep].numpy()],
                               rows[jj[keep].numpy()]], 1))
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def _signatures(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """``N x LSH_TABLES`` random-hyperplane signatures (one int per table)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    planes = torch.randn(emb.shape[1], LSH_BITS * LSH_TABLES, generator=gen)
    weights = 2 ** torch.arange(LSH_BITS, dtype=torch.int64)
    sigs = np.zeros((len(emb), LSH_TABLES), np.int64)
    for start, x in unit_chunks(emb):
        bits = (x @ planes > 0).view(len(x), LSH_TABLES, LSH_BITS).long()
        sigs[start:start + len(x)] = (bits * weights).sum(-1).numpy()
    return sigs


def _lsh_pairs(emb: np.ndarray, threshold: float) -> List[np.ndarray]:
    """Candidate pairs from LSH buckets, verified exactly.

    Rows are sorted by signature per table; a bucket of up to
    ``_WINDOW + 1`` rows has all its pairs within ``_WINDOW`` positions, so
    those are compared vectorised by offset; larger buckets pair all rows.
    """
    sigs, found = _signatures(emb), []
    n = len(emb)
    for t in range(LSH_TABLES):
        order = np.argsort(sigs[:, t], kind='stable')
        sig = sigs[order, t]
        starts = np.r_[0, np.flatnonzero(np.diff(sig)) + 1]
        sizes = np.diff(np.r_[starts, n])
        big = np.repeat(sizes > _WINDOW + 1, sizes)
        for s, z in zip(starts[sizes > _WINDOW + 1], sizes[sizes > _WINDOW + 1]):
            found.append(_pairs_within(order[s:s + z], emb, threshold))
        for a in range(0, n, _ROWS * 8):
            b, e = min(n, a + _ROWS * 8), min(n, a + _ROWS * 8 + _WINDOW)
            rows = order[a:e]
            x = np.asarray(emb[rows], dtype=np.float32)
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            pos = np.arange(b - a)
            for d in range(1, _WINDOW + 1):
                i = pos[pos + d < e - a]
                i = i[(sig[a + i] == sig[a + i + d]) & ~big[a + i]]
                if not len(i):
                    break  # no bucket spans this offset here, nor a larger
                cos = np.einsum('ij,ij->i', x[i], x[i + d])
                i = i[cos > threshold]
                found.append(np.sort(np.stack([rows[i], rows[i + d]], 1), 1))
    return found


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run many small torch ops on one thread: with intra-op threads they
    were measured 30x slower on a loaded 2-core machine (threads spinning
    for each tiny op), and they gain nothing from threads."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def near_duplicates(emb: np.ndarray, text_hash: Optional[np.ndarray] = None,
                    threshold: float = NEAR_DUP_COSINE,
                    exact_max: int = EXACT_NEAR_DUP_MAX) -> Dict[str, Any]:
    """Pairs of rows with cosine > ``threshold`` whose texts differ.

    All pairs are compared up to ``exact_max`` rows; above it, pairs are
    found through LSH buckets and then checked exactly (no false positives,
    rare misses: see ``LSH_TABLES``). Pairs of identical texts are exact
    duplicates, counted separately, and left out here.
    """
    exact = len(emb) <= exact_max
    if exact:
        pairs = _pairs_within(np.arange(len(emb)), emb, threshold)
    else:
        with _one_thread():
            found = _lsh_pairs(emb, threshold)
        pairs = np.unique(np.concatenate(found), axis=0) if found else \
            np.zeros((0, 2), np.int64)
    if text_hash is not None and len(pairs):
        pairs = pairs[text_hash[pairs[:, 0]] != text_hash[pairs[:, 1]]]
    return {'near_duplicate_pairs': int(len(pairs)),
            'near_duplicate_records': int(len(np.unique(pairs))),
            'near_duplicate_method': 'all pairs' if exact else
            f'LSH {LSH_TABLES}x{LSH_BITS} bits, verified',
            '_near_pairs': pairs[:10]}


def class_sums(emb: np.ndarray, labels: np.ndarray, classes: int
               ) -> Tuple[torch.Tensor, np.ndarray]:
    """Per-class sums of unit rows (float64) and counts; label -1 skipped."""
    import torch
    sums = torch.zeros(classes, emb.shape[1], dtype=torch.float64)
    for start, x in unit_chunks(emb):
        lab = torch.from_numpy(labels[start:start + len(x)].astype(np.int64))
        ok = lab >= 0
        sums.index_add_(0, lab[ok], x[ok].double())
    counts = np.bincount(labels[labels >= 0], minlength=classes)
    return sums, counts


def class_signal(emb: np.ndarray, labels: np.ndarray, names: List[str],
                 top_pairs: int = 5,
                 sums: Optional[Tuple[torch.Tensor, np.ndarray]] = None
                 ) -> Dict[str, Any]:
    """Leave-one-out nearest-centroid accuracy, mean within/between-class
    cosine, the most confused class pairs and the centroid similarities
    (``sums``: :func:`class_sums` of the same rows, when already made)."""
    import torch
    C = len(names)
    sums, counts = sums if sums is not None else class_sums(emb, labels, C)
    sq = (sums * sums).sum(1)  # |S_y|^2
    n = torch.from_numpy(counts).double()
    within_pairs = float((n * (n - 1)).sum())
    total, N = sums.sum(0), float(n.sum())
    between_pairs = N * N - float((n * n).sum())
    out: Dict[str, Any] = {
        'classes_present': int((counts > 0).sum()),
        'within_class_cosine': float((sq - n).sum() / within_pairs)
        if within_pairs else float('nan'),
        'between_class_cosine': float(((total @ total) - sq.sum())
                                      / between_pairs)
        if between_pairs else float('nan')}
    confusion = _loo_confusion(emb, labels, sums, counts)
    scored = int(confusion.sum())
    out['loo_centroid_accuracy'] = float(np.trace(confusion) / scored) \
        if scored else float('nan')
    out['loo_scored'] = scored
    cent = torch.nn.functional.normalize(sums, dim=1).float()
    sim = (cent @ cent.T).numpy()
    out['_centroid_similarity'] = sim
    out['_centroids'], out['_confusion'] = cent.numpy(), confusion
    out['_confused_pairs'] = _confused_pairs(confusion, sim, names, top_pairs)
    return out


def nearer_other_class(emb: np.ndarray, rows: np.ndarray, own: np.ndarray,
                       other: np.ndarray, sums: torch.Tensor,
                       counts: np.ndarray) -> np.ndarray:
    """For each (store row, own class, other class): whether the row lies
    nearer the other class's centroid than its own class's centroid taken
    without the row (leave-one-out, so a row does not pull its own class
    towards itself). Where there is nothing to compare -- no row (-1), an
    own class of one row, an other class with no rows -- the answer is
    True: the text's evidence then stands alone."""
    import torch
    out = np.ones(len(rows), bool)
    ok = (rows >= 0) & (counts[own] > 1) & (counts[other] > 0)
    if not ok.any():
        return out
    x = torch.nn.functional.normalize(torch.from_numpy(np.asarray(
        emb[rows[ok]], dtype=np.float64)), dim=1)
    own_loo = sums[torch.from_numpy(own[ok])] - x
    cos_own = (x * own_loo).sum(1) / own_loo.norm(dim=1).clamp_min(1e-12)
    other_sum = sums[torch.from_numpy(other[ok])]
    cos_other = (x * other_sum).sum(1) / other_sum.norm(dim=1).clamp_min(
        1e-12)
    out[ok] = (cos_other > cos_own).numpy()
    return out


def _loo_confusion(emb: np.ndarray, labels: np.ndarray, sums: torch.Tensor,
                   counts: np.ndarray) -> np.ndarray:
    """Confusion counts of nearest-centroid prediction, own class's centroid
    taken without the row itself; rows alone in their class are skipped."""
    import torch
    C = len(counts)
    cent = torch.nn.functional.normalize(sums, dim=1).float()
    sums32 = sums.float()
    sq = (sums32 * sums32).sum(1)
    confusion = np.zeros((C, C), np.int64)
    for start, x in unit_chunks(emb):
        lab = torch.from_numpy(labels[start:start + len(x)].astype(np.int64))
        ok = (lab >= 0) & torch.from_numpy(counts[np.maximum(
            labels[start:start + len(x)], 0)] > 1)
        x, lab = x[ok], lab[ok]
        if not len(x):
            continue
        scores = x @ cent.T
        dot_own = (x * sums32[lab]).sum(1)  # x . S_y
        # |S_y - x|^2 = |S_y|^2 - 2 x.S_y + 1 for a unit x
        norm = (sq[lab] - 2 * dot_own + 1).clamp_min(1e-12).sqrt()
        scores[torch.arange(len(x)), lab] = (dot_own - 1) / norm
        pred = scores.argmax(1)
        np.add.at(confusion, (lab.numpy(), pred.numpy()), 1)
    return confusion


def _confused_pairs(confusion: np.ndarray, sim: np.ndarray, names: List[str],
                    top: int) -> List[Dict[str, Any]]:
    sym = confusion + confusion.T
    iu = np.triu_indices(len(names), 1)
    order = np.argsort(-sym[iu], kind='stable')[:top]
    return [{'a': names[iu[0][k]], 'b': names[iu[1][k]],
             'confused': int(sym[iu][k]), 'centroid_cosine': float(
                 sim[iu[0][k], iu[1][k]])}
            for k in order if sym[iu][k] > 0]
