"""English noun-phrase forms for class words: plural, indefinite article, mass and plural-only nouns.

Small, rule-based and deterministic (no lookup service): enough for WordNet class lemmas like "golden retriever",
"man-of-war", "French loaf", "pair of jeans". The head of a phrase is its last word, or the word before a
preposition ("cup of coffee" -> "cups of coffee", "man-of-war" -> "men-of-war").
"""

from __future__ import annotations

import re
from functools import lru_cache

# Same form in the plural.
UNCHANGED = frozenset(
    "sheep deer fish moose bison species series aircraft hovercraft spacecraft watercraft salmon trout swine cod "
    "tench grouse chassis pekinese pekingese maltese japanese chinese swiss offspring".split()
)
IRREGULAR = {
    "man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice", "louse": "lice",
    "goose": "geese", "tooth": "teeth", "foot": "feet", "ox": "oxen", "cactus": "cacti", "fungus": "fungi",
    "larva": "larvae", "axis": "axes", "crisis": "crises", "analysis": "analyses", "thesis": "theses",
}
# -f/-fe -> -ves (checked as a word ending, so "pocketknife" -> "pocketknives").
F_TO_VES = ("wolf", "knife", "leaf", "half", "calf", "loaf", "shelf", "thief", "wife", "life", "scarf", "sheaf",
            "elf", "hoof", "self")
O_ES = frozenset("potato tomato hero echo torpedo veto volcano mosquito buffalo domino tornado".split())
CH_K = frozenset("stomach monarch epoch loch tech czech eunuch nudibranch".split())  # -ch said /k/: +s
MAN_S = frozenset("human german doberman roman shaman caiman talisman ottoman pullman dolman walkman".split())
# Mass nouns: no "a", no plural ("some guacamole"). Checked on the whole phrase, then on its head word.
UNCOUNTABLE = frozenset(
    ["guacamole", "consomme", "carbonara", "espresso", "eggnog", "hay", "dough", "broccoli", "cauliflower",
     "rapeseed", "corn", "maize", "wine", "red wine", "ice cream", "mashed potato", "chocolate sauce",
     "chocolate syrup", "toilet tissue", "toilet paper", "bathroom tissue", "hot pot", "trifle", "denim",
     "clothing", "footwear", "apparel", "attire", "sauce", "syrup", "tissue", "cream", "paper", "furniture",
     "equipment", "crockery", "cutlery", "jewelry", "jewellery", "hosiery", "makeup", "produce", "fodder", "feed",
     "linen", "padding", "wrapping", "cattle", "transport", "media", "luggage", "baggage", "machinery", "coffee",
     "alcohol", "bread", "fabric", "fluid", "liquid", "litter", "armor", "body armor", "starch", "poultry",
     # plural mass nouns: "some white goods"
     "bedclothes", "durables", "drygoods", "goods", "starches", "toiletries", "sennenhunde", "clothes"]
)
# Head words ending like this are mass nouns too ("neckwear", "tableware").
UNCOUNTABLE_SUFFIXES = ("wear", "ware")
# Plural-only nouns that come in pairs ("a pair of jeans"); the lemma is already plural.
PLURAL_ONLY = frozenset(
    "trousers pants jeans slacks shorts chinos leggings tights sweatpants jodhpurs breeches dungarees overalls "
    "pajamas pyjamas glasses sunglasses binoculars goggles shades scissors pliers tongs trunks knickers "
    "spectacles".split()
)
_PREP = frozenset("of in on with for de du".split())
_AN_LETTERS = frozenset("aefhilmnorsx")  # letter names said with a leading vowel: "an MP3", "an X-ray"
_A_PREFIXES = ("uni", "use", "usu", "uk", "ura", "ure", "uri", "uro", "uti", "ute", "eu", "ewe", "one", "once", "ubi")
_AN_H = ("hour", "honest", "honor", "honour", "heir")


def _head(words: list[str]) -> int:
    for i, w in enumerate(words):
        if i > 0 and w.lower() in _PREP:
            return i - 1
    return len(words) - 1


def _plural_word(word: str) -> str:
    if "-" in word:  # "man-of-war" -> "men-of-war", "flip-flop" -> "flip-flops"
        parts = word.split("-")
        i = _head(parts)
        parts[i] = _plural_word(parts[i])
        return "-".join(parts)
    low = word.lower()
    if not low or not low[-1].isalpha() or low in UNCHANGED or low.endswith("ese"):
        return word
    if low in IRREGULAR:
        out = IRREGULAR[low]
        return out.capitalize() if word[0].isupper() else out
    if low.endswith("man") and len(low) > 3 and low not in MAN_S:
        return word[:-3] + word[-3:-2] + "en"
    for ending in F_TO_VES:
        if low.endswith(ending):
            stem = word[: -2] if low.endswith("fe") else word[:-1]
            return stem + "ves"
    if low.endswith(("s", "x", "z", "sh")) or (low.endswith("ch") and low not in CH_K):
        return word + "es"
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return word[:-1] + "ies"
    if low.endswith("o") and low in O_ES:
        return word + "es"
    return word + "s"


@lru_cache(maxsize=8192)
def is_uncountable(phrase: str) -> bool:
    low = phrase.lower()
    words = low.split()
    if low in UNCOUNTABLE or not words:
        return low in UNCOUNTABLE
    head = words[_head(words)]
    return head in UNCOUNTABLE or (head.endswith(UNCOUNTABLE_SUFFIXES) and head not in ("software",) and len(head) > 5)


@lru_cache(maxsize=8192)
def is_plural_only(phrase: str) -> bool:
    words = phrase.lower().split()
    return bool(words) and words[_head(words)] in PLURAL_ONLY


@lru_cache(maxsize=8192)
def plural(phrase: str) -> str:
    """Plural of a noun phrase: "golden retriever" -> "golden retrievers", "cup of tea" -> "cups of tea"."""
    if is_uncountable(phrase) or is_plural_only(phrase):
        return phrase
    words = phrase.split(" ")
    i = _head(words)
    words[i] = _plural_word(words[i])
    return " ".join(words)


@lru_cache(maxsize=8192)
def article(phrase: str) -> str:
    """ "a" or "an" for a phrase, by the sound of its first word (rules, not a pronouncing dictionary)."""
    m = re.match(r"[A-Za-z0-9']+", phrase.strip())
    if not m:
        return "a"
    word = m.group(0)
    if len(word) >= 2 and word.isupper():  # acronym, read letter by letter: "a CD player", "an MRI"
        return "an" if word[0].lower() in _AN_LETTERS else "a"
    low = word.lower()
    if low.startswith(_AN_H):
        return "an"
    if low[0] in "aeiou" and not low.startswith(_A_PREFIXES):
        return "an"
    if low[0] == "8" or low in ("11", "18"):
        return "an"
    return "a"


@lru_cache(maxsize=8192)
def with_article(phrase: str) -> str:
    """ "an old dog", "a pair of jeans", "some guacamole"."""
    if is_uncountable(phrase):
        return f"some {phrase}"
    if is_plural_only(phrase):
        return f"a pair of {phrase}"
    return f"{article(phrase)} {phrase}"
