"""Retrieval metrics from a similarity matrix: Recall@K, median and mean rank (image <-> text retrieval).

Conventions (as in VSE++ / CLIP evaluations, https://arxiv.org/abs/1707.05612): rows are queries, columns
candidates; a query is answered correctly at rank r (1-based) when its best-scored correct candidate is the r-th
highest score in its row. Ties are counted against the query (pessimistic): a constant scorer gets R@1 ~ 0,
never 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modalbridge.errors import UserError


def ranks(sim, targets: Sequence[int] | Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """1-based rank of the best correct candidate for every query.

    Args:
        sim: similarity matrix ``(Q, C)`` (numpy array or torch tensor); larger = more similar.
        targets: per query, the correct column (int) or columns (list, e.g. the 5 captions of an image);
            ``None`` means the diagonal (``Q == C``, query i matches candidate i).
    """
    s = np.asarray(sim.detach().cpu().float().numpy() if hasattr(sim, "detach") else sim, dtype=np.float64)
    if s.ndim != 2:
        raise UserError(f"similarity matrix must be 2-D (queries, candidates), got shape {s.shape}")
    q, c = s.shape
    if targets is None:
        if q != c:
            raise UserError(f"targets omitted but the similarity matrix is not square: {s.shape}")
        targets = range(q)
    if len(targets) != q:
        raise UserError(f"{len(targets)} targets for {q} queries")
    out = np.empty(q, dtype=np.int64)
    for i, t in enumerate(targets):
        cols = np.atleast_1d(np.asarray(t, dtype=np.int64))
        if cols.size == 0 or cols.min() < 0 or cols.max() >= c:
            raise UserError(f"query {i}: target columns {cols.tolist()} outside 0..{c - 1}")
        row = s[i]
        best = row[cols].max()
        wrong = np.ones(c, dtype=bool)
        wrong[cols] = False
        out[i] = 1 + int(np.count_nonzero(row[wrong] >= best))
    return out


def recall_at_k(sim, targets=None, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"R@1", "R@5", "R@10", "median_rank", "mean_rank"}`` (recalls as fractions 0..1) of :func:`ranks`."""
    r = ranks(sim, targets)
    out = {f"R@{k}": float(np.mean(r <= k)) for k in ks}
    out["median_rank"] = float(np.median(r))
    out["mean_rank"] = float(np.mean(r))
    return out
