"""Text -> image: frozen text encoder -> resolver or mapper -> class embedding -> frozen generator, loaded once.

``load_drawer(spec, generator)`` loads a text -> class model directory (default: the embedded ``t2i-fashion``)
through :func:`modalbridge.t2i.classify.load_classifier`, and a generator: the one the model's ``config.json``
names, or ``generator`` (a name such as ``biggan-deep-256`` or a directory in the published format).
``Drawer.draw(text)`` returns images and the top-5 classes.

Two kinds of text -> class model:
* ``t2i_mapper`` (mapper.py): bound to one generator's class table; its output embedding is drawn as it is.
* ``t2i_resolver`` (resolver.py): p(class | text) over its vocabulary, no generator inside. The class embedding is
  ``sharpen(p) @ table`` with the chosen generator's own table, for any generator with as many classes in the same
  order (all BigGAN-deep resolutions). Sharpening keeps the top class and at most two close relatives of it (same
  WordNet parent or grandparent, at least half its probability): "a dog" may blend two breeds, never a dog and a bus.

Decisions a user sees:
* Text is cleaned first (``classify.clean_text``); text that is then empty is an error. Over-long text is truncated
  by the encoder with a warning (``max_length`` word pieces).
* Seed: omitted, it is derived from the cleaned text (SHA-256), so the same text gives the same images.
* Several objects ("an elephant and a bus"): one set of images per object (see classify.py).
* ``per_token``: one image per word with the same noise, each from the model over that word's word pieces only
  (contextual states of the whole text; words aligned to word pieces through the tokenizer's offsets).
* ``interpolate``: frames along the straight line between two texts' embeddings, same noise.

Notation: N images, E class-embedding size, Z noise size, K classes.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modalbridge.errors import UserError
from modalbridge.generators.biggan import truncated_noise
from modalbridge.render import to_pil
from modalbridge.t2i.classify import DEFAULT_MODEL, MAX_OBJECTS, TextClassifier, clean_text, load_classifier
from modalbridge.t2i.resolver import class_embedding

__all__ = ["DEFAULT_MODEL", "DEFAULT_TRUNCATION", "MAX_N", "MAX_OBJECTS", "MAX_SEED", "Drawing", "DrawObject",
           "Drawer", "check_n", "check_seed", "check_truncation", "clean_text", "load_drawer"]
DEFAULT_TRUNCATION = 0.5
MAX_N = 64
MAX_SEED = 2**63 - 1


def text_seed(text: str) -> int:
    """A seed derived from the text: the same text draws the same images."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:4], "big") & 0x7FFFFFFF


@dataclass
class DrawObject:
    """One object of a drawing: the text piece mapped, its top classes and its images."""

    text: str
    classes: list[dict]
    images: list = field(default_factory=list)
    embedding: torch.Tensor | None = None  # (E,)


@dataclass
class Drawing:
    """Result of :meth:`Drawer.draw`: ``images`` (all objects' images, object by object), ``classes`` (top-5
    ``{"label", "wnid", "score"}`` of the whole text), per-object detail, the seed and truncation used."""

    text: str
    images: list
    classes: list[dict]
    objects: list[DrawObject]
    seed: int
    truncation: float
    truncated: bool = False


