"""Image-feature cache: encode every image once per (encoder, preprocessing, image list), reuse it in every run.

A frozen encoder gives the same features every epoch, so training decoders on cached features instead of pixels
removes the encoder from the loop (bench/bench_feature_cache.py measures the difference). Layout:

    <cache_dir>/<key>/meta.json                  encoder description, preprocessing, paths, shapes, dtype
    <cache_dir>/<key>/shard-00000.safetensors    {"grid": (n, P, C), "pooled": (n, C)} for images [0, n)
    ...

Loading does not read the shards into memory: each is memory-mapped (safetensors stores raw little-endian arrays
after a JSON header) and rows are paged in when a batch touches them, so a COCO-sized cache (113k x 49 x 2048 half
floats = 23 GB for ResNet-101) trains on a machine with much less RAM.

``key`` is a SHA-256 over the encoder's :meth:`~modalbridge.vision.encoders.ImageEncoder.cache_key` (name, weights
source, preprocessing) and the ordered image list (absolute path and byte size of each file). Shards are written
atomically as they complete, so an interrupted extraction resumes at the first missing shard; ``meta.json`` is
written last and marks the cache complete.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from modalbridge.errors import UserError
from modalbridge.files import write_json

CACHE_FORMAT = "modalbridge.features/1"


# safetensors dtype -> (numpy dtype of the raw bytes, torch dtype to view them as)
_DTYPES = {"F16": (np.float16, None), "F32": (np.float32, None), "BF16": (np.int16, torch.bfloat16)}


def mmap_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Zero-copy tensors of a safetensors file (8-byte header size, JSON header, raw data), paged in lazily.

    Copy-on-write mapping: the tensors are writable in memory but the file never changes.
    """
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise UserError(f"{path}: unsupported tensor dtype {info['dtype']} in a feature cache")
        np_dtype, view = _DTYPES[info["dtype"]]
        start, _ = info["data_offsets"]
        arr = np.memmap(path, dtype=np_dtype, mode="c", offset=8 + n + start, shape=tuple(info["shape"]))
        t = torch.from_numpy(arr)
        out[name] = t.view(view) if view is not None else t
    return out


class Rows:
    """Row access over a list of shard tensors as if they were one ``(N, ...)`` tensor, without concatenating.

    ``rows[i]`` is one row; ``rows[a:b]`` and ``rows[index_tensor]`` gather a new tensor; ``tensor()`` all rows.
    """

    def __init__(self, shards: list[torch.Tensor]):
        self.shards = shards
        self.starts = [0]
        for sh in shards:
            self.starts.append(self.starts[-1] + len(sh))

    def __len__(self) -> int:
        return self.starts[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.shards[0].shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        return self.shards[0].dtype

    def _row(self, i: int) -> torch.Tensor:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        s = bisect.bisect_right(self.starts, i) - 1
        return self.shards[s][i - self.starts[s]]

    def __getitem__(self, index):
        if isinstance(index, int):
            return self._row(index)
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        elif isinstance(index, torch.Tensor):
            index = index.tolist()
        rows = [self._row(int(i)) for i in index]
        return torch.stack(rows) if rows else torch.empty((0, *self.shape[1:]), dtype=self.dtype)

    def tensor(self) -> torch.Tensor:
        """All rows as one in-memory tensor."""
        return torch.cat([sh.clone() for sh in self.shards])


@dataclass
class FeatureCache:
    """Cached features of ``paths`` (row i = image i): ``grid`` rows ``(N, P, C)`` (None if not stored) and
    ``pooled`` rows ``(N, C)``, both :class:`Rows` over memory-mapped shards."""

    dir: Path
    paths: list[str]
    grid: Rows | None
    pooled: Rows
    meta: dict

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
    blob = json.dumps(
        {"format": CACHE_FORMAT, "encoder": encoder.cache_key(), "grid": store_grid, "dtype": dtype,
         "images": [_file_id(p) for p in paths]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


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
        if (Path(cache_dir) / key / "meta.json").is_file():
            return load(Path(cache_dir) / key)
    return None


DATASET_MAX_SIDE = 2048  # longer side of a dataset image decoded at reduced size (encoders resize to ~224-384)


class _ImageSet(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from modalbridge.vision.io import load_image

        # A file over the pixel cap (huge clip art, scans) is decoded at reduced size instead of failing the run.
        return self.preprocess.image(load_image(self.paths[i], reduce_to=DATASET_MAX_SIDE))  # (3, H, W)


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
    key = cache_key(encoder, paths, store_grid, dtype)
    root = Path(cache_dir) / key
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
    probe = mmap_safetensors(root / "shard-00000.safetensors")
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
    """Open a complete cache directory (shards memory-mapped, see the module docstring)."""
    root = Path(root)
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        raise UserError(f"{root} is not a complete feature cache (no meta.json)")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    grids, pooled = [], []
    for s in range(meta["n_shards"]):
        shard = root / f"shard-{s:05d}.safetensors"
        try:
            t = mmap_safetensors(shard)
            pooled.append(t["pooled"])
            if meta["store_grid"]:
                grids.append(t["grid"])
        except (OSError, ValueError, KeyError, struct.error, UnicodeDecodeError) as e:
            raise UserError(f"feature cache shard {shard} is missing or corrupt ({type(e).__name__}); "
                            f"delete {root} to rebuild it") from None
    rows = Rows(pooled)
    if len(rows) != meta["n_images"]:
        raise UserError(f"feature cache {root} has {len(rows)} rows for {meta['n_images']} images; delete it")
    return FeatureCache(root, list(meta["paths"]), Rows(grids) if grids else None, rows, meta)
