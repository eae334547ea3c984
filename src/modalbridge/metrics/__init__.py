"""Metrics: COCO caption metrics (pycocoevalcap-exact) and retrieval metrics (Recall@K from a similarity matrix)."""

from modalbridge.metrics.caption import METRIC_KEYS, cider_d, ptb_tokenize, score
from modalbridge.metrics.retrieval import ranks, recall_at_k

__all__ = ["METRIC_KEYS", "cider_d", "ptb_tokenize", "ranks", "recall_at_k", "score"]
