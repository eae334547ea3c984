"""Feature cache: the frozen text encoder's hidden states for every prepared sentence, computed once.

A prepared sentence directory (``modalbridge prepare``) holds ``sentences.jsonl``. ``extract`` runs the encoder over
all of its sentences (every split, file order) and stores the token states as safetensors shards under

    <cache>/<encoder>-L<layer>-T<max_len>-<key hash>/
        meta.json                 encoder name, layer, max_length, hidden size, sentences hash, n, shards
        shard-00000.safetensors   states (N_tok, H) flattened, offsets (n + 1,): sentence i is states[o[i]:o[i+1]]

The key hash covers encoder name + layer + max_length + the sentences hash, so a changed sentence set or encoder
setting gets a new entry and every training run with the same settings reuses the old one. ``<cache>`` defaults to
``<data dir>/features``. The entry is written to a temp directory and renamed into place, so a crash never leaves a
half-written cache behind. Flattened states + offsets waste nothing on padding; states are float16 by default.

Notation: N sentences, N_tok word pieces of all sentences together, H encoder hidden size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from modalbridge.errors import UserError
from modalbridge.text.encoders import TextEncoder, load_text_encoder

FORMAT_VERSION = 1
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class Features:
    """Token states of N sentences, in ``sentences.jsonl`` order.

    Attributes:
        states: (N_tok, H) all sentences' word-piece states, concatenated.
        offsets: (N + 1,) int64; sentence i is ``states[offsets[i]:offsets[i + 1]]``.
        meta: the cache entry's ``meta.json``.
    """

    states: torch.Tensor
    offsets: torch.Tensor
    meta: dict

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.states[self.offsets[i] : self.offsets[i + 1]]  # (T_i, H)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]  # (N,)

    @property
    def hidden_size(self) -> int:
        return int(self.states.shape[1])


def _sentences(data_dir: Path) -> tuple[list[str], str]:
    from modalbridge.t2i.sentences import load_sentences, sentences_hash

    rows = load_sentences(data_dir)
    return [r["text"] for r in rows], sentences_hash(data_dir)


def entry_dir(data_dir: str | Path, encoder: str, layer: int = -1, max_length: int | None = None,
              cache: str | Path | None = None, sentences_hash: str | None = None) -> Path:
    """Where the cache entry for these settings lives (it may not exist yet)."""
    data_dir = Path(data_dir)
    if sentences_hash is None:
        from modalbridge.t2i.sentences import sentences_hash as _hash

        sentences_hash = _hash(data_dir)
    root = Path(cache) if cache else data_dir / "features"
    key = json.dumps([encoder, layer, max_length or "auto", sentences_hash, FORMAT_VERSION])
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(encoder.rstrip("/")).name or encoder)[:40]
    return root / f"{slug}-L{layer}-T{max_length or 'auto'}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    start, shards, n_tok = time.perf_counter(), [], 0
    try:
        for s, lo in enumerate(range(0, len(texts), shard_size)):
            chunk = texts[lo : lo + shard_size]
            states: list[torch.Tensor | None] = [None] * len(chunk)
            for idx, batch in enc.iter_states(chunk, batch_size=batch_size, sort=True):
                for i, st in zip(idx, batch, strict=True):
                    states[i] = st.to(DTYPES[dtype])  # (T_i, H)
            lengths = torch.tensor([len(st) for st in states])
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])  # (n + 1,)
            fname = f"shard-{s:05d}.safetensors"
            save_file({"states": torch.cat(states).contiguous(), "offsets": offsets}, str(tmp / fname))
            shards.append({"file": fname, "n": len(chunk), "tokens": int(offsets[-1])})
            n_tok += int(offsets[-1])
            if verbose:
                done = lo + len(chunk)
                rate = done / (time.perf_counter() - start)
                print(f"extract: {done}/{len(texts)} sentences ({rate:.0f}/s)", file=sys.stderr)
        meta = {
            "format": FORMAT_VERSION, "encoder": name, "layer": layer, "max_length": max_length,
            "effective_max_length": enc.max_length, "hidden_size": enc.hidden_size, "num_layers": enc.num_layers,
            "sentences_hash": shash, "n": len(texts), "tokens": n_tok, "dtype": dtype, "shards": shards,
            "seconds": round(time.perf_counter() - start, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _read_meta(entry: Path) -> dict | None:
    try:
        return json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _complete(entry: Path, n: int, shash: str) -> bool:
    meta = _read_meta(entry)
    return (
        meta is not None and meta.get("format") == FORMAT_VERSION and meta.get("n") == n
        and meta.get("sentences_hash") == shash and all((entry / s["file"]).is_file() for s in meta["shards"])
    )


def load_entry(entry: str | Path) -> Features:
    """Load a cache entry directory written by :func:`extract`."""
    entry = Path(entry)
    meta = _read_meta(entry)
    if meta is None:
        raise UserError(f"{entry} is not a feature cache entry (no readable meta.json)")
    states, offsets, base = [], [torch.zeros(1, dtype=torch.long)], 0
    for shard in meta["shards"]:
        try:
            t = load_file(str(entry / shard["file"]))
        except (SafetensorError, OSError) as e:
            raise UserError(f"feature cache shard {entry / shard['file']} is unreadable ({e}); "
                            "delete the entry or extract with --force") from None
        states.append(t["states"])
        offsets.append(t["offsets"][1:] + base)
        base += int(t["offsets"][-1])
    return Features(states=torch.cat(states), offsets=torch.cat(offsets), meta=meta)


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
