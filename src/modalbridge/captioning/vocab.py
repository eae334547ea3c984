"""Caption vocabularies: a frequency-thresholded word ``Vocab`` and the LM-subword ``SubwordVocab``.

Words come from :func:`modalbridge.words.tokenize` (any script; the rules are there).

Special ids are fixed so that models, padding and decoding agree: ``<pad>=0 <bos>=1 <eos>=2 <unk>=3``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from modalbridge.captioning.word_vectors import vector_lookup
from modalbridge.errors import UserError, read_json
from modalbridge.words import detokenize, tokenize

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

class Vocab:
    """Word <-> id map with fixed special tokens ``<pad>=0 <bos>=1 <eos>=2 <unk>=3``.

    Build it with :meth:`build` from caption strings; store it with :meth:`to_dict` (this is what goes into a model
    directory's ``vocab.json``) and restore it with :meth:`from_dict`.
    """

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, words: Iterable[str], lower: bool = True, min_freq: int = 1):
        """Args:
        words: the non-special words in id order (ids start at 4).
        lower: whether :meth:`encode` lower-cases text (stored, so encode at test time matches training).
        min_freq: the threshold the vocabulary was built with (kept for the record).
        """
        self.itos: list[str] = list(SPECIALS)
        for w in words:
            if w in SPECIALS:
                continue
            self.itos.append(w)
        self.stoi: dict[str, int] = {}
        for i, w in enumerate(self.itos):
            if w in self.stoi:
                raise UserError(f"vocabulary lists the word {w!r} twice")
            self.stoi[w] = i
        self.lower = lower
        self.min_freq = min_freq

    @classmethod
    def build(
        cls,
        texts: Iterable[str | Sequence[str]],
        min_freq: int = 5,
        max_size: int | None = None,
        lower: bool = True,
    ) -> Vocab:
        """Count words in ``texts`` and keep those seen at least ``min_freq`` times.

        Words are ordered by count (descending), ties by the word itself, so the same corpus always gives the
        same ids. Args:
            texts: caption strings (tokenized with :func:`tokenize`) or already tokenized lists.
            min_freq: minimum count (Karpathy's neuraltalk2 and Show-Attend-Tell use 5 on COCO).
            max_size: keep at most this many words besides the specials.
            lower: lower-case while tokenizing.
        """
        if min_freq < 1:
            raise UserError(f"min_freq must be >= 1, got {min_freq}")
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(tokenize(t, lower=lower) if isinstance(t, str) else t)
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in SPECIALS), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[:max_size]
        return cls(words, lower=lower, min_freq=min_freq)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos and self.lower == other.lower

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, min_freq={self.min_freq}, lower={self.lower})"

    def id(self, word: str) -> int:
        return self.stoi.get(word, UNK_ID)

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, lower=self.lower)

    def encode(
        self, text: str | Sequence[str], bos: bool = True, eos: bool = True, max_len: int | None = None
    ) -> list[int]:
        """Ids of ``text`` (a string or a token list); unknown words map to ``<unk>``.

        Args:
            max_len: truncate the words to this many tokens (BOS/EOS not counted), so EOS is always kept.
        """
        words = self.tokenize(text) if isinstance(text, str) else list(text)
        if max_len is not None:
            words = words[:max_len]
        ids = [self.stoi.get(w, UNK_ID) for w in words]
        return ([BOS_ID] if bos else []) + ids + ([EOS_ID] if eos else [])

    def decode_tokens(self, ids: Iterable[int], stop_at_eos: bool = True) -> list[str]:
        """Words of ``ids``: specials except ``<unk>`` are dropped; stops at the first ``<eos>`` by default."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID and stop_at_eos:
                break
            if i in (PAD_ID, BOS_ID, EOS_ID):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out

    def decode(self, ids: Iterable[int], stop_at_eos: bool = True) -> str:
        """Caption text of ``ids`` (see :meth:`decode_tokens`), punctuation attached to the previous word."""
        return detokenize(self.decode_tokens(ids, stop_at_eos=stop_at_eos))

    # ------------------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {"format": "modalbridge.vocab/1", "lower": self.lower, "min_freq": self.min_freq, "itos": self.itos}

    @classmethod
    def from_dict(cls, data: Any) -> Vocab:
        if isinstance(data, dict) and data.get("format") == SubwordVocab.FORMAT and cls is Vocab:
            return SubwordVocab.from_dict(data)
        if not isinstance(data, dict) or not isinstance(data.get("itos"), list):
            raise UserError("vocabulary JSON must be an object with an 'itos' list")
        itos = data["itos"]
        if [str(w) for w in itos[: len(SPECIALS)]] != list(SPECIALS):
            raise UserError(f"vocabulary JSON must start with the special tokens {list(SPECIALS)}")
        if not all(isinstance(w, str) for w in itos):
            raise UserError("vocabulary JSON 'itos' must contain only strings")
        return cls(itos[len(SPECIALS) :], lower=bool(data.get("lower", True)), min_freq=int(data.get("min_freq", 1)))

    def save(self, path: str | Path) -> Path:
        from modalbridge.files import write_json

        write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_dict(read_json(path, "vocabulary file"))

    # ------------------------------------------------------------------------------------------ embeddings
    def embedding_matrix(self, vectors: Any, std: float | None = None, seed: int = 0):
        """An embedding matrix ``(V, D)`` initialised from pretrained word vectors where the word has one.

        Args:
            vectors: a mapping ``word -> vector``; a pair ``(words, array (N, D))``; or a spaCy ``Vocab``
                (``nlp.vocab``: ``vocab[word]`` is a lexeme with ``has_vector``/``vector``). spaCy is optional and
                never imported here.
            std: std of the random init for words without a vector; default = std of the found vectors.
            seed: seed of that random init.

        Returns:
            ``(matrix, found)``: a float32 ``torch.Tensor (V, D)`` with ``<pad>`` all zeros, and how many
            vocabulary words (specials excluded) got a pretrained vector (exact match, else lower-cased).
        """
        import numpy as np
        import torch

        lookup = vector_lookup(vectors)
        rows: dict[int, np.ndarray] = {}
        dim = None
        for i, w in enumerate(self.itos[len(SPECIALS) :], start=len(SPECIALS)):
            v = lookup(w)
            if v is None and w.lower() != w:
                v = lookup(w.lower())
            if v is None:
                continue
            v = np.asarray(v, dtype=np.float32).reshape(-1)
            if dim is None:
                dim = v.shape[0]
            elif v.shape[0] != dim:
                raise UserError(f"word vectors have mixed sizes ({dim} and {v.shape[0]})")
            rows[i] = v
        if dim is None:
            raise UserError("none of the vocabulary words has a pretrained vector; check the vectors' language/case")
        found = np.stack(list(rows.values()))
        if std is None:
            std = float(found.std()) or 1.0 / math.sqrt(dim)
        gen = torch.Generator().manual_seed(seed)
        matrix = torch.randn(len(self), dim, generator=gen) * std  # (V, D)
        for i, v in rows.items():
            matrix[i] = torch.from_numpy(v)
        matrix[PAD_ID] = 0.0
        return matrix, len(rows)


class SubwordVocab(Vocab):
    """A byte-pair-encoding vocabulary (Sennrich et al. 2016, https://arxiv.org/abs/1508.07909) over the same words
    as :class:`Vocab`: titles full of rare words ("beagle", "stegosaurus") become pieces the decoder has seen
    instead of ``<unk>``. Trained with the ``tokenizers`` library on the training captions; a piece that starts a
    word carries the ``▁`` marker (SentencePiece's convention), so decoding rejoins pieces into words.

    Same special ids as :class:`Vocab`; ``itos`` lists the pieces; ``vocab.json`` stores the tokenizer.
    """

    FORMAT = "modalbridge.subword-vocab/1"
    MARK = "\u2581"  # ▁

    def __init__(self, tokenizer_json: str, lower: bool = True, min_freq: int = 1):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        itos = [self.tokenizer.id_to_token(i) for i in range(self.tokenizer.get_vocab_size())]
        if itos[: len(SPECIALS)] != list(SPECIALS):
            raise UserError(f"subword vocabulary must start with the special tokens {list(SPECIALS)}")
        super().__init__(itos[len(SPECIALS) :], lower=lower, min_freq=min_freq)

    @classmethod
    def build(cls, texts: Iterable[str | Sequence[str]], min_freq: int = 2, max_size: int | None = 2000,
              lower: bool = True) -> SubwordVocab:
        """Train BPE merges on the words of ``texts`` (tokenized like :class:`Vocab`) up to ``max_size`` pieces
        besides the specials; a merge needs ``min_freq`` occurrences. Deterministic for the same texts."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if min_freq < 1 or (max_size is not None and max_size < 1):
            raise UserError(f"min_freq and max_size must be >= 1, got {min_freq} and {max_size}")
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=len(SPECIALS) + (max_size or 2000), min_frequency=min_freq,
                                      special_tokens=list(SPECIALS), show_progress=False)
        words = (" ".join(tokenize(t, lower=lower) if isinstance(t, str) else t) for t in texts)
        tok.train_from_iterator(words, trainer=trainer)
        return cls(tok.to_str(), lower=lower, min_freq=min_freq)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubwordVocab) and self.itos == other.itos and self.lower == other.lower

    def __repr__(self) -> str:
        return f"SubwordVocab(size={len(self)}, lower={self.lower})"

    def encode(self, text: str | Sequence[str], bos: bool = True, eos: bool = True, max_len: int | None = None
               ) -> list[int]:
        """Piece ids of ``text``'s words (``max_len`` counts pieces; BOS/EOS not counted, EOS always kept)."""
        words = self.tokenize(text) if isinstance(text, str) else list(text)
        ids = self.tokenizer.encode(" ".join(words), add_special_tokens=False).ids if words else []
        if max_len is not None:
            ids = ids[:max_len]
        return ([BOS_ID] if bos else []) + ids + ([EOS_ID] if eos else [])

    def decode_tokens(self, ids: Iterable[int], stop_at_eos: bool = True) -> list[str]:
        """Words of ``ids``: pieces rejoined at the ``▁`` markers; specials except ``<unk>`` dropped."""
        words: list[str] = []
        for piece in super().decode_tokens(ids, stop_at_eos=stop_at_eos):
            if piece.startswith(self.MARK) or not words or piece == UNK:
                words.append(piece.removeprefix(self.MARK))
            else:
                words[-1] += piece
        return [w for w in words if w]

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.FORMAT, "lower": self.lower, "min_freq": self.min_freq,
                "tokenizer": self.tokenizer.to_str(), "itos": self.itos}

    @classmethod
    def from_dict(cls, data: Any) -> SubwordVocab:
        if not isinstance(data, dict) or not isinstance(data.get("tokenizer"), str):
            raise UserError("subword vocabulary JSON must be an object with a 'tokenizer' string")
        try:
            return cls(data["tokenizer"], lower=bool(data.get("lower", True)), min_freq=int(data.get("min_freq", 1)))
        except Exception as e:  # the tokenizers library raises its own exception types on a bad JSON
            if isinstance(e, UserError):
                raise
            raise UserError(f"subword vocabulary JSON: unreadable tokenizer ({str(e).splitlines()[0]})") from None
