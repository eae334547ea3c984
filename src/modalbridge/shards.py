"""Shard store: N rows of tensors computed once, written shard by shard, read back memory-mapped.

Both feature caches (image features for caption training, ``captioning/features.py``; text-encoder token states for
the text-to-image mapper, ``t2i/features.py``) are one of these. An entry is a directory

    <root>/plan.json                    what the shards are being written for (n, shard size, fields, spec)
    <root>/shard-00000.safetensors      rows [0, shard_size)
    <root>/shard-00001.safetensors      rows [shard_size, 2 * shard_size)
    ...
    <root>/meta.json                    written last: the caller's description + n, shards, fields; marks completeness

A shard holds two kinds of fields:

- fixed-size rows, ``name: (n_s, ...)``, read as :class:`Rows` (row i is ``(...)``);
- variable-length rows, ``name: (T_s, ...)`` flattened plus one ``offsets: (n_s + 1,)`` int64 shared by all
  variable-length fields of the store, read as :class:`RaggedRows` (row i is ``(T_i, ...)``, ``T_s = sum T_i``).

:class:`ShardWriter` writes each shard atomically (temp file + ``os.replace``) as it completes and skips the shards
already on disk, so an interrupted computation resumes at the first missing shard; a writer with another plan (row
count, shard size, fields, storage spec) clears the old shards first. :func:`load` memory-maps every shard
(safetensors stores raw little-endian arrays after a JSON header), so rows are paged in when something reads them
and a cache larger than RAM still trains; a missing or corrupt shard is one :class:`UserError` naming the file.
:func:`key` hashes whatever identifies an entry into a directory name.

Notation: N rows, n_s rows of shard s, T_i tokens of variable-length row i, T_s tokens of shard s.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from modalbridge.errors import UserError
from modalbridge.files import ordinary_mode, write_json

STORE_FORMAT = "modalbridge.shards/1"
OFFSETS = "offsets"  # the shared offsets tensor of variable-length fields

# safetensors dtype -> (numpy dtype of the raw bytes, torch dtype to view them as)
_DTYPES = {"F16": (np.float16, None), "F32": (np.float32, None), "BF16": (np.int16, torch.bfloat16),
           "I64": (np.int64, None), "U8": (np.uint8, None)}


def key(spec: dict, length: int = 24) -> str:
    """SHA-256 (hex, first ``length`` characters) of a JSON-serialisable description of an entry."""
    blob = json.dumps(spec, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def shard_file(s: int) -> str:
    return f"shard-{s:05d}.safetensors"


def mmap_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Zero-copy tensors of a safetensors file (8-byte header size, JSON header, raw data), paged in lazily.

    Copy-on-write mapping: the tensors are writable in memory but the file never changes. A truncated or
    malformed file raises ``ValueError`` saying what is wrong (``OSError`` if it cannot be opened).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            raise ValueError("header runs past the end of the file")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"unsupported tensor dtype {info['dtype']}")
        np_dtype, view = _DTYPES[info["dtype"]]
        shape = tuple(info["shape"])
        start, end = info["data_offsets"]
        if end - start != math.prod(shape) * np.dtype(np_dtype).itemsize or 8 + n + end > size:
            raise ValueError(f"tensor '{name}' does not fit the file")
        if math.prod(shape) == 0:
            t = torch.from_numpy(np.empty(shape, dtype=np_dtype))
        else:
            t = torch.from_numpy(np.memmap(path, dtype=np_dtype, mode="c", offset=8 + n + start, shape=shape))
        out[name] = t.view(view) if view is not None else t
    return out


class Rows:
    """Fixed-size rows over a list of shard tensors as if they were one ``(N, ...)`` tensor, without concatenating.

    ``rows[i]`` is one row; ``rows[a:b]`` and ``rows[index_tensor]`` gather a new tensor; ``tensor()`` all rows.
    """

    def __init__(self, shards: list[torch.Tensor]):
        self.shards = shards  # (n_s, ...) each
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
        """All rows as one in-memory tensor (N, ...)."""
        return torch.cat(self.shards)


class RaggedRows:
    """Variable-length rows over shards of flattened values + offsets: ``rows[i]`` is the ``(T_i, ...)`` slice of
    its shard (no copy); ``tensor()`` concatenates all values ``(sum T_i, ...)``, ``offsets`` indexes into it."""

    def __init__(self, shards: list[tuple[torch.Tensor, torch.Tensor]]):
        self.values = [v for v, _ in shards]  # (T_s, ...) each
        lengths = torch.cat([o[1:] - o[:-1] for _, o in shards])  # (N,)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])  # (N + 1,), in memory
        self.starts, self.token_starts = [0], [0]  # first row and first token of each shard
        for v, o in shards:
            self.starts.append(self.starts[-1] + len(o) - 1)
            self.token_starts.append(self.token_starts[-1] + len(v))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]  # (N,)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :meth:`tensor`: ``(sum T_i, ...)``."""
        return (self.token_starts[-1], *self.values[0].shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        return self.values[0].dtype

    def __getitem__(self, i: int) -> torch.Tensor:
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        s = bisect.bisect_right(self.starts, i) - 1
        base = self.token_starts[s]
        return self.values[s][int(self.offsets[i]) - base : int(self.offsets[i + 1]) - base]  # (T_i, ...)

    def tensor(self) -> torch.Tensor:
        """All rows' values as one in-memory tensor (sum T_i, ...)."""
        return torch.cat(self.values)


class ShardWriter:
    """Writes the shards of one entry, one at a time, then ``meta.json`` (see the module docstring).

    Args:
        root: the entry directory (created).
        n: rows in all.
        shard_size: rows per shard (the last one may hold fewer).
        fixed: names of the fixed-size fields.
        ragged: names of the variable-length fields (they share one ``offsets``).
        spec: anything else the stored bytes depend on (e.g. the storage dtype) that the entry's key does not.
        fresh: discard the shards already written instead of resuming.
    """

    def __init__(self, root: str | Path, n: int, shard_size: int, fixed: Sequence[str] = (),
                 ragged: Sequence[str] = (), spec: dict | None = None, fresh: bool = False):
        if n < 1 or shard_size < 1:
            raise UserError(f"a shard store needs n >= 1 rows and shard_size >= 1 (got {n}, {shard_size})")
        names = [*fixed, *ragged]
        if not names or len(set(names)) != len(names) or OFFSETS in names:
            raise ValueError(f"shard fields must be distinct, non-empty and not '{OFFSETS}': {names}")
        self.root, self.n, self.shard_size = Path(root), n, shard_size
        self.fixed, self.ragged = sorted(fixed), sorted(ragged)
        self.n_shards = (n + shard_size - 1) // shard_size
        plan = {"store": STORE_FORMAT, "n": n, "shard_size": shard_size, "fixed": self.fixed, "ragged": self.ragged,
                "spec": spec or {}}
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "meta.json").unlink(missing_ok=True)  # incomplete from here until finish()
        if fresh or _read_json(self.root / "plan.json") != plan:
            for f in self.root.glob("shard-*.safetensors"):
                f.unlink()
            write_json(self.root / "plan.json", plan)

    def bounds(self, s: int) -> tuple[int, int]:
        """Rows [lo, hi) of shard ``s``."""
        return s * self.shard_size, min(self.n, (s + 1) * self.shard_size)

    def missing(self) -> list[int]:
        """Shards not on disk yet, in order."""
        return [s for s in range(self.n_shards) if not (self.root / shard_file(s)).is_file()]

    def write(self, s: int, fixed: dict[str, torch.Tensor] | None = None,
              ragged: dict[str, list[torch.Tensor]] | None = None) -> None:
        """Store shard ``s`` atomically: ``fixed[name]`` is ``(n_s, ...)``, ``ragged[name]`` a list of n_s
        ``(T_i, ...)`` tensors (the same T_i for every variable-length field)."""
        fixed, ragged = fixed or {}, ragged or {}
        if sorted(fixed) != self.fixed or sorted(ragged) != self.ragged:
            raise ValueError(f"shard fields {sorted(fixed)} + {sorted(ragged)}, expected {self.fixed} + {self.ragged}")
        lo, hi = self.bounds(s)
        tensors = {}
        for name, t in fixed.items():
            if len(t) != hi - lo:
                raise ValueError(f"field '{name}' of shard {s} has {len(t)} rows, expected {hi - lo}")
            tensors[name] = t.contiguous()
        lengths = None
        for name, rows in ragged.items():
            ls = [len(r) for r in rows]
            if len(ls) != hi - lo or (lengths is not None and ls != lengths):
                raise ValueError(f"field '{name}' of shard {s}: {len(ls)} rows of other lengths than expected")
            lengths = ls
            tensors[name] = torch.cat(rows).contiguous()  # (T_s, ...)
        if lengths is not None:
            tensors[OFFSETS] = torch.tensor([0, *lengths], dtype=torch.long).cumsum(0)  # (n_s + 1,)
        tmp = self.root / f".{shard_file(s)}.{os.getpid()}.tmp"
        try:
            save_file(tensors, str(tmp))
            ordinary_mode(tmp)
            os.replace(tmp, self.root / shard_file(s))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def finish(self, meta: dict, what: str = "feature cache") -> Store:
        """Write ``meta.json`` (``meta`` + the store's own keys) once every shard is on disk; returns the entry."""
        if self.missing():
            raise ValueError(f"shards {self.missing()} of {self.root} are not written yet")
        opened = [_open_shard(self.root, shard_file(s), what) for s in range(self.n_shards)]
        first = opened[0]
        shards = []
        for s, t in enumerate(opened):
            entry = {"file": shard_file(s), "n": self.bounds(s)[1] - self.bounds(s)[0]}
            if self.ragged:
                entry["tokens"] = int(t[OFFSETS][-1])
            shards.append(entry)
        store_meta = {
            "store": STORE_FORMAT, "n": self.n, "shard_size": self.shard_size, "n_shards": self.n_shards,
            "fields": {name: {"ragged": name in self.ragged, "shape": list(first[name].shape[1:]),
                              "dtype": str(first[name].dtype).removeprefix("torch.")}
                       for name in [*self.fixed, *self.ragged]},
            "shards": shards,
        }
        if self.ragged:
            store_meta["tokens"] = sum(sh["tokens"] for sh in shards)
        write_json(self.root / "meta.json", {**meta, **store_meta})
        return load(self.root, what)


