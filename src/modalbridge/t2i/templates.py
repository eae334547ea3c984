"""Sentence templates and their fillers for the text -> class training sentences (see :mod:`modalbridge.t2i.sentences`,
which samples and renders them).

A template is a format string over slots: ``{a}`` / ``{a_adj}`` / ``{the}`` / ``{pl}`` ... the class noun phrase
(with article, adjective, plural), ``{b}`` a second class, ``{hyper}`` a WordNet hypernym, ``{gloss}`` /
``{gloss_np}`` the WordNet definition, and fillers: ``{subj}``, ``{num}``, ``{style}``, ``{style_a}``, ``{place}``,
``{verb}``. Category-specific fillers (``ADJECTIVES``, ``PLACES``, ``VERBS``) narrow an ambiguous word to the classes
of that category.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------- fillers
SUBJECTS = ["a man", "a woman", "a child", "a boy", "a girl", "an old man", "a young woman", "someone",
            "a person", "my friend", "a tourist", "my neighbor"]
NUMBERS = ["two", "three", "four", "five", "several", "a few", "many", "a couple of"]
STYLES = ["photo", "photograph", "picture", "painting", "drawing", "sketch", "watercolor painting", "oil painting",
          "pencil drawing", "illustration", "close-up photo", "black and white photo", "blurry photo", "snapshot",
          "3D render", "cartoon"]
GENERIC_ADJ = ["small", "large", "big", "little", "beautiful", "lovely", "typical", "realistic", "tiny", "huge"]
GENERIC_PLACE = ["in the picture", "in the center of the frame", "on a white background", "in the foreground",
                 "in the middle of the image", "seen from the side", "seen from above", "in bright sunlight",
                 "in the shade", "in soft lighting"]
GENERIC_VERB = ["looking at", "photographing", "pointing at", "drawing", "admiring"]
# Category-specific fillers: they fit the category, and they narrow an ambiguous word to it.
ADJECTIVES = {
    "animal": ["cute", "young", "wild", "sleepy", "hungry", "curious", "majestic", "adult", "friendly", "lonely"],
    "person": ["young", "happy", "smiling", "tall", "proud", "cheerful"],
    "food": ["fresh", "delicious", "homemade", "tasty", "hot", "appetizing", "half-eaten"],
    "plant": ["wild", "lush", "healthy", "flowering", "dewy"],
    "landscape": ["majestic", "misty", "sunny", "quiet", "stunning", "secluded"],
    "vehicle": ["new", "rusty", "shiny", "vintage", "modern", "fast", "red", "white"],
    "structure": ["ancient", "modern", "abandoned", "historic", "famous", "old"],
    "clothing": ["red", "blue", "black", "white", "striped", "plain", "stylish", "casual", "elegant", "pink"],
    "artifact": ["new", "old", "broken", "shiny", "vintage", "antique", "dusty", "used", "black", "white"],
}
PLACES = {
    "animal": ["in the wild", "at the zoo", "on the grass", "in the forest", "near the water", "in its habitat",
               "in a meadow"],
    "person": ["at the park", "in the city", "at a party", "outdoors", "on a sunny afternoon"],
    "food": ["on a serving dish", "on the dinner table", "in a bowl", "on the kitchen counter", "at a diner",
             "in the kitchen"],
    "plant": ["in the garden", "in a meadow", "in the forest", "on the ground", "in a field"],
    "landscape": ["at sunset", "under a blue sky", "in the distance", "on a cloudy day", "in summer",
                  "in the morning sun"],
    "vehicle": ["in the city", "at night", "in the rain", "under a cloudy sky", "at dusk", "in the distance"],
    "structure": ["in the city", "in the countryside", "at night", "under a blue sky", "on a hill",
                  "by the river"],
    "clothing": ["on a hanger", "in a store window", "on a mannequin", "in a dressing room", "on display",
                 "folded on a bed"],
    "artifact": ["on the floor", "in a room", "on a workbench", "in a store", "on a table", "in a workshop"],
}
VERBS = {
    "animal": ["feeding", "watching", "petting"],
    "person": ["talking to", "greeting", "standing next to"],
    "food": ["eating", "serving", "sharing", "tasting"],
    "plant": ["picking", "watering", "smelling"],
    "landscape": ["hiking near", "painting", "walking toward"],
    "vehicle": ["driving", "riding", "repairing", "washing"],
    "structure": ["visiting", "walking past", "entering"],
    "clothing": ["wearing", "trying on", "buying", "carrying"],
    "artifact": ["holding", "using", "carrying", "buying", "cleaning"],
}


@dataclass(frozen=True)
class Template:
    id: int
    text: str
    kind: str  # single | plural | disamb | pair | gloss

    @property
    def names_class(self) -> bool:
        """Does the rendered text contain the class word (some gloss templates do not)?"""
        return any(s in self.text for s in ("{a}", "{a_adj}", "{the}", "{the_adj}", "{bare}", "{pl}", "{adj_pl}"))


_T = [
    # single noun phrase
    ("single", "{a}"), ("single", "{a_adj}"), ("single", "{a} {place}"), ("single", "{a_adj} {place}"),
    ("single", "{style_a} of {a}"), ("single", "{style_a} of {a_adj}"), ("single", "{style_a} of {a} {place}"),
    ("single", "a close-up of {the}"), ("single", "there is {a} {place}"), ("single", "this is {a}"),
    ("single", "here is {a_adj}"), ("single", "look at {the}!"), ("single", "I see {a} {place}"),
    ("single", "{subj} {verb} {a}"), ("single", "{subj} {verb} {a_adj} {place}"), ("single", "draw {a}"),
    ("single", "draw me {a_adj}"), ("single", "please draw {a} {place}"), ("single", "show me {a}"),
    ("single", "generate an image of {a}"), ("single", "create {style_a} of {a_adj}"),
    ("single", "can you paint {a}?"), ("single", "I would like to see {a_adj}"),
    ("single", "what does {a} look like?"), ("single", "{the} {place}"), ("single", "{the_adj} {place}"),
    ("single", "{a}, {style}"), ("single", "{style_a} showing {a}"), ("single", "an image containing {a}"),
    ("single", "{a_adj}, high quality photo"), ("single", "{subj} is {verb} {the}"),
    ("single", "my {style} of {the}"),
    # plural
    ("plural", "{num} {pl}"), ("plural", "{num} {adj_pl} {place}"), ("plural", "{style_a} of {num} {pl}"),
    ("plural", "some {pl} {place}"), ("plural", "{pl} {place}"), ("plural", "a collection of {pl}"),
    ("plural", "{subj} {verb} {num} {pl}"), ("plural", "there are {num} {pl} {place}"),
    ("plural", "lots of {adj_pl}"),
    # disambiguated by the nearest hypernym
    ("disamb", "{a}, a kind of {hyper}"), ("disamb", "{a} ({hyper})"),
    ("disamb", "{style_a} of {a}, which is a type of {hyper}"), ("disamb", "{a}, the {hyper}"),
    # two classes
    ("pair", "{a} and {b}"), ("pair", "{a} next to {b}"), ("pair", "{style_a} of {a} and {b}"),
    ("pair", "{a} with {b}"), ("pair", "{a} beside {b}"),
    # glosses ("{gloss_np}" alone names no class word)
    ("gloss", "{a} is {gloss_np}"), ("gloss", "{gloss_np}"), ("gloss", "{style_a} of {gloss_np}"),
    ("gloss", "{bare}: {gloss}"), ("gloss", "{a}, which is {gloss_np}"),
]
TEMPLATES = tuple(Template(i, t, k) for i, (k, t) in enumerate(_T))
SLOTS = {t.id: frozenset(f for _, f, _, _ in string.Formatter().parse(t.text) if f) for t in TEMPLATES}
PLURAL_SLOTS = frozenset({"pl", "adj_pl"})
NEVER_HELD_OUT = (0, 1)  # the bare "{a}" / "{a_adj}" forms are what users type most; train always sees them
DETERMINERS = ("a ", "an ", "the ", "any ", "one ", "some ", "two ", "several ")
