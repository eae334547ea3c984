"""Image-feature cache: encode every image once per (encoder, preprocessing, image list), reuse it in every run.

A frozen encoder gives the same features every epoch, so training decoders on cached features instead of pixels
removes the encoder from the loop (bench/bench_feature_cache.py measures the difference). Layout:

    <cache_dir>/<key>/meta.json                  encoder description, preprocessing, paths, shapes, dtype
    <cache_dir>/<key>/shard-00000.safetensors    {"grid": (n, P, C), "pooled": (n, C)} for images [0, n)
    ...

``key`` is a SHA-256 over the encoder's :meth:`~modalbridge.vision.encoders.ImageEncoder.cache_key` (name, weights
source, preprocessing) and the ordered image list (absolute path and byte size of each file). Shards are written
atomically as they complete, so an interrupted extraction resumes at the first missing shard; ``meta.json`` is
written last and marks the cache complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from modalbridge.checkpoint import write_json
from modalbridge.errors import UserError

CACHE_FORMAT = "modalbridge.features/1"


@dataclass
class FeatureCache:
    """Cached features of ``paths`` (row i = image i): ``grid (N, P, C)`` (None if not stored), ``pooled (N, C)``."""

    dir: Path
    paths: list[str]
    grid: torch.Tensor | None
    pooled: torch.Tensor
    meta: dict

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, feature: str) -> torch.Tensor:
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
    blob = json.dumps(
        {"format": CACHE_FORMAT, "encoder": encoder.cache_key(), "grid": store_grid, "dtype": dtype,
         "images": [_file_id(p) for p in paths]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


class _ImageSet(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from modalbridge.vision.io import load_image

        return self.preprocess.image(load_image(self.paths[i]))  # (3, H, W)


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
    key = cache_key(encoder, paths, store_grid, dtype)
    root = Path(cache_dir) / key
    if (root / "meta.json").is_file():
        return load(root)
    root.mkdir(parents=True, exist_ok=True)
    n_shards = (len(paths) + shard_size - 1) // shard_size
    todo = [s for s in range(n_shards) if not (root / f"shard-{s:05d}.safetensors").is_file()]
    store = getattr(torch, dtype)
    encoder = encoder.to(device).eval()
    from tqdm.auto import tqdm

    done = (n_shards - len(todo)) * shard_size
    bar = tqdm(total=len(paths), initial=min(done, len(paths)), desc=f"features {encoder.name}", unit="img",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for s in todo:
        lo, hi = s * shard_size, min(len(paths), (s + 1) * shard_size)
        loader = torch.utils.data.DataLoader(
            _ImageSet(paths[lo:hi], encoder.preprocess), batch_size=batch_size, num_workers=num_workers
        )
        grids, pooled = [], []
        for pixels in loader:
            with torch.no_grad():
                out = encoder.features(pixels.to(device))
            if store_grid:
                grids.append(out.grid.to("cpu", store))
            pooled.append(out.pooled.to("cpu", store))
            bar.update(len(pixels))
        tensors = {"pooled": torch.cat(pooled).contiguous()}
        if store_grid:
            tensors["grid"] = torch.cat(grids).contiguous()
        tmp = root / f".shard-{s:05d}.{os.getpid()}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, root / f"shard-{s:05d}.safetensors")
    bar.close()
    probe = load_file(str(root / "shard-00000.safetensors"))
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "encoder": encoder.cache_key(),
        "feature_dim": int(probe["pooled"].shape[-1]),
        "num_positions": int(probe["grid"].shape[1]) if store_grid else None,
        "store_grid": store_grid,
        "dtype": dtype,
        "n_images": len(paths),
        "shard_size": shard_size,
        "n_shards": n_shards,
        "paths": paths,
    }
    write_json(root / "meta.json", meta)
    return load(root)


def load(root: str | Path) -> FeatureCache:
    """Load a complete cache directory (all shards into memory)."""
    root = Path(root)
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        raise UserError(f"{root} is not a complete feature cache (no meta.json)")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    grids, pooled = [], []
    for s in range(meta["n_shards"]):
        shard = root / f"shard-{s:05d}.safetensors"
        try:
            t = load_file(str(shard))
        except Exception as e:  # noqa: BLE001 - any unreadable shard means the cache must be rebuilt
            raise UserError(f"feature cache shard {shard} is missing or corrupt ({type(e).__name__}); "
                            f"delete {root} to rebuild it") from None
        pooled.append(t["pooled"])
        if meta["store_grid"]:
            grids.append(t["grid"])
    pooled_t = torch.cat(pooled)
    if len(pooled_t) != meta["n_images"]:
        raise UserError(f"feature cache {root} has {len(pooled_t)} rows for {meta['n_images']} images; delete it")
    return FeatureCache(root, list(meta["paths"]), torch.cat(grids) if grids else None, pooled_t, meta)
