"""A prepared sentence directory on disk: write it atomically, read its sentences and vocabulary back, hash it.

The directory is the contract between ``modalbridge prepare`` and feature caching / mapper training:
  sentences.jsonl   one object per line with the :data:`FIELDS` text, classes, weights, split, source, template, lemma
  vocabulary.json   the class vocabulary that ``classes`` index
  meta.json         how the sentences were made (:func:`modalbridge.t2i.sentences.generate`) and the content hash
The content hash covers sentences.jsonl and vocabulary.json; the feature cache that ``extract`` puts under
``<dir>/features`` is keyed by it, and rewriting a directory keeps that cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from modalbridge.errors import UserError
from modalbridge.files import atomic_dir, atomic_write_bytes
from modalbridge.t2i import vocabulary

FORMAT = "modalbridge.sentences"
VERSION = 1
SPLITS = ("train", "val", "test_template", "test_synonym")
SOURCES = ("template", "synonym", "hypernym", "gloss", "mined")
FIELDS = ("text", "classes", "weights", "split", "source", "template", "lemma")
SENTENCES_NAME, VOCAB_NAME, META_NAME = "sentences.jsonl", "vocabulary.json", "meta.json"


def _content_hash(sentences: bytes, vocab: bytes) -> str:
    h = hashlib.sha256()
    for part in (sentences, vocab):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def check_out_dir(out: str | Path) -> Path:
    """``out`` if a sentence directory may be written there: new, empty, or a previous output (has meta.json)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META_NAME).is_file())):
        raise UserError(f"{out} exists and is not a sentences directory; give a new --out")
    return out


def write_sentences(out: str | Path, vocab: vocabulary.Vocabulary, rows: list[dict], meta: dict) -> dict:
    """Write ``out/`` (sentences.jsonl, vocabulary.json, meta.json) atomically; returns ``meta`` with its ``hash``.

    An existing ``out`` must be a previous output (has meta.json) or empty; its three files are replaced and
    anything else in it (a feature cache) is kept.
    """
    out = check_out_dir(out)
    sent_bytes = "".join(json.dumps({f: r[f] for f in FIELDS}, ensure_ascii=False) + "\n" for r in rows).encode()
    vocab_bytes = vocab.to_json().encode()
    meta["hash"] = _content_hash(sent_bytes, vocab_bytes)
    meta_bytes = (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode()
    files = ((SENTENCES_NAME, sent_bytes), (VOCAB_NAME, vocab_bytes), (META_NAME, meta_bytes))
    if out.is_dir():
        # A previous output: swap the three files one by one (meta.json last) and keep anything else there,
        # such as the feature cache that ``extract`` puts under <out>/features (keyed by the content hash).
        for name, data in files:
            atomic_write_bytes(out / name, data)
        return meta
    with atomic_dir(out, existing="keep") as tmp:  # a new directory appears complete or not at all
        for name, data in files:
            (tmp / name).write_bytes(data)
    return meta


def _require(directory: str | Path, name: str) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        raise UserError(f"{directory} is not a sentences directory ({name} missing; run 'modalbridge prepare')")
    return path


def load_sentences(directory: str | Path, split: str | None = None) -> list[dict]:
    """Rows of ``directory/sentences.jsonl`` (optionally one split), checked against the contract."""
    if split is not None and split not in SPLITS:
        raise UserError(f"unknown split '{split}'; splits: {', '.join(SPLITS)}")
    path = _require(directory, SENTENCES_NAME)
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{lineno} is not valid JSON") from None
            if not isinstance(row, dict) or set(row) != set(FIELDS) or len(row["classes"]) != len(row["weights"]):
                raise UserError(f"{path}:{lineno} does not have the fields {', '.join(FIELDS)}")
            if split is None or row["split"] == split:
                rows.append(row)
    return rows


def load_vocabulary(directory: str | Path) -> vocabulary.Vocabulary:
    """The vocabulary saved next to the sentences."""
    return vocabulary.load(_require(directory, VOCAB_NAME))


def sentences_hash(directory: str | Path) -> str:
    """Content hash of a sentences directory (sentences.jsonl + vocabulary.json), as stored in meta.json."""
    return _content_hash(_require(directory, SENTENCES_NAME).read_bytes(), _require(directory, VOCAB_NAME).read_bytes())
