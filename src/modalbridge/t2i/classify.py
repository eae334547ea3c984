"""Text -> classes, no generator needed: a frozen text encoder + a resolver (or a table-bound mapper) + its vocabulary.

``load_classifier(spec)`` loads a model directory (``t2i_resolver`` or ``t2i_mapper``) and the text encoder its
``config.json`` names, once per process. ``TextClassifier.classify(text)`` returns the ``classify`` record: the top-5
classes of the whole text and, when it names several things, of each object.

Several objects ("a dog and a cat on a sofa", "an elephant and a bus"): class words are found with the vocabulary
(``Vocabulary.find``: lemmas, everyday names, plurals and generic words such as "dog" or "shoe", longest match
first). When two or more words naming *different* class sets are found, the text is cut at the separators between
them (",", ";", "and", "or", "with", "plus", "next to", "beside", ...) and every piece naming a class is scored on its
own: one object each, never a chimera of averaged embeddings. At most ``MAX_OBJECTS``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from pathlib import Path

import torch

from modalbridge import assets
from modalbridge import checkpoint as ckpt
from modalbridge.errors import UserError
from modalbridge.t2i.mapper import T2IMapper  # noqa: F401 - registers the t2i_mapper model type
from modalbridge.t2i.resolver import ClassResolver, ResolverConfig, keep_classes
from modalbridge.t2i.vocabulary import Vocabulary

DEFAULT_MODEL = "t2i-fashion"  # the default of draw and classify: offline, with its shipped generator
MAX_OBJECTS = 4
MAX_TEXT_CHARS = 4096  # object detection and lexical evidence look at the start of very long texts only
_SEPARATORS = re.compile(
    r"\s*(?:[,;:/&+]|\b(?:and|or|with|plus|next to|beside|besides|near|alongside|along with|together with|"
    r"then|versus|vs)\b)\s*",
    re.IGNORECASE,
)


def clean_text(text: str) -> str:
    """Control/format characters and lone surrogates -> spaces, whitespace collapsed; empty text is a UserError."""
    if not isinstance(text, str):
        raise UserError("text must be a string")
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch for ch in text)
    text = " ".join(text.split())
    if not text:
        raise UserError("text is empty (nothing left after removing whitespace and control characters)")
    return text


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a file, one per line, cleaned; a line that is empty after cleaning is skipped with a warning
    naming it (never losing the rest). No usable line at all is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    texts = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            texts.append(clean_text(line))
        except UserError as e:
            warnings.warn(f"{path}:{i} skipped: {e}", stacklevel=2)
    if not texts:
        raise UserError(f"{path} has no prompts")
    return texts


def related_classes(vocab: Vocabulary, depth: int = 2) -> torch.Tensor:
    """(K, K) bool: classes sharing one of their ``depth`` nearest WordNet ancestors (and each class itself)."""
    k = len(vocab)
    rel = torch.eye(k, dtype=torch.bool)
    by_parent: dict[str, list[int]] = {}
    for c in vocab:
        for w in c.hypernym_wnids[:depth]:
            by_parent.setdefault(w, []).append(c.index)
    for members in by_parent.values():
        if 1 < len(members) <= 200:
            idx = torch.tensor(members)
            rel[idx[:, None], idx[None, :]] = True
    return rel


class TextClassifier:
    """Text encoder + resolver or mapper, frozen and in eval mode; scores a vocabulary's classes."""

    def __init__(self, model: torch.nn.Module, encoder, vocab: Vocabulary, source: str = ""):
        self.model, self.encoder, self.vocab, self.source = model, encoder, vocab, source
        self.is_resolver = isinstance(model, ClassResolver)
        # An in-span mapper's output is a convex combination of the table's rows, like a resolver's p @ table: both
        # are drawn through one rule, sharpen(p) @ table (never a chimera between rows the generator never saw).
        self.mixes_classes = self.is_resolver or getattr(model.config, "kind", "") == "inspan"
        self.related = related_classes(vocab) if self.mixes_classes else None

    @torch.no_grad()
    def score(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, list[bool]]:
        """Texts -> (class probabilities (B, K), table-bound embeddings (B, E) or None, truncated flags)."""
        enc = self.encoder.encode(texts, batch_size=128)  # length-sorted: large batches waste little on padding
        return self.score_states(enc.hidden, enc.mask, texts) + (enc.truncated,)

    @torch.no_grad()
    def score_states(self, hidden: torch.Tensor, mask: torch.Tensor, texts: list[str]
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, H) states of ``texts`` -> (probabilities (B, K), table-bound embeddings (B, E) or None)."""
        if self.is_resolver:
            mention = self.vocab.mentions([t[:MAX_TEXT_CHARS] for t in texts])
            return self.model(hidden, mask, mention=mention).probs, None
        out = self.model(hidden, mask)
        return self.model.class_scores(out), None if self.mixes_classes else out.embedding

    def sharpen(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, K) -> (B, K): the classes an image is drawn from (see ``resolver.keep_classes``; an in-span mapper
        takes the resolver's default ``keep_ratio`` and ``max_keep``)."""
        c = self.model.config
        return keep_classes(probs, self.related, getattr(c, "keep_ratio", ResolverConfig.keep_ratio),
                            getattr(c, "max_keep", ResolverConfig.max_keep))

    def top_classes(self, probs: torch.Tensor, k: int = 5) -> list[dict]:
        """(K,) probabilities -> top-k ``{"label", "wnid", "score"}``."""
        p, idx = probs.topk(min(k, len(probs)))
        return [{"label": self.vocab[i].label, "wnid": self.vocab[i].wnid or "", "score": round(float(s), 4)}
                for s, i in zip(p.tolist(), idx.tolist(), strict=True)]

    def objects(self, text: str) -> list[str]:
        """Pieces of ``text`` that each name a different class set; ``[text]`` when it names fewer than two."""
        head = text[:MAX_TEXT_CHARS]
        if len({m.classes for m in self.vocab.find(head, hypernyms=True)}) < 2:
            return [text]
        pieces, seen = [], set()
        for piece in _SEPARATORS.split(head):
            found = self.vocab.find(piece, hypernyms=True)
            if found and found[0].classes not in seen and piece.strip():
                seen.add(found[0].classes)
                pieces.append(piece.strip())
        if len(pieces) < 2:
            return [text]  # the class words are not separated ("a shirt bag"): let the model decide
        if len(pieces) > MAX_OBJECTS:
            warnings.warn(f"text names {len(pieces)} objects; using the first {MAX_OBJECTS}", stacklevel=2)
        return pieces[:MAX_OBJECTS]

    def classify(self, text: str, split_objects: bool = True) -> dict:
        """The ``classify`` record ``{"text", "classes", "objects": [{"text", "classes"}]}`` of one text."""
        return self.classify_many([text], split_objects)[0]

    def classify_many(self, texts: list[str], split_objects: bool = True) -> list[dict]:
        """``classify`` records of many texts, scored in one batch."""
        texts = [clean_text(t) for t in texts]
        pieces = [self.objects(t) if split_objects else [t] for t in texts]
        flat = [*texts, *(p for ps in pieces if len(ps) > 1 for p in ps)]
        probs = self.score(flat)[0]
        out, j = [], len(texts)
        for i, (t, ps) in enumerate(zip(texts, pieces, strict=True)):
            objects = []
            if len(ps) > 1:
                objects = [{"text": p, "classes": self.top_classes(probs[j + m])} for m, p in enumerate(ps)]
                j += len(ps)
            out.append({"text": t, "classes": self.top_classes(probs[i]), "objects": objects})
        return out


