"""Padding variable-length rows into one batch: the single collate pattern of every task.

Text -> class models pad token states ``(T_i, H)`` to ``(B, T, H)`` with a mask; caption decoders pad token ids with
``<pad>`` and their targets with ``IGNORE``. Both go through :func:`pad` (B rows, T the longest row).
"""

from __future__ import annotations

import torch


def pad(rows: list[torch.Tensor], value: float | int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(T_i, ...)`` -> ``(B, T, ...)`` padded with ``value`` after each row, and mask ``(B, T)`` (True at
    real positions). Dtype and trailing shape follow the first row."""
    if not rows:
        raise ValueError("pad needs at least one row")
    T = max(len(r) for r in rows)
    out = rows[0].new_full((len(rows), T, *rows[0].shape[1:]), value)  # (B, T, ...)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)  # (B, T)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        mask[i, : len(r)] = True
    return out, mask
