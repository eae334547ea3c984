"""What the caption task trains on: (image row, caption ids) pairs over cached features, their collate, the codec
between caption text and ids, and the record checks that run before any image is encoded."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from modalbridge.captioning.decoder import IGNORE
from modalbridge.errors import UserError
from modalbridge.training.batching import pad


class PairSet(torch.utils.data.Dataset):
    """(image row, token ids) pairs over an in-memory feature tensor."""

    def __init__(self, features: torch.Tensor, pairs: list[tuple[int, list[int]]]):
        self.features, self.pairs = features, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        row, ids = self.pairs[i]
        return self.features[row], ids


def make_collate(pad_id: int):
    """Batch of (features, ids) -> features ``(B, ...)`` float, input_ids ``(B, T)``, targets ``(B, T)``."""

    def collate(items):
        feats = torch.stack([f for f, _ in items]).float()
        input_ids, _ = pad([torch.tensor(ids[:-1], dtype=torch.long) for _, ids in items], pad_id)  # (B, T)
        targets, _ = pad([torch.tensor(ids[1:], dtype=torch.long) for _, ids in items], IGNORE)  # (B, T)
        return feats, input_ids, targets

    return collate


@dataclass
class Split:
    records: list  # CaptionRecord
    features: torch.Tensor  # (N, P, C) or (N, C), storage dtype (or features.Rows over memory-mapped shards)
    pairs: list[tuple[int, list[int]]]


class CaptionCodec:
    """Caption text <-> ids for either a word Vocab (SAT) or a ClipCap LM tokenizer."""

    def __init__(self, vocab=None, model=None, max_len: int = 20):
        self.vocab, self.model, self.max_len = vocab, model, max_len

    def encode(self, caption: str) -> list[int]:
        if self.vocab is not None:
            return self.vocab.encode(caption, max_len=self.max_len)
        return self.model.encode_text(caption, max_len=self.max_len)

    def decode(self, ids) -> str:
        from modalbridge.captioning.decoding import clean_caption

        return clean_caption(self.vocab.decode(ids) if self.vocab is not None else self.model.decode_text(ids))


def load_records(spec: str) -> list:
    """The records of ``data.data`` (a dataset SPEC)."""
    from modalbridge.captioning import datasets

    if not spec:
        raise UserError("data.data is empty: give a dataset SPEC (see modalbridge.captioning.datasets)")
    return list(datasets.load(spec))


def readable(records: list, what: str, max_lines: int = 20) -> list:
    """The records whose image files can be used (header checked, nothing decoded); each skipped file is said on a
    ``warning:`` line (the first ``max_lines``, then a count), so one bad file never fails a training run."""
    from modalbridge.captioning.features import DATASET_MAX_SIDE
    from modalbridge.vision.io import check_image_file

    keep, skipped = [], 0
    for r in records:
        try:
            check_image_file(r.path, reduce_to=DATASET_MAX_SIDE)
        except UserError as e:
            skipped += 1
            if skipped <= max_lines:
                warnings.warn(f"skipping a {what} image: {e}", stacklevel=2)
            continue
        keep.append(r)
    if skipped > max_lines:
        warnings.warn(f"skipped {skipped} {what} images in all ({skipped - max_lines} more not listed)", stacklevel=2)
    if not keep:
        raise UserError(f"none of the {len(records)} {what} images can be read")
    return keep


def take_split(records: list, name: str, limit: int) -> list:
    """The records of split ``name``, the first ``limit`` of them when ``limit`` > 0 (said in a warning)."""
    out = [r for r in records if r.split == name]
    if not out:
        splits = sorted({r.split for r in records})
        raise UserError(f"dataset has no '{name}' split (splits: {', '.join(splits) or 'none'})")
    if 0 < limit < len(out):  # said, not silent: a config cap can drop much of the data
        warnings.warn(f"using the first {limit} of {len(out)} '{name}' images (data.max_train_images={limit}; "
                      "0 = all)", stacklevel=2)
        return out[:limit]
    return out
