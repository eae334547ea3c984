"""Feature cache: the frozen text encoder's hidden states for every prepared sentence, computed once.

A prepared sentence directory (``modalbridge prepare``) holds ``sentences.jsonl``. ``extract`` runs the encoder over
all of its sentences (every split, file order) and stores the token states as a :mod:`modalbridge.shards` store of
variable-length rows under

    <cache>/<encoder>-L<layer>-T<max_len>-<key hash>/
        plan.json, meta.json      see modalbridge.shards; meta.json also holds encoder name, layer, max_length,
                                  hidden size, sentences hash, n, tokens, shards
        shard-00000.safetensors   states (N_tok, H) flattened, offsets (n + 1,): sentence i is states[o[i]:o[i+1]]

The key hash covers encoder name + layer + max_length + the sentences hash, so a changed sentence set or encoder
setting gets a new entry and every training run with the same settings reuses the old one. ``<cache>`` defaults to
``<data dir>/features``. Shards are written atomically as they complete, so an interrupted extraction resumes at the
first missing shard, and ``meta.json``, written last, marks the entry complete. Flattened states + offsets waste
nothing on padding; states are float16 by default and memory-mapped when loaded.

Notation: N sentences, N_tok word pieces of all sentences together, H encoder hidden size.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from modalbridge import shards
from modalbridge.errors import UserError
from modalbridge.shards import RaggedRows
from modalbridge.t2i.sentence_files import load_sentences, sentences_hash
from modalbridge.text.encoders import TextEncoder, load_text_encoder

FORMAT_VERSION = 2
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class Features:
    """Token states of N sentences, in ``sentences.jsonl`` order, memory-mapped.

    Attributes:
        rows: the states; ``rows[i]`` (also ``features[i]``) is sentence i's (T_i, H) states, read from its shard.
        meta: the cache entry's ``meta.json``.
    """

    rows: RaggedRows
    meta: dict

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.rows[i]  # (T_i, H)

    @cached_property
    def states(self) -> torch.Tensor:
        """(N_tok, H) all sentences' word-piece states, concatenated into memory on first use."""
        return self.rows.tensor()

    @property
    def offsets(self) -> torch.Tensor:
        """(N + 1,) int64; sentence i is ``states[offsets[i]:offsets[i + 1]]``."""
        return self.rows.offsets

    @property
    def lengths(self) -> torch.Tensor:
        return self.rows.lengths  # (N,)

    @property
    def hidden_size(self) -> int:
        return int(self.rows.shape[1])


def _sentences(data_dir: Path) -> tuple[list[str], str]:
    rows = load_sentences(data_dir)
    return [r["text"] for r in rows], sentences_hash(data_dir)


def entry_dir(data_dir: str | Path, encoder: str, layer: int = -1, max_length: int | None = None,
              cache: str | Path | None = None, sentences_hash: str | None = None) -> Path:
    """Where the cache entry for these settings lives (it may not exist yet)."""
    data_dir = Path(data_dir)
    if sentences_hash is None:
        from modalbridge.t2i.sentence_files import sentences_hash as _hash

        sentences_hash = _hash(data_dir)
    root = Path(cache) if cache else data_dir / "features"
    key = shards.key({"format": FORMAT_VERSION, "encoder": encoder, "layer": layer,
                      "max_length": max_length or "auto", "sentences": sentences_hash}, length=12)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(encoder.rstrip("/")).name or encoder)[:40]
    return root / f"{slug}-L{layer}-T{max_length or 'auto'}-{key}"


