"""The vocabularies themselves: the built-ins (:func:`imagenet1k`, the 1000 classes in BigGAN's class-index order,
none dropped; :func:`fashion`, the 10 Fashion-MNIST classes with hand-curated synonyms), builders from WordNet 3.0
(:func:`from_wnids`, :func:`from_names`) and :func:`resolve` for a CLI spec. The type is
:class:`modalbridge.t2i.vocabulary.Vocabulary`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from modalbridge.errors import UserError, read_json
from modalbridge.t2i import wordnet
from modalbridge.t2i.vocabulary import VocabClass, Vocabulary, key

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
IMAGENET_WNIDS = DATA_DIR / "imagenet1k_wnids.txt"
IMAGENET_EVERYDAY = DATA_DIR / "imagenet1k_everyday_names.tsv"

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
        data = read_json(path, "vocabulary file")
        if isinstance(data, list):
            if not data or not all(isinstance(x, str) and x.strip() for x in data):
                raise UserError(f"{path}: expected a non-empty list of wnids or class names")
            return from_names(data, name=path.stem)
        return Vocabulary.from_dict(data, source=str(path))
    lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if not lines:
        raise UserError(f"{path} lists no classes")
    return from_names(lines, name=path.stem)
