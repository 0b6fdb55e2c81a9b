"""User-user cosine similarity and the collaborative list each user is served.

Users are rows of a sparse user x item matrix of like/click weights decayed on the
slow "taste" clock (weighted()'s taste_weight). Columns are IDF-weighted (a co-like of a niche item says more than one of a bestseller),
rows L2-normalised with scikit-learn, and the top-k cosine neighbours per user come
from sparse_dot_topn, which computes the same cosine as sklearn's cosine_similarity
but keeps only the top k per row in C++ threads instead of materialising the product.

The collaborative list is sum_v sim(u, v)^alpha * w(v, i) over u's neighbours v, with
w on the fast "demand" clock (weighted()'s weight): neighbours are chosen by lasting
taste and vote with what they want now. u's liked items and out-of-stock items are
left out; the top `list_size` are kept.

The work is split into shards of query users (row index % shards == shard), each
processed in chunks, so memory stays bounded and shards can run on separate workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import normalize
from sparse_dot_topn import sp_matmul_topn

MIN_INTERACTIONS = 3


@dataclass(frozen=True)
class SimilarityConfig:
    k: int = 20
    list_size: int = 100
    idf: bool = True
    alpha: float = 1.0  # sharpening of neighbour weights in the collaborative score
    chunk_rows: int = 4000
    n_threads: int = 2


@dataclass
class Matrix:
    X: sp.csr_matrix  # users x items, weights decayed for demand (votes)
    T: sp.csr_matrix  # users x items, weights decayed for taste (similarity)
    liked: sp.csr_matrix  # users x items, 1 where the user liked the item
    user_ids: np.ndarray
    item_ids: np.ndarray
    counts: np.ndarray  # distinct items per user (= interaction_count)


def build_matrix(pairs: pd.DataFrame) -> Matrix:
    users = pd.Categorical(pairs["user_id"])
    items = pd.Categorical(pairs["item_id"])
    shape = (len(users.categories), len(items.categories))
    rows, cols = users.codes, items.codes
    X = sp.csr_matrix((pairs["weight"].to_numpy(np.float32), (rows, cols)), shape=shape)
    taste = pairs["taste_weight"] if "taste_weight" in pairs else pairs["weight"]
    T = sp.csr_matrix((taste.to_numpy(np.float32), (rows, cols)), shape=shape)
    liked_mask = pairs["liked"].to_numpy(bool)
    liked = sp.csr_matrix(
        (np.ones(liked_mask.sum(), np.float32), (rows[liked_mask], cols[liked_mask])), shape=shape
    )
    counts = np.diff(X.indptr)
    return Matrix(X, T, liked, np.asarray(users.categories), np.asarray(items.categories), counts)


def _similarity_rows(m: Matrix, cfg: SimilarityConfig, item_users=None, n_users=None) -> sp.csr_matrix:
    X = m.T.astype(np.float32)
    if cfg.idf:
        if item_users is None:
            df = np.bincount(X.indices, minlength=X.shape[1])
        else:  # a partial matrix (live fold-in): the whole data's counts, passed in
            df = item_users.reindex(m.item_ids).fillna(0).to_numpy(np.int64)
        n = X.shape[0] if n_users is None else n_users
        idf = np.log((1.0 + n) / (1.0 + df)).astype(np.float32) + 1.0
        X = X @ sp.diags(idf)
    return normalize(X, norm="l2", axis=1, copy=False).tocsr()


def _top_per_row(M: sp.csr_matrix, n: int):
    """(row, col, value) of the n largest values per row, best first."""
    M = M.tocoo()
    if M.nnz == 0:
        return np.array([], np.int64), np.array([], np.int64), np.array([], np.float32)
    order = np.lexsort((-M.data, M.row))
    row, col, val = M.row[order], M.col[order], M.data[order]
    starts = np.searchsorted(row, row, side="left")
    keep = (np.arange(len(row)) - starts) < n
    return row[keep], col[keep], val[keep]


def compute_similarities(pairs: pd.DataFrame, in_stock_items, cfg: SimilarityConfig, shard: int = 0,
                         shards: int = 1, progress=None, query_users=None, item_users: pd.Series | None = None,
                         n_users: int | None = None):
    """Returns (similarities, recommendations) for this shard's users with 3+ interactions.

    similarities: user_id, similar_user_id, similarity_score (no self pairs).
    recommendations: user_id, item_ids (np.int64 array), scores (np.float32 array).

    The live fold-in (workers/live.py) passes only part of the data: `query_users`
    and everyone sharing an item with them (cosine is zero for anyone else), with the
    whole data's `item_users` (distinct users per item) and `n_users`, so the IDF and
    hence the result are what a full run over everything would give those users.
    """
    m = build_matrix(pairs)
    Xn = _similarity_rows(m, cfg, item_users, n_users)
    XnT = Xn.T.tocsr()
    stock = np.isin(m.item_ids, np.asarray(list(in_stock_items), dtype=m.item_ids.dtype))
    X_rec = (m.X @ sp.diags(stock.astype(np.float32))).tocsr()
    X_rec.eliminate_zeros()
    wanted = (m.counts >= MIN_INTERACTIONS) & (np.arange(len(m.counts)) % shards == shard)
    if query_users is not None:
        wanted &= np.isin(m.user_ids, np.asarray(list(query_users), dtype=m.user_ids.dtype))
    query = np.flatnonzero(wanted)
    sims, recs = [], []
    for start in range(0, len(query), cfg.chunk_rows):
        rows = query[start : start + cfg.chunk_rows]
        S = sp_matmul_topn(Xn[rows], XnT, top_n=cfg.k + 1, threshold=1e-6, n_threads=cfg.n_threads)
        S = S.tocoo()
        not_self = rows[S.row] != S.col
        S = sp.csr_matrix((S.data[not_self], (S.row[not_self], S.col[not_self])), shape=S.shape)
        r, c, v = _top_per_row(S, cfg.k)
        sims.append(pd.DataFrame({"user_id": m.user_ids[rows[r]], "similar_user_id": m.user_ids[c],
                                  "similarity_score": v.astype(np.float64)}))
        if cfg.alpha != 1.0:
            S.data = np.power(S.data, cfg.alpha)
        R = (S @ X_rec).tocsr()
        # Drop what the user already liked: multiply by (1 - liked) on the stored entries.
        seen = m.liked[rows]
        R = R - R.multiply(seen > 0)
        R.eliminate_zeros()
        rr, rc, rv = _top_per_row(R, cfg.list_size)
        if len(rr):
            bounds = np.flatnonzero(np.diff(rr)) + 1
            for part_r, part_c, part_v in zip(np.split(rr, bounds), np.split(rc, bounds), np.split(rv, bounds)):
                recs.append((m.user_ids[rows[part_r[0]]], m.item_ids[part_c].astype(np.int64),
                             part_v.astype(np.float32)))
        if progress:
            progress(len(rows))
    sim_frame = pd.concat(sims, ignore_index=True) if sims else pd.DataFrame(
        {"user_id": [], "similar_user_id": [], "similarity_score": []})
    rec_frame = pd.DataFrame(recs, columns=["user_id", "item_ids", "scores"])
    return sim_frame, rec_frame