def load_vocab(path: Path, num_classes: int) -> Vocabulary:
    vocab_data = ckpt.read_json_file(path / ckpt.VOCAB_NAME)
    if vocab_data is None:
        raise UserError(f"{path} has no {ckpt.VOCAB_NAME}; a text -> class model needs its class vocabulary")
    vocab = Vocabulary.from_dict(vocab_data, source=f"{path}/{ckpt.VOCAB_NAME}")
    if len(vocab) != num_classes:
        raise UserError(f"{path}: {ckpt.VOCAB_NAME} lists {len(vocab)} classes, the model {num_classes}")
    return vocab


@functools.lru_cache(maxsize=2)
def _load(path: str) -> TextClassifier:
    from modalbridge.text.encoders import load_text_encoder

    model = ckpt.load(path, expected=("t2i_resolver", "t2i_mapper"))
    c = model.config
    vocab = load_vocab(Path(path), c.num_classes)
    encoder = load_text_encoder(c.text_encoder, c.text_layer, c.max_length)
    if encoder.hidden_size != c.text_hidden:
        raise UserError(f"text encoder '{c.text_encoder}' has hidden size {encoder.hidden_size}; "
                        f"the model in {path} expects {c.text_hidden}")
    return TextClassifier(model, encoder, vocab, source=path)


def load_classifier(spec: str | Path | None = None) -> TextClassifier:
    """Load a text -> class model once per process.

    Args:
        spec: a model directory or embedded name (``t2i-imagenet``, ``t2i-fashion``); None = the default of ``draw``.
    """
    return _load(str(assets.resolve_model(spec, DEFAULT_MODEL, "text -> class model")))