def extract(
    data_dir: str | Path,
    encoder: str | TextEncoder,
    layer: int = -1,
    max_length: int | None = None,
    cache: str | Path | None = None,
    batch_size: int = 64,
    shard_size: int = 20_000,
    dtype: str = "float16",
    force: bool = False,
    verbose: bool = False,
) -> Path:
    """Compute and store the hidden states of every sentence in ``data_dir``; returns the cache entry directory.

    An existing complete entry is reused unless ``force``. Sentences go through the encoder in length-sorted
    batches within each shard.

    Args:
        data_dir: a prepared sentence directory (``sentences.jsonl``).
        encoder: encoder name/path, or a loaded :class:`TextEncoder` (its own layer/max_length then apply).
        layer: -1 for the last layer, else an index into ``hidden_states``.
        max_length: word pieces per sentence (None: the encoder's limit).
        cache: cache root (default ``<data_dir>/features``).
        batch_size: sentences per forward pass.
        shard_size: sentences per safetensors shard.
        dtype: storage dtype, float16 (default), bfloat16 or float32.
        force: recompute even when the entry exists.
        verbose: print progress on stderr.
    """
    data_dir = Path(data_dir)
    if dtype not in DTYPES:
        raise UserError(f"unknown feature dtype '{dtype}' (known: {', '.join(DTYPES)})")
    if isinstance(encoder, TextEncoder):
        name, layer, max_length = encoder.name, encoder.layer, encoder.max_length
    else:
        name = encoder
    texts, shash = _sentences(data_dir)
    out = entry_dir(data_dir, name, layer, max_length, cache, shash)
    if not force and _complete(out, len(texts), shash):
        return out
    enc = encoder if isinstance(encoder, TextEncoder) else load_text_encoder(name, layer, max_length)
    writer = shards.ShardWriter(out, len(texts), shard_size, ragged=["states"], spec={"dtype": dtype}, fresh=force)
    todo = writer.missing()
    if verbose and len(todo) < writer.n_shards:
        print(f"extract: resuming, {writer.n_shards - len(todo)}/{writer.n_shards} shards already stored",
              file=sys.stderr)
    start, done = time.perf_counter(), 0
    for s in todo:
        lo, hi = writer.bounds(s)
        states: list[torch.Tensor | None] = [None] * (hi - lo)
        for idx, batch in enc.iter_states(texts[lo:hi], batch_size=batch_size, sort=True):
            for i, st in zip(idx, batch, strict=True):
                states[i] = st.to(DTYPES[dtype])  # (T_i, H)
        writer.write(s, ragged={"states": states})
        done += hi - lo
        if verbose:
            rate = done / (time.perf_counter() - start)
            print(f"extract: {hi}/{len(texts)} sentences ({rate:.0f}/s)", file=sys.stderr)
    meta = {
        "format": FORMAT_VERSION, "encoder": name, "layer": layer, "max_length": max_length,
        "effective_max_length": enc.max_length, "hidden_size": enc.hidden_size, "num_layers": enc.num_layers,
        "sentences_hash": shash, "dtype": dtype, "seconds": round(time.perf_counter() - start, 3),
    }
    writer.finish(meta)
    return out


def _complete(entry: Path, n: int, shash: str) -> bool:
    meta = shards.complete(entry)
    return (
        meta is not None and meta.get("format") == FORMAT_VERSION and meta.get("n") == n
        and meta.get("sentences_hash") == shash
    )


def load_entry(entry: str | Path) -> Features:
    """Load a cache entry directory written by :func:`extract` (shards memory-mapped)."""
    store = shards.load(entry)
    return Features(rows=store.ragged("states"), meta=store.meta)


def load_features(
    data_dir: str | Path,
    encoder: str,
    layer: int = -1,
    max_length: int | None = None,
    cache: str | Path | None = None,
    build: bool = True,
    **extract_kwargs,
) -> Features:
    """The cached states of ``data_dir``'s sentences for these encoder settings; extracted first if missing."""
    data_dir = Path(data_dir)
    texts, shash = _sentences(data_dir)
    entry = entry_dir(data_dir, encoder, layer, max_length, cache, shash)
    if not _complete(entry, len(texts), shash):
        if not build:
            raise UserError(f"no feature cache for '{encoder}' (layer {layer}) in {entry.parent}; "
                            f"run: modalbridge extract --data {data_dir} --encoder {encoder}")
        extract(data_dir, encoder, layer, max_length, cache, **extract_kwargs)
    return load_entry(entry)