@dataclass
class Store:
    """A complete entry: ``meta.json`` and every shard's tensors, memory-mapped."""

    dir: Path
    meta: dict
    shards: list[dict[str, torch.Tensor]]

    def __len__(self) -> int:
        return int(self.meta["n"])

    def has(self, name: str) -> bool:
        return name in self.meta["fields"]

    def rows(self, name: str) -> Rows:
        """Fixed-size field ``name`` as (N, ...) rows."""
        return Rows([sh[name] for sh in self.shards])

    def ragged(self, name: str) -> RaggedRows:
        """Variable-length field ``name``: row i is (T_i, ...)."""
        return RaggedRows([(sh[name], sh[OFFSETS]) for sh in self.shards])


def _read_json(path: Path) -> dict | None:
    """A JSON object from a file, or None if it is missing or unreadable."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def complete(root: str | Path) -> dict | None:
    """The entry's ``meta.json`` if it is complete (written by this store, every shard file present), else None."""
    root = Path(root)
    meta = _read_json(root / "meta.json")
    if meta is None or meta.get("store") != STORE_FORMAT:
        return None
    return meta if all((root / sh["file"]).is_file() for sh in meta["shards"]) else None


def _open_shard(root: Path, file: str, what: str) -> dict[str, torch.Tensor]:
    try:
        return mmap_safetensors(root / file)
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = str(e) if isinstance(e, ValueError) else type(e).__name__
        raise UserError(f"{what} shard {root / file} is missing or unreadable ({reason}); "
                        f"delete {root} to rebuild it") from None


