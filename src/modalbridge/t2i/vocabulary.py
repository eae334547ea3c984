"""Class vocabularies of a class-conditional generator, tied to WordNet 3.0: words -> classes and back.

A :class:`Vocabulary` lists the generator's classes in class-index order. Per class: ``index``, ``wnid``, ``label``,
``lemmas`` (every WordNet lemma, multi-word ones with spaces: "golden retriever"; ``lemmas[0]`` is the word used
for the class in generated sentences), ``hypernyms`` (labels of the longest hypernym path, nearest first, up to
"entity") with their ``hypernym_wnids`` and ``hypernym_lexnames``, ``gloss``, ``lexname``, a coarse ``category``
(picks fitting verbs, places and adjectives in sentences), and ``scientific`` (Latin binomials such as
"Canis familiaris").

Ambiguity, handled explicitly:
* ``word_to_classes`` maps every lower-cased, tokenised surface form (each lemma, its plural and the label) to the
  *set* of classes it names. A word shared by several classes ("crane": the bird and the machine, "maillot",
  "cardigan", "tub", "jersey" in the Fashion vocabulary) maps to all of them; ``ambiguous`` lists those words.
* Sentences (see sentences.py) turn an ambiguous word into a *mixture* target (uniform over its classes) unless
  the sentence disambiguates it: a hypernym or gloss in the sentence ("a crane, a kind of wading bird") or a
  context word from the class's own category ("a crane lifting steel at a construction site") keeps only the
  classes that fit. Mined captions with an ambiguous word get the mixture.
* Words for ancestors ("dog", "shoe") map, in ``hypernym_to_classes``, to every class under them (at most
  ``MAX_HYPERNYM_CLASSES``, only concrete lexicographer files, no abstract WordNet nodes such as "device", never a
  word that is itself a class lemma).
Homonyms outside the vocabulary ("drake" the duck vs. Sir Francis Drake) name one class here and stay single-class.

The built-in vocabularies and the builders from WordNet live in :mod:`modalbridge.t2i.vocabularies`. Vocabularies save
to / load from JSON without WordNet.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from modalbridge.errors import UserError, read_json
from modalbridge.t2i import inflect

if TYPE_CHECKING:
    import torch

FORMAT = "modalbridge.vocabulary"
VERSION = 1
CATEGORIES = ("animal", "person", "food", "plant", "landscape", "vehicle", "structure", "clothing", "artifact")
MAX_HYPERNYM_CLASSES = 150
# WordNet nodes too abstract to stand for their classes in a sentence ("an object", "a device").
ABSTRACT = frozenset(
    "entity|physical entity|abstraction|object|whole|artifact|instrumentality|living thing|organism|being|"
    "causal agent|matter|substance|solid|covering|commodity|consumer goods|device|container|equipment|implement|"
    "instrument|structure|conveyance|protective covering|furnishing|person|natural object|food|nutriment|"
    "foodstuff|part|communication|creation|material|way|system|article|product|fluid|liquid|fabric|piece|"
    "thing|unit|module|component|element|item|means|medium|mechanism|apparatus|accessory|accessories|"
    # concrete in WordNet but everyday homonyms: as a bare word they would mislead mining and drawing
    "area|circle|design|course|surface|horizontal surface|support|control|landing|display|measure|establishment|"
    "institution|ride|game|shade|connection|attachment|obstruction|restraint|framework|platform|strengthener|"
    "structural member|reproducer|turner|winder|runner|pointer|post|stick|staff|rod|bar|spring|key|case|kit|"
    "package|disguise|decoration|adornment|emblem|weight|top|fare|concoction|dressing|ingredient|flavorer|feed|"
    "fodder|litter|globule|kernel|grain|seed|produce|ware|receptacle|housing|peripheral|transducer|duplicator|"
    "reflector|sheath|brace|lever|grate|medium|cutter|filter|trap|pin|clip|fastener|opener".split("|")
)
# Hypernym words stand for their classes only when concrete (not "area", "shape", "relation", "associate").
CONCRETE_LEXNAMES = frozenset({"noun.animal", "noun.artifact", "noun.food", "noun.plant", "noun.object",
                               "noun.substance"})

_TOKEN = re.compile(r"[^\W_]+")
_ASCII_TOKEN = re.compile(r"[a-z0-9]+")  # the same tokens for ASCII text, after lower(); a fast path


def normalize_token(token: str) -> str:
    """Lower-case, accents stripped ("Consommé" -> "consomme")."""
    if token.isascii():
        return token.lower()
    decomposed = unicodedata.normalize("NFKD", token.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokenize(text: str) -> list[tuple[int, int, str]]:
    """Word tokens of ``text`` as ``(start, end, normalized)``; "T-shirt" -> t, shirt; "golden_retriever" -> 2."""
    if text.isascii():
        return [(m.start(), m.end(), m.group(0)) for m in _ASCII_TOKEN.finditer(text.lower())]
    return [(m.start(), m.end(), normalize_token(m.group(0))) for m in _TOKEN.finditer(text)]


@lru_cache(maxsize=1 << 16)
def key(phrase: str) -> str:
    """Lookup key of a phrase: its normalized tokens joined by one space."""
    return " ".join(t for _, _, t in tokenize(phrase))


@dataclass
class VocabClass:
    index: int
    wnid: str | None
    label: str
    lemmas: list[str]
    hypernyms: list[str] = field(default_factory=list)
    hypernym_wnids: list[str] = field(default_factory=list)
    hypernym_lexnames: list[str] = field(default_factory=list)
    gloss: str = ""
    category: str = "artifact"
    lexname: str = ""
    scientific: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Match:
    """A class word found in a text: character span, surface, lookup key, classes named, and lemma|hypernym."""

    start: int
    end: int
    text: str
    phrase: str
    classes: tuple[int, ...]
    kind: str


class Vocabulary:
    """Ordered classes plus word -> classes lookups (see module docstring)."""

    def __init__(self, classes: Sequence[VocabClass], name: str = "custom"):
        if not classes:
            raise UserError("a vocabulary needs at least one class")
        for i, c in enumerate(classes):
            if c.index != i:
                raise UserError(f"vocabulary class {c.label!r} has index {c.index}, expected {i}")
            if not c.lemmas:
                raise UserError(f"vocabulary class {i} ({c.label!r}) has no lemmas")
            if c.category not in CATEGORIES:
                raise UserError(f"vocabulary class {i} has unknown category {c.category!r}")
        self.name = name
        self.classes = list(classes)
        self.word_to_classes = self._word_map()
        self.hypernym_to_classes = self._hypernym_map()
        self.max_phrase_len = max(len(k.split()) for k in [*self.word_to_classes, *self.hypernym_to_classes])

    # ------------------------------------------------------------------ lookups
    def _word_map(self) -> dict[str, tuple[int, ...]]:
        exact: dict[str, set[int]] = {}
        derived: dict[str, set[int]] = {}
        for c in self.classes:
            for lemma in c.lemmas:
                exact.setdefault(key(lemma), set()).add(c.index)
                if lemma not in c.scientific:  # "Canis familiaris" has no plural
                    derived.setdefault(key(inflect.plural(lemma)), set()).add(c.index)
            for part in c.label.split("/"):
                derived.setdefault(key(part), set()).add(c.index)
        # An exact lemma wins over a derived form of another class ("sunglasses" vs. plural of "sunglass").
        merged = {**derived, **exact}
        return {k: tuple(sorted(v)) for k, v in sorted(merged.items()) if k}

    def _hypernym_map(self) -> dict[str, tuple[int, ...]]:
        by_wnid: dict[str, set[int]] = {}
        word_of: dict[str, str] = {}
        for c in self.classes:
            lexnames = c.hypernym_lexnames or ["noun.artifact"] * len(c.hypernyms)  # hand-made JSON may omit them
            for w, h, lex in zip(c.hypernym_wnids, c.hypernyms, lexnames, strict=True):
                if lex not in CONCRETE_LEXNAMES:
                    continue
                by_wnid.setdefault(w, set()).add(c.index)
                word_of[w] = h
        out: dict[str, set[int]] = {}
        for w, members in by_wnid.items():
            k = key(word_of[w])
            if k in ABSTRACT or k in self.word_to_classes or len(members) > MAX_HYPERNYM_CLASSES:
                continue
            if len(members) == len(self.classes) and len(self.classes) > 1:
                continue  # names everything: no information
            out.setdefault(k, set()).update(members)
            plural = key(inflect.plural(word_of[w]))
            if plural not in self.word_to_classes:
                out.setdefault(plural, set()).update(members)
        return {k: tuple(sorted(v)) for k, v in sorted(out.items()) if k}

    @property
    def ambiguous(self) -> dict[str, tuple[int, ...]]:
        """Words that name several classes ("crane" -> bird and machine)."""
        return {k: v for k, v in self.word_to_classes.items() if len(v) > 1}

    def classes_for(self, word: str, hypernyms: bool = False) -> tuple[int, ...]:
        """Classes a word or phrase names (case-insensitive, plural-aware); empty if none."""
        k = key(word)
        if k in self.word_to_classes:
            return self.word_to_classes[k]
        return self.hypernym_to_classes.get(k, ()) if hypernyms else ()

    def find(self, text: str, hypernyms: bool = False) -> list[Match]:
        """Class words in ``text``, longest match first, left to right, non-overlapping."""
        toks = tokenize(text)
        out: list[Match] = []
        i = 0
        while i < len(toks):
            for n in range(min(self.max_phrase_len, len(toks) - i), 0, -1):
                k = " ".join(t for _, _, t in toks[i : i + n])
                classes, kind = self.word_to_classes.get(k), "lemma"
                if classes is None and hypernyms:
                    classes, kind = self.hypernym_to_classes.get(k), "hypernym"
                if classes:
                    s, e = toks[i][0], toks[i + n - 1][1]
                    out.append(Match(s, e, text[s:e], k, classes, kind))
                    i += n
                    break
            else:
                i += 1
        return out

    def mentions(self, texts: Sequence[str], hypernym_weight: float = 0.5) -> torch.Tensor:
        """(B, K) lexical evidence: 1 for the classes a word of each text names (lemma or everyday name; every class
        of an ambiguous word), ``hypernym_weight`` for the classes under a generic word ("dog"), else 0."""
        import torch

        out = torch.zeros(len(texts), len(self.classes))
        for i, text in enumerate(texts):
            for m in self.find(text[:4096], hypernyms=hypernym_weight > 0):
                idx = list(m.classes)
                out[i, idx] = out[i, idx].clamp_min(1.0 if m.kind == "lemma" else hypernym_weight)
        return out

    def index(self, name: str) -> int:
        """Class index of a wnid, label or unambiguous lemma."""
        for c in self.classes:
            if name == c.wnid:
                return c.index
        classes = tuple(c.index for c in self.classes if c.label == name) or self.classes_for(name)
        if len(classes) == 1:
            return classes[0]
        if classes:
            raise UserError(f"'{name}' names several classes: {', '.join(self.classes[i].label for i in classes)}")
        raise UserError(f"'{name}' is not a class of vocabulary '{self.name}'")

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> VocabClass:
        return self.classes[i]

    def __iter__(self):
        return iter(self.classes)

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.classes]

    @property
    def wnids(self) -> list[str | None]:
        return [c.wnid for c in self.classes]

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "classes": [asdict(c) for c in self.classes],
            "ambiguous": {k: list(v) for k, v in self.ambiguous.items()},  # derived, for readers; ignored on load
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "vocabulary") -> Vocabulary:
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("classes"), list):
            raise UserError(f"{source} is not a modalbridge vocabulary (expected format '{FORMAT}' with 'classes')")
        if data.get("version", 0) > VERSION:
            raise UserError(f"{source} has vocabulary version {data['version']}; this modalbridge reads {VERSION}")
        names = set(VocabClass.__dataclass_fields__)
        classes = []
        for i, item in enumerate(data["classes"]):
            if not isinstance(item, dict) or not {"index", "label", "lemmas"} <= set(item):
                raise UserError(f"{source}: class {i} lacks index/label/lemmas")
            unknown = set(item) - names
            if unknown:
                raise UserError(f"{source}: class {i} has unknown field(s) {sorted(unknown)}")
            if not isinstance(item["lemmas"], list) or not all(isinstance(x, str) for x in item["lemmas"]):
                raise UserError(f"{source}: class {i} lemmas must be a list of strings")
            classes.append(VocabClass(**item))
        return cls(classes, name=str(data.get("name", "custom")))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> Path:
        from modalbridge.files import atomic_write_text

        atomic_write_text(Path(path), self.to_json())
        return Path(path)


def load(path: str | Path) -> Vocabulary:
    """Vocabulary saved by :meth:`Vocabulary.save` (no WordNet needed)."""
    return Vocabulary.from_dict(read_json(path, "vocabulary file"), source=str(path))
