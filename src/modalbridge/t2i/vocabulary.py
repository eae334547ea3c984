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

Builders: :func:`imagenet1k` (the 1000 classes in BigGAN's class-index order, none dropped), :func:`fashion`
(the 10 Fashion-MNIST classes with hand-curated synonyms), :func:`from_wnids`, :func:`from_names`; and
:func:`resolve` for a CLI spec. Vocabularies save to / load from JSON without WordNet.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from modalbridge.errors import UserError, read_json
from modalbridge.t2i import inflect

if TYPE_CHECKING:
    import torch

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
IMAGENET_WNIDS = DATA_DIR / "imagenet1k_wnids.txt"
IMAGENET_EVERYDAY = DATA_DIR / "imagenet1k_everyday_names.tsv"
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

# Fashion-MNIST (Xiao et al. 2017) classes in label order, each tied to one WordNet 3.0 synset (wnid, gloss,
# hypernyms). The lemma lists are hand-curated: WordNet's own lemmas where they fit, plus the everyday words
# people use for the garments in the photos. Choices:
#  * T-shirt/top: jersey.n.03 ("a close-fitting pullover shirt": jersey, T-shirt, tee shirt); "top" joins it
#    because Fashion-MNIST's class is "T-shirt/top".
#  * Trouser: trouser.n.01; WordNet's singular "trouser"/"pant" give way to the plural-only "trousers", "pants";
#    jeans and slacks (WordNet hyponyms of trouser) are folded in, as the photos include them.
#  * Pullover: pullover.n.01 (a sweater put on over the head); "sweater"/"jumper" from sweater.n.01, its parent.
#  * "jersey" is deliberately in both T-shirt/top (WordNet's sense) and Pullover (British "jersey" = jumper):
#    an ambiguous word, so a mixture target.
#  * Coat: coat.n.01 plus the outerwear seen in the data (parka, jacket, anorak, raincoat, trench coat).
#  * Sandal: sandal.n.01 plus flip-flop (flip-flop.n.02 is a sandal). "shoe" is a hypernym of Sandal and
#    Sneaker, "footwear" of those and Ankle boot, so they map to mixtures, not to one class.
#  * Sneaker: gym_shoe.n.01 (gym shoe, sneaker, tennis shoe) plus trainer, running shoe, sports shoe.
#  * Bag: bag.n.04 (bag, handbag, pocketbook, purse) plus shoulder bag, tote bag, satchel.
#  * Ankle boot: boot.n.01 (WordNet has no ankle-boot synset) plus ankle boot, bootie, chelsea boot.
FASHION = (
    ("T-shirt/top", "n03595614", ("T-shirt", "tee shirt", "tee", "top", "tank top", "crop top", "tshirt", "jersey")),
    ("Trouser", "n04489008", ("trousers", "pants", "jeans", "slacks", "chinos", "sweatpants")),
    ("Pullover", "n04021028", ("pullover", "sweater", "jumper", "slipover", "sweatshirt", "hoodie", "jersey")),
    ("Dress", "n03236735", ("dress", "frock", "gown", "sundress", "evening dress")),
    ("Coat", "n03057021", ("coat", "parka", "jacket", "overcoat", "anorak", "raincoat", "trench coat")),
    ("Sandal", "n04133789", ("sandal", "flip-flop", "strappy sandal", "open-toed shoe")),
    ("Shirt", "n04197391", ("shirt", "blouse", "button-down shirt", "dress shirt", "flannel shirt")),
    ("Sneaker", "n03472535", ("sneaker", "trainer", "running shoe", "tennis shoe", "gym shoe", "sports shoe")),
    ("Bag", "n02774152", ("bag", "handbag", "purse", "pocketbook", "shoulder bag", "tote bag", "satchel")),
    ("Ankle boot", "n02872752", ("ankle boot", "boot", "bootie", "chelsea boot")),
)

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


# ---------------------------------------------------------------------- builders (need WordNet)
def _name(lemma: str) -> str:
    return lemma.replace("_", " ")


def _category(syn) -> str:
    lex = syn.lexname()
    direct = {"noun.animal": "animal", "noun.person": "person", "noun.food": "food", "noun.plant": "plant",
              "noun.object": "landscape"}
    if lex in direct:
        return direct[lex]
    ancestors = {a.name() for path in syn.hypernym_paths() for a in path}
    for wn_name, cat in (("clothing.n.01", "clothing"), ("footwear.n.02", "clothing"), ("conveyance.n.03", "vehicle"),
                         ("structure.n.01", "structure")):
        if wn_name in ancestors:
            return cat
    return "artifact"


def _is_binomial(lemma: str, rd) -> bool:
    """ "Canis familiaris": two words, the first a WordNet genus."""
    words = lemma.split()
    if len(words) != 2 or not words[0][:1].isupper() or not words[1].islower():
        return False
    return any(n.startswith("genus_") for s in rd.synsets(words[0], "n") for n in s.lemma_names())


def _dedupe(words: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for w in words:
        if key(w) and key(w) not in seen:
            seen.add(key(w))
            out.append(w)
    return out


def from_wnids(
    wnids: Sequence[str],
    name: str = "custom",
    labels: Sequence[str] | None = None,
    lemmas: Sequence[Sequence[str]] | None = None,
    category: str | None = None,
) -> Vocabulary:
    """Vocabulary of WordNet synsets in the given order.

    Args:
        wnids: WordNet ids (``n02084071``), one per class, in class-index order.
        name: vocabulary name stored in its JSON.
        labels: display labels; default the first WordNet lemma.
        lemmas: per class, lemma lists that replace WordNet's (hand-curated vocabularies); default WordNet's.
        category: force one category for all classes (default: from lexname and hypernyms).
    """
    from modalbridge.t2i import wordnet

    rd = wordnet.reader()
    if len(set(wnids)) != len(wnids):
        dup = next(w for w in wnids if list(wnids).count(w) > 1)
        raise UserError(f"wnid {dup} appears twice in the vocabulary")
    classes = []
    for i, w in enumerate(wnids):
        syn = wordnet.synset(w)
        words = _dedupe(lemmas[i] if lemmas is not None else [_name(x) for x in syn.lemma_names()])
        # The longest path, nearest ancestor first, up to 'entity'. nltk lists the paths in an order that changes with
        # PYTHONHASHSEED, so ties go to the alphabetically first chain: the same vocabulary in every process.
        paths = [p[::-1][1:] for p in syn.hypernym_paths()]
        path = min(paths, key=lambda p: (-len(p), [a.name() for a in p]))
        classes.append(VocabClass(
            index=i,
            wnid=wordnet.wnid(syn),
            label=labels[i] if labels is not None else words[0],
            lemmas=words,
            hypernyms=[_name(a.lemma_names()[0]) for a in path],
            hypernym_wnids=[wordnet.wnid(a) for a in path],
            hypernym_lexnames=[a.lexname() for a in path],
            gloss=syn.definition(),
            category=category or _category(syn),
            lexname=syn.lexname(),
            scientific=[x for x in words if _is_binomial(x, rd)],
        ))
    return Vocabulary(classes, name=name)


def from_names(names: Sequence[str], name: str = "custom") -> Vocabulary:
    """Vocabulary from class names: a wnid, a synset name ("crane.n.04") or a word (its most frequent noun sense).

    The label is the word as given, or the synset's first lemma for a wnid or synset name.
    """
    from modalbridge.t2i import wordnet

    rd = wordnet.reader()
    wnids, labels = [], []
    for n in names:
        n = str(n).strip()
        if re.fullmatch(r"[nvasr]\d{8}", n):
            wnids.append(n)
            labels.append(_name(wordnet.synset(n).lemma_names()[0]))
            continue
        try:
            syns = [rd.synset(n)] if re.fullmatch(r".+\.[nvasr]\.\d+", n) else rd.synsets(n.replace(" ", "_"), "n")
        except Exception:  # nltk's WordNetError for an unknown synset name
            syns = []
        if not syns:
            raise UserError(f"'{n}' is not a WordNet noun (give a wnid like n02084071 or a synset like dog.n.01)")
        wnids.append(wordnet.wnid(syns[0]))
        labels.append(_name(syns[0].lemma_names()[0]) if "." in n else n)
    return from_wnids(wnids, name=name, labels=labels)


def imagenet1k_wnids() -> list[str]:
    wnids = IMAGENET_WNIDS.read_text(encoding="utf-8").split()
    if len(wnids) != 1000:
        raise UserError(f"{IMAGENET_WNIDS} lists {len(wnids)} wnids, expected 1000")
    return wnids


def everyday_names(path: Path = IMAGENET_EVERYDAY) -> dict[str, list[str]]:
    """wnid -> everyday names WordNet lacks ("fridge", "orca whale", "smartphone"), from a hand-curated TSV."""
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            wnid, names = line.split("\t")
            out.setdefault(wnid, []).extend(n.strip() for n in names.split("|") if n.strip())
    return out


@lru_cache(maxsize=1)
def imagenet1k() -> Vocabulary:
    """The 1000 ImageNet-1k classes in class-index order (BigGAN's): all WordNet lemmas, then the everyday names of
    ``data/imagenet1k_everyday_names.tsv`` (lemmas[0] stays WordNet's first lemma). Shared: do not mutate."""
    wnids = imagenet1k_wnids()
    base = from_wnids(wnids, name="imagenet1k")
    extra = everyday_names()
    unknown = sorted(set(extra) - set(wnids))
    if unknown:
        raise UserError(f"{IMAGENET_EVERYDAY} names wnids outside ImageNet-1k: {', '.join(unknown[:3])}")
    for c in base.classes:
        c.lemmas = _dedupe([*c.lemmas, *extra.get(c.wnid, [])])
    return Vocabulary(base.classes, name="imagenet1k")


@lru_cache(maxsize=1)
def fashion() -> Vocabulary:
    """The 10 Fashion-MNIST classes (labels as in ``vision.fashion_mnist.CLASSES``). Shared: do not mutate."""
    return from_wnids(
        [w for _, w, _ in FASHION],
        name="fashion",
        labels=[label for label, _, _ in FASHION],
        lemmas=[list(words) for _, _, words in FASHION],
        category="clothing",
    )


BUILTIN = {"imagenet1k": imagenet1k, "fashion": fashion}


def resolve(spec: str | Path) -> Vocabulary:
    """Vocabulary of a CLI spec: ``imagenet1k`` | ``fashion`` | a saved vocabulary JSON | a JSON list or a text file
    (one per line) of wnids or class names."""
    spec = str(spec)
    if spec in BUILTIN:
        return BUILTIN[spec]()
    path = Path(spec)
    if not path.is_file():
        from modalbridge.errors import closest

        raise UserError(f"unknown vocabulary '{spec}'{closest(spec, BUILTIN)}: use {' or '.join(BUILTIN)} or a file")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is not valid JSON ({type(e).__name__})") from None
        if isinstance(data, list):
            if not data or not all(isinstance(x, str) and x.strip() for x in data):
                raise UserError(f"{path}: expected a non-empty list of wnids or class names")
            return from_names(data, name=path.stem)
        return Vocabulary.from_dict(data, source=str(path))
    lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if not lines:
        raise UserError(f"{path} lists no classes")
    return from_names(lines, name=path.stem)