def load(root: str | Path, what: str = "feature cache") -> Store:
    """Open a complete entry, every shard memory-mapped and checked against ``meta.json``."""
    root = Path(root)
    meta = _read_json(root / "meta.json")
    if meta is None or meta.get("store") != STORE_FORMAT:
        raise UserError(f"{root} is not a complete {what} (no readable meta.json)")
    shards = []
    for sh in meta["shards"]:
        t = _open_shard(root, sh["file"], what)
        n = sh["n"]
        for name, field in meta["fields"].items():
            ok = name in t and (
                (OFFSETS in t and t[OFFSETS].shape == (n + 1,) and int(t[OFFSETS][-1]) == len(t[name])
                 and bool((t[OFFSETS][1:] >= t[OFFSETS][:-1]).all()))
                if field["ragged"] else len(t[name]) == n)
            if not ok:
                raise UserError(f"{what} shard {root / sh['file']} does not hold the {n} rows of '{name}' that "
                                f"meta.json lists; delete {root} to rebuild it")
        shards.append(t)
    if sum(sh["n"] for sh in meta["shards"]) != meta["n"]:
        raise UserError(f"{what} {root}: meta.json lists shards of {sum(sh['n'] for sh in meta['shards'])} rows "
                        f"for {meta['n']}; delete it to rebuild it")
    return Store(root, meta, shards)
