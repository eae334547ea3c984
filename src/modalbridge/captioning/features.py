"""Image-feature cache: encode every image once per (encoder, preprocessing, image list), reuse it in every run.

A frozen encoder gives the same features every epoch, so training decoders on cached features instead of pixels
removes the encoder from the loop (bench/bench_feature_cache.py measures the difference). The cache is a
:mod:`modalbridge.shards` store of fixed-size rows:

    <cache_dir>/<key>/plan.json, meta.json       see modalbridge.shards; meta.json also holds encoder, paths, dtype
    <cache_dir>/<key>/shard-00000.safetensors    {"grid": (n, P, C), "pooled": (n, C)} for images [0, n)
    ...

Loading does not read the shards into memory: each is memory-mapped and rows are paged in when a batch touches
them, so a COCO-sized cache (113k x 49 x 2048 half floats = 23 GB for ResNet-101) trains on a machine with much
less RAM.

``key`` is a SHA-256 over the encoder's :meth:`~modalbridge.vision.encoders.ImageEncoder.cache_key` (name, weights
source, preprocessing) and the ordered image list (absolute path and byte size of each file). Shards are written
atomically as they complete, so an interrupted extraction resumes at the first missing shard; ``meta.json`` is
written last and marks the cache complete.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from modalbridge import shards
from modalbridge.errors import UserError
from modalbridge.shards import Rows, mmap_safetensors

__all__ = ["DATASET_MAX_SIDE", "FeatureCache", "Rows", "cache_key", "cached", "extract", "load", "mmap_safetensors"]

CACHE_FORMAT = "modalbridge.features/2"
OK = "ok"  # (N,) uint8 per row: 0 where the image could not be decoded (its feature rows are zeros)


@dataclass
class FeatureCache:
    """Cached features of ``paths`` (row i = image i): ``grid`` rows ``(N, P, C)`` (None if not stored) and
    ``pooled`` rows ``(N, C)``, both :class:`Rows` over memory-mapped shards."""

    dir: Path
    paths: list[str]
    grid: Rows | None
    pooled: Rows
    meta: dict
    failed: list[int]  # rows whose image could not be decoded (zeros in grid and pooled): leave them out

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, feature: str) -> Rows:
        """``"grid"`` or ``"pooled"``."""
        if feature == "grid":
            if self.grid is None:
                raise UserError(f"feature cache {self.dir} holds only pooled features; re-extract with grid")
            return self.grid
        return self.pooled


def _file_id(path: str | Path) -> list:
    p = Path(path)
    try:
        return [str(p.resolve()), p.stat().st_size]
    except OSError:
        raise UserError(f"image not found: {path}") from None


def cache_key(encoder, paths: list[str | Path], store_grid: bool = True, dtype: str = "float16") -> str:
    """Hash of (encoder, preprocessing, ordered image list, storage options)."""
    return shards.key({"format": CACHE_FORMAT, "encoder": encoder.cache_key(), "grid": store_grid, "dtype": dtype,
                       "images": [_file_id(p) for p in paths]})


def cached(encoder, paths: list[str | Path], cache_dir: str | Path, store_grid: bool = True,
           dtype: str = "float16") -> FeatureCache | None:
    """The complete cache of these files if there is one (what :func:`extract` would load), else None.

    One cache per encoder serves every decoder: pooled-only requests (Show and Tell, ClipCap) reuse a cache that
    also holds the grid (written for Show, Attend and Tell) instead of extracting again."""
    try:
        keys = [cache_key(encoder, paths, grid, dtype) for grid in ((True,) if store_grid else (False, True))]
    except UserError:  # a missing file: nothing can be cached for this list
        return None
    for key in keys:
        if shards.complete(Path(cache_dir) / key) is not None:
            return load(Path(cache_dir) / key)
    return None


DATASET_MAX_SIDE = 2048  # longer side of a dataset image decoded at reduced size (encoders resize to ~224-384)


class _ImageSet(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        """``(pixels (3, H, W), "")``, or zeros and the reason when the file cannot be decoded (a truncated body
        behind a valid header): one bad file never fails an extraction; its ``ok`` row is 0 (FeatureCache.failed)."""
        from modalbridge.vision.io import load_image

        try:
            # A file over the pixel cap (huge clip art, scans) is decoded at reduced size instead of failing the run.
            return self.preprocess.image(load_image(self.paths[i], reduce_to=DATASET_MAX_SIDE)), ""
        except UserError as e:
            return torch.zeros(3, *self.preprocess.size), str(e) or "unreadable"


def extract(
    encoder,
    paths: list[str | Path],
    cache_dir: str | Path = "cache/features",
    batch_size: int = 32,
    shard_size: int = 2048,
    store_grid: bool = True,
    dtype: str = "float16",
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FeatureCache:
    """Features of ``paths`` from the cache, computing (and storing) whatever is missing.

    Args:
        encoder: an :class:`~modalbridge.vision.encoders.ImageEncoder` (frozen; its features must not change).
        paths: image files, in the row order wanted.
        cache_dir: root of all caches.
        batch_size: images per encoder forward.
        shard_size: images per safetensors shard (a multiple of ``batch_size`` is best).
        store_grid: also keep the (large) grid features, needed by attention decoders.
        dtype: storage dtype, ``float16`` (half the disk and memory; decoders compute in float32) or ``float32``.
        num_workers: DataLoader workers decoding images in parallel.
        device: where the encoder runs.
        progress: show a progress bar on stderr.
    """
    if not encoder.frozen:
        raise UserError("the feature cache needs a frozen encoder (trainable_blocks=0)")
    if dtype not in ("float16", "float32", "bfloat16"):
        raise UserError(f"feature cache dtype must be float16, float32 or bfloat16, got {dtype!r}")
    paths = [str(p) for p in paths]
    if not paths:
        raise UserError("no images to extract features from")
    found = cached(encoder, paths, cache_dir, store_grid, dtype)
    if found is not None:
        return found
    fields = ["grid", "pooled", OK] if store_grid else ["pooled", OK]
    writer = shards.ShardWriter(Path(cache_dir) / cache_key(encoder, paths, store_grid, dtype), len(paths),
                                shard_size, fixed=fields)
    todo = writer.missing()
    store = getattr(torch, dtype)
    encoder = encoder.to(device).eval()
    from tqdm.auto import tqdm

    failed: list[tuple[str, str]] = []
    bar = tqdm(total=len(paths), initial=len(paths) - sum(hi - lo for lo, hi in map(writer.bounds, todo)),
               desc=f"features {encoder.name}", unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for s in todo:
        lo, hi = writer.bounds(s)
        loader = torch.utils.data.DataLoader(
            _ImageSet(paths[lo:hi], encoder.preprocess), batch_size=batch_size, num_workers=num_workers
        )
        out = {name: [] for name in fields}
        row = lo
        for pixels, errors in loader:
            with torch.no_grad():
                feats = encoder.features(pixels.to(device))
            for name in fields[:-1]:
                out[name].append(getattr(feats, name).to("cpu", store))  # (b, P, C) grid, (b, C) pooled
            out[OK].append(torch.tensor([not e for e in errors], dtype=torch.uint8))  # (b,)
            failed += [(paths[row + j], e) for j, e in enumerate(errors) if e]
            row += len(pixels)
            bar.update(len(pixels))
        writer.write(s, fixed={name: torch.cat(parts) for name, parts in out.items()})
    bar.close()
    for path, err in failed[:20]:
        warnings.warn(f"{path} could not be decoded; its image is left out: {err}", stacklevel=2)
    if len(failed) > 20:
        warnings.warn(f"{len(failed)} images could not be decoded in all ({len(failed) - 20} more not listed)",
                      stacklevel=2)
    meta = {"format": CACHE_FORMAT, "key": writer.root.name, "encoder": encoder.cache_key(), "store_grid": store_grid,
            "dtype": dtype, "paths": paths}
    return _open(writer.finish(meta))


def load(root: str | Path) -> FeatureCache:
    """Open a complete cache directory (shards memory-mapped, see the module docstring)."""
    return _open(shards.load(root))


def _open(store: shards.Store) -> FeatureCache:
    paths = list(store.meta["paths"])
    if len(store) != len(paths):
        raise UserError(f"feature cache {store.dir} has {len(store)} rows for {len(paths)} images; delete it")
    grid = store.rows("grid") if store.has("grid") else None
    failed = torch.nonzero(store.rows(OK).tensor() == 0).flatten().tolist() if store.has(OK) else []
    return FeatureCache(store.dir, paths, grid, store.rows("pooled"), store.meta, failed)