class Drawer:
    """Text classifier (encoder + resolver or mapper) + generator, all frozen and in eval mode."""

    def __init__(self, classifier: TextClassifier, generator, source: str = ""):
        self.classifier, self.generator, self.source = classifier, generator, source
        self.vocab, self.encoder = classifier.vocab, classifier.encoder
        self.table = generator.class_embeddings.detach().float()  # (K, E)
        # The generator's own default (gan-fashion records the evaluation panel's choice, 0.85), else BigGAN's 0.5.
        self.default_truncation = float(getattr(generator, "default_truncation", None) or DEFAULT_TRUNCATION)
        self.z_dim = int(generator.config.z_dim)

    # ------------------------------------------------------------------ embedding
    def _embeddings(self, probs: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        return emb if emb is not None else class_embedding(self.classifier.sharpen(probs), self.table)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """Texts -> (class embeddings (B, E), class probabilities (B, K), truncated flags)."""
        probs, emb, truncated = self.classifier.score(texts)
        return self._embeddings(probs, emb), probs, truncated

    def top_classes(self, probs: torch.Tensor, k: int = 5) -> list[dict]:
        return self.classifier.top_classes(probs, k)

    def objects(self, text: str) -> list[str]:
        return self.classifier.objects(text)

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def render(self, embeddings: torch.Tensor, seed: int, truncation: float) -> list:
        """(N, E) class embeddings -> N images, noise ``truncated_noise(N, Z, truncation, seed)``."""
        z = truncated_noise(len(embeddings), self.z_dim, truncation, seed)  # (N, Z)
        return to_pil(self.generator(z, embeddings.to(z.dtype), truncation))

    def draw(self, text: str, n: int = 4, seed: int | None = None, truncation: float | None = None,
             split_objects: bool = True) -> Drawing:
        """Draw ``n`` images per object named in ``text``.

        Args:
            text: what to draw; cleaned with :func:`clean_text`.
            n: images per object, 1..64.
            seed: noise seed; None derives it from the text.
            truncation: in (0, 1]; lower = more typical, less varied images; None = :attr:`default_truncation`.
            split_objects: map each named object separately (see classify.py).
        """
        text = clean_text(text)
        n = check_n(n)
        truncation = check_truncation(self.default_truncation if truncation is None else truncation)
        seed = text_seed(text) if seed is None else check_seed(seed)
        pieces = self.objects(text) if split_objects else [text]
        texts = [text] + pieces if len(pieces) > 1 else [text]
        emb, probs, truncated = self.embed(texts)  # (B, E), (B, K)
        obj_emb, obj_probs = (emb[1:], probs[1:]) if len(pieces) > 1 else (emb, probs)
        images = self.render(obj_emb.repeat_interleave(n, dim=0), seed, truncation)
        objects = [DrawObject(p, self.top_classes(obj_probs[j]), images[j * n : (j + 1) * n], obj_emb[j])
                   for j, p in enumerate(pieces)]
        return Drawing(text=text, images=images, classes=self.top_classes(probs[0]), objects=objects, seed=seed,
                       truncation=truncation, truncated=any(truncated))

    @torch.no_grad()
    def per_token(self, text: str, seed: int | None = None, truncation: float | None = None
                  ) -> list[tuple[str, object, dict]]:
        """One image per word: ``[(word, image, top class), ...]``, all with the same noise."""
        text = clean_text(text)
        truncation = check_truncation(self.default_truncation if truncation is None else truncation)
        seed = text_seed(text) if seed is None else check_seed(seed)
        enc = self.classifier.encoder.encode(text)
        words = enc.words(0, text)
        if not words:
            raise UserError("text has no words the text encoder can read")
        masks = torch.zeros(len(words), enc.mask.shape[1], dtype=torch.bool)  # (W, T)
        for j, (_, positions) in enumerate(words):
            masks[j, positions] = True
        probs, emb = self.classifier.score_states(enc.hidden.expand(len(words), -1, -1), masks, [w for w, _ in words])
        z = truncated_noise(1, self.z_dim, truncation, seed).expand(len(words), -1)  # (W, Z): same noise
        images = to_pil(self.generator(z, self._embeddings(probs, emb), truncation))
        return [(w, img, self.top_classes(p, 1)[0]) for (w, _), img, p in zip(words, images, probs, strict=True)]

    @torch.no_grad()
    def interpolate(self, text: str, to: str, steps: int = 8, seed: int | None = None,
                    truncation: float | None = None) -> list:
        """``steps`` images along the line from ``text``'s embedding to ``to``'s, with the same noise."""
        text, to = clean_text(text), clean_text(to)
        if not 2 <= int(steps) <= MAX_N:
            raise UserError(f"--steps must be in 2..{MAX_N}, got {steps}")
        truncation = check_truncation(self.default_truncation if truncation is None else truncation)
        seed = text_seed(text) if seed is None else check_seed(seed)
        emb, _, _ = self.embed([text, to])  # (2, E)
        t = torch.linspace(0, 1, int(steps))[:, None]  # (S, 1)
        path = (1 - t) * emb[0] + t * emb[1]  # (S, E)
        z = truncated_noise(1, self.z_dim, truncation, seed).expand(int(steps), -1)  # (S, Z)
        return to_pil(self.generator(z, path, truncation))


def check_n(n: int) -> int:
    """Images per object: an int in 1..MAX_N, else a UserError."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise UserError(f"n must be an integer in 1..{MAX_N}, got {n!r}")
    return n


def check_seed(seed: int) -> int:
    """A noise seed: an int in 0..2**63-1, else a UserError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    return seed


def check_truncation(truncation: float) -> float:
    from modalbridge.generators.biggan import check_truncation as _check

    return _check(truncation)


@functools.lru_cache(maxsize=4)
def _load(path: str, generator: str | None) -> Drawer:
    from modalbridge.generators import load_generator

    classifier = load_classifier(path)
    c = classifier.model.config
    if generator is None:
        if classifier.is_resolver:
            raise UserError(f"the resolver in {path} has no generator of its own; pass --generator "
                            "biggan-deep-128|256|512 (Hugging Face hub id, cached) or a directory in the published "
                            "format (config.json + pytorch_model.bin)")
        generator = c.generator
    try:
        gen = load_generator(generator)
    except UserError as e:
        if not Path(str(generator)).exists():  # a name or hub id: point at the local-directory alternative
            raise UserError(f"{e} (or --generator DIR: a directory with config.json + pytorch_model.bin)") from None
        raise
    gen.eval().requires_grad_(False)
    table = gen.class_embeddings.detach().float()
    if table.shape[0] != c.num_classes:
        raise UserError(f"generator '{generator}' has {table.shape[0]} classes; the model in {path} scores "
                        f"{c.num_classes} (its vocabulary must match the generator's class order)")
    if not classifier.is_resolver:
        if tuple(table.shape) != (c.num_classes, c.embed_dim):
            raise UserError(f"generator '{generator}' has a {tuple(table.shape)} class table; "
                            f"the mapper in {path} was trained for ({c.num_classes}, {c.embed_dim})")
        if not torch.allclose(table, classifier.model.table, atol=1e-4):
            warnings.warn(f"the mapper in {path} was trained against another class table than generator "
                          f"'{generator}' has; images may not match the text", stacklevel=2)
    return Drawer(classifier, gen, source=path)


def load_drawer(spec: str | Path | None = None, generator: str | Path | None = None) -> Drawer:
    """Load a text -> image pipeline once per process.

    Args:
        spec: a resolver or mapper model directory or embedded name; None = the embedded default (``t2i-fashion``:
            MiniLM + Fashion mapper + ``gan-fashion`` generator, offline).
        generator: a generator name (``biggan-deep-128|256|512``) or directory; None = the one the model names
            (required for a resolver, which names none).
    """
    classifier = load_classifier(spec)
    return _load(classifier.source, None if generator is None else str(generator))
