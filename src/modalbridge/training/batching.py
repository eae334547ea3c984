"""How every task makes its batches: a resume-exact shuffling order (:class:`EpochSampler`, :func:`make_loader`)
and padding variable-length rows into one batch (:func:`pad`, the single collate pattern).

Text -> class models pad token states ``(T_i, H)`` to ``(B, T, H)`` with a mask; caption decoders pad token ids with
``<pad>`` and their targets with ``IGNORE``. Both go through :func:`pad` (B rows, T the longest row).
"""

from __future__ import annotations

import torch


class EpochSampler(torch.utils.data.Sampler):
    """A shuffling sampler whose order is a function of (seed, epoch); Lightning calls ``set_epoch``.
    Under DDP each rank takes every ``world``-th index of the same permutation.

    ``lengths`` + ``group``: group by length (as Hugging Face's ``group_by_length``): the permutation is cut into
    mega-batches of ``group`` items, each sorted by length (longest first), so the items of a batch have similar
    lengths and a padded batch holds little padding; which mega-batch and where stays random."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1,
                 lengths: list[int] | None = None, group: int = 0):
        self.n, self.seed, self.shuffle, self.rank, self.world, self.epoch = n, seed, shuffle, rank, world, 0
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} items")
        self.lengths, self.group = lengths, group

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
            if self.lengths is not None and self.group > 1:
                order = [i for a in range(0, self.n, self.group)
                         for i in sorted(order[a : a + self.group], key=lambda i: -self.lengths[i])]
        else:
            order = list(range(self.n))
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int, trainer=None, lengths: list[int] | None = None,
                **kwargs):
    """DataLoader with an :class:`EpochSampler` sharded over the trainer's ranks; with ``lengths``, batches are
    grouped by length within mega-batches of 50 batches (less padding, same items per epoch)."""
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    sampler = EpochSampler(len(dataset), seed, shuffle, rank, world, lengths, 50 * batch_size * world)
    # A private generator: creating the loader's iterator draws a base seed, which must not consume the global RNG
    # (dropout) at a point that differs between a resumed and an uninterrupted run.
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs)


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
