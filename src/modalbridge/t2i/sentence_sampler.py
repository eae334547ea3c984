"""One training sentence at a time for the text -> class mapper: a filled template and its target.

:class:`SentenceSampler` picks a class and a source (template, synonym, hypernym, gloss, or a two-class template),
fills a template (:mod:`modalbridge.t2i.templates`) with a word of the class and works out the target: classes with
weights summing to 1. An ambiguous word ("crane") gives a uniform mixture over its classes unless the sentence
narrows it (vocabulary.py explains): a category-specific filler ("in the wild", "lifting") keeps the classes of that
category; a hypernym ("a kind of wading bird") keeps the classes under it; a gloss keeps its own class. The sampler
also holds out what the test splits measure: some templates, and one lemma of some classes. All of it is
deterministic in the seed; :func:`modalbridge.t2i.sentences.generate` assembles the sentences into splits.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from modalbridge.t2i import inflect
from modalbridge.t2i.templates import (
    ADJECTIVES,
    DETERMINERS,
    GENERIC_ADJ,
    GENERIC_PLACE,
    GENERIC_VERB,
    NEVER_HELD_OUT,
    NUMBERS,
    PLACES,
    PLURAL_SLOTS,
    SLOTS,
    STYLES,
    SUBJECTS,
    TEMPLATES,
    VERBS,
    Template,
)
from modalbridge.t2i.vocabulary import Vocabulary, key


@dataclass
class SentenceConfig:
    """Split fractions, hold-out sizes and source mix of :func:`modalbridge.t2i.sentences.generate`."""

    val: float = 0.05
    test_template: float = 0.05
    test_synonym: float = 0.05
    holdout_templates: float = 0.15  # of single/plural templates
    holdout_synonyms: float = 0.25  # of classes with an eligible extra lemma (one lemma each; at least 3)
    w_template: float = 0.34
    w_synonym: float = 0.30
    w_hypernym: float = 0.12
    w_gloss: float = 0.12
    w_pair: float = 0.12
    p_disamb: float = 0.08  # chance of a hypernym-disambiguated template (0.5 for ambiguous words)
    p_capitalize: float = 0.35
    p_period: float = 0.25
    max_attempts_factor: int = 30


# ---------------------------------------------------------------------------------------------- noun phrases
@dataclass(frozen=True)
class Phrase:
    """Surface forms of one class word, with the classes each form names."""

    lemma: str
    scientific: bool = False

    @property
    def countable(self) -> bool:
        return not (self.scientific or inflect.is_uncountable(self.lemma))

    def a(self, adj: str = "") -> str:
        if self.scientific:
            return self.lemma
        return inflect.with_article(f"{adj} {self.lemma}".strip())

    def the(self, adj: str = "") -> str:
        return self.lemma if self.scientific else f"the {adj} {self.lemma}".replace("  ", " ")

    def plural(self, adj: str = "") -> str:
        return f"{adj} {inflect.plural(self.lemma)}".strip()


def _gloss_clause(gloss: str) -> str:
    gloss = re.sub(r"\([^)]*\)\s*", "", gloss).split(";")[0].strip()
    return gloss.rstrip(".")


def _gloss_np(gloss: str) -> str:
    g = _gloss_clause(gloss)
    return g if g.lower().startswith(DETERMINERS) else f"{inflect.article(g)} {g}"


class SentenceSampler:
    """Renders sentences; all randomness from one ``random.Random(seed)`` and sorted containers only."""

    def __init__(self, vocab: Vocabulary, seed: int, cfg: SentenceConfig):
        self.v, self.cfg, self.rng = vocab, cfg, random.Random(seed)
        self.cat_of_filler: dict[str, set[str]] = {}
        for table in (ADJECTIVES, PLACES, VERBS):
            for cat, words in table.items():
                for w in words:
                    self.cat_of_filler.setdefault(w, set()).add(cat)
        eligible = [t.id for t in TEMPLATES if t.kind in ("single", "plural") and t.id not in NEVER_HELD_OUT]
        k = max(1, round(cfg.holdout_templates * len(eligible))) if cfg.holdout_templates > 0 else 0
        self.held_templates = sorted(random.Random(f"templates/{seed}").sample(eligible, k))
        self.held_lemmas = self._pick_held_lemmas(seed)
        self.held_keys = sorted({key(f) for _, lem in self.held_lemmas.items()
                                 for f in (lem, inflect.plural(lem))})
        self.held_set = set(self.held_keys)
        self.held_len = max((len(k.split()) for k in self.held_keys), default=0)
        self.held_first = {k.split()[0] for k in self.held_keys}
        # Per class: lemmas usable in training, and hypernym words that map to classes.
        self.train_lemmas = [[x for x in c.lemmas if x != self.held_lemmas.get(c.index)] for c in vocab]
        held = set(self.held_templates)
        by_kind = {k: [t for t in TEMPLATES if t.kind == k] for k in ("disamb", "pair", "gloss")}
        body = [t for t in TEMPLATES if t.kind in ("single", "plural")]
        self.pools = {
            **by_kind,
            "train": [t for t in body if t.id not in held],
            "test_template": [t for t in body if t.id in held],
            "train_single": [t for t in body if t.id not in held and t.kind == "single"],
            "test_template_single": [t for t in body if t.id in held and t.kind == "single"],
        }
        self.hypers = [[h for h in c.hypernyms if key(h) in vocab.hypernym_to_classes] for c in vocab]

    def _pick_held_lemmas(self, seed: int) -> dict[int, str]:
        v = self.v
        # Every token run of every other word of the vocabulary -> the words it occurs in.
        runs: dict[str, set[str]] = {}
        for o in sorted({key(x) for c in v for x in [*c.lemmas, *c.hypernyms, c.label]}):
            toks = o.split()
            for i in range(len(toks)):
                for j in range(i + 1, len(toks) + 1):
                    runs.setdefault(" ".join(toks[i:j]), set()).add(o)

        def inside(k: str) -> bool:  # k is a token run inside another word of the vocabulary
            return any(o != k for o in runs.get(k, ()))

        candidates = {}
        for c in v:
            ok = [x for x in c.lemmas[1:] if x not in c.scientific and v.word_to_classes.get(key(x)) == (c.index,)
                  and key(x) != key(c.label) and not inside(key(x)) and not inside(key(inflect.plural(x)))]
            if ok:
                candidates[c.index] = ok
        rng = random.Random(f"synonyms/{seed}")
        chosen = sorted(candidates)
        k = round(self.cfg.holdout_synonyms * len(chosen))
        if self.cfg.holdout_synonyms > 0:
            k = max(k, min(3, len(chosen)))  # small vocabularies (Fashion) still test a few unseen words
        return {i: rng.choice(candidates[i]) for i in sorted(rng.sample(chosen, k))}

    def leaks(self, text_key: str) -> bool:
        """Does a text (given by its ``key``) contain a held-out lemma (any form) as a token run?"""
        if not self.held_set:
            return False
        toks = text_key.split()
        first = self.held_first
        return any(" ".join(toks[i : i + n]) in self.held_set
                   for i in range(len(toks)) if toks[i] in first for n in range(1, self.held_len + 1))

    # -------------------------------------------------------------------------------- targets
    def _candidates(self, surface: str, c: int, cats: set[str] | None, hyper: str | None) -> tuple[int, ...]:
        cands = self.v.word_to_classes.get(key(surface)) or (c,)
        narrowed = cands
        if cats is not None:
            narrowed = tuple(k for k in narrowed if self.v[k].category in cats)
        if hyper is not None:
            narrowed = tuple(k for k in narrowed if hyper in self.v[k].hypernyms)
        return narrowed or cands

    # -------------------------------------------------------------------------------- rendering
    def _fill(self, cat: str, slot: str) -> tuple[str, set[str] | None]:
        """A filler of kind ``slot`` (adj|place|verb) and the categories it narrows to (None: generic)."""
        generic = {"adj": GENERIC_ADJ, "place": GENERIC_PLACE, "verb": GENERIC_VERB}[slot]
        specific = {"adj": ADJECTIVES, "place": PLACES, "verb": VERBS}[slot][cat]
        word = self.rng.choice(generic + specific)
        return word, (None if word in generic else self.cat_of_filler[word])

    def render(self, t: Template, c: int, lemma: str, other: tuple[int, str] | None = None):
        """(text, classes, weights) for template ``t`` filled with class ``c``'s word ``lemma``."""
        rng, v = self.rng, self.v
        cls = v[c]
        ph = Phrase(lemma, lemma in cls.scientific)
        slots = SLOTS[t.id]
        cats: set[str] | None = None
        values: dict[str, str] = {}
        for slot in ("verb", "place", "adj"):  # category fillers, in a fixed order (determinism)
            if slot in slots and not (slot == "adj" and ph.scientific):
                word, narrow = self._fill(cls.category, slot)
                values[slot] = word
                if narrow is not None:
                    cats = narrow if cats is None else cats & narrow
        adj = values.pop("adj", "")
        if slots & {"style", "style_a"}:
            values["style"] = rng.choice(STYLES)
            values["style_a"] = inflect.with_article(values["style"])
        if "subj" in slots:
            values["subj"] = rng.choice(SUBJECTS)
        if "num" in slots:
            values["num"] = rng.choice(NUMBERS)
        forms = {"a": ph.a, "a_adj": lambda: ph.a(adj), "the": ph.the, "the_adj": lambda: ph.the(adj),
                 "pl": ph.plural, "adj_pl": lambda: ph.plural(adj), "bare": lambda: lemma}
        for slot in slots & forms.keys():
            values[slot] = forms[slot]()
        surface = inflect.plural(lemma) if slots & PLURAL_SLOTS else lemma
        if t.kind == "gloss":
            values.update(gloss=_gloss_clause(cls.gloss), gloss_np=_gloss_np(cls.gloss))
            return t.text.format(**values), (c,), (1.0,)
        hyper = None
        if t.kind == "disamb":  # the nearest hypernym that the word's other classes lack, if there is one
            others = [k for k in v.word_to_classes.get(key(surface), ()) if k != c]
            hyper = next((h for h in cls.hypernyms if all(h not in v[k].hypernyms for k in others)), cls.hypernyms[0])
            values["hyper"] = hyper
        shares = [(surface, c, cats, hyper)]
        if other is not None:
            oc, olemma = other
            values["b"] = Phrase(olemma, olemma in v[oc].scientific).a()
            shares = [(surface, c, None, None), (olemma, oc, None, None)]
        weights: dict[int, float] = {}
        for surf, cc, cat_set, hy in shares:
            cands = self._candidates(surf, cc, cat_set, hy)
            for k in cands:
                weights[k] = weights.get(k, 0.0) + 1.0 / len(shares) / len(cands)
        classes = tuple(sorted(weights))
        return t.text.format(**values), classes, tuple(weights[k] for k in classes)

    def surface(self, text: str) -> str:
        if self.rng.random() < self.cfg.p_capitalize:
            text = text[0].upper() + text[1:]
        if self.rng.random() < self.cfg.p_period and text[-1] not in "?!.":
            text += "."
        return text

    # -------------------------------------------------------------------------------- one sentence
    def sample(self, split: str) -> dict | None:
        rng, v, cfg = self.rng, self.v, self.cfg
        if split == "test_synonym":
            if not self.held_lemmas:
                return None
            c = rng.choice(sorted(self.held_lemmas))
            kind, lemma = "synonym", self.held_lemmas[c]
        else:
            c = rng.randrange(len(v))
            kinds = ["template", "synonym", "hypernym", "gloss", "pair"]
            weights = [cfg.w_template, cfg.w_synonym, cfg.w_hypernym, cfg.w_gloss, cfg.w_pair]
            if split == "test_template":
                weights[3] = weights[4] = 0.0
            kind = rng.choices(kinds, weights)[0]
            lemma = v[c].lemmas[0]
            if kind == "gloss" and not v[c].gloss.strip():  # hand-made vocabularies may lack glosses
                kind = "template"
            if kind == "synonym":
                extra = self.train_lemmas[c][1:] if self.train_lemmas[c][:1] == [lemma] else self.train_lemmas[c]
                if not extra:
                    kind = "template"
                else:  # Latin binomials are valid but rare in prompts: a quarter of the weight
                    lemma = rng.choices(extra, [0.25 if x in v[c].scientific else 1.0 for x in extra])[0]
            if kind == "hypernym":
                if not self.hypers[c]:
                    kind = "template"
                else:
                    lemma = rng.choice(self.hypers[c])
        body = "test_template" if split == "test_template" else "train"
        if kind == "gloss":
            t = rng.choice(self.pools["gloss"])
            text, classes, weights = self.render(t, c, lemma)
            return self._row(text, classes, weights, split, "gloss", t.id, lemma if t.names_class else None)
        if kind == "pair":
            t = rng.choice(self.pools["pair"])
            oc = rng.randrange(len(v))
            olemma = rng.choice(self.train_lemmas[oc]) if oc != c else None
            if olemma is None or key(olemma) == key(lemma) or olemma in v[oc].scientific:
                return None
            text, classes, weights = self.render(t, c, lemma, other=(oc, olemma))
            src = "template" if lemma == v[c].lemmas[0] and olemma == v[oc].lemmas[0] else "synonym"
            return self._row(text, classes, weights, split, src, t.id, None)
        if kind == "hypernym":
            ph_classes = v.hypernym_to_classes[key(lemma)]
            pool = self.pools[body if Phrase(lemma).countable else body + "_single"]  # "some furniture"
            if not pool:
                return None
            t = rng.choice(pool)
            text, _, _ = self.render(t, c, lemma)
            w = 1.0 / len(ph_classes)
            return self._row(text, ph_classes, (w,) * len(ph_classes), split, "hypernym", t.id, lemma)
        p_dis = 0.5 if len(v.word_to_classes.get(key(lemma), ())) > 1 else cfg.p_disamb
        if split != "test_template" and v[c].hypernyms and rng.random() < p_dis:
            pool = self.pools["disamb"]
        elif Phrase(lemma, lemma in v[c].scientific).countable:
            pool = self.pools[body]
        else:  # mass nouns and Latin names have no plural
            pool = self.pools[body + "_single"]
        if not pool:  # e.g. every held-out template is a plural one and the word is a mass noun
            return None
        t = rng.choice(pool)
        text, classes, weights = self.render(t, c, lemma)
        return self._row(text, classes, weights, split, kind, t.id, lemma)

    def _row(self, text, classes, weights, split, source, template, lemma) -> dict:
        return {"text": self.surface(" ".join(text.split())), "classes": list(classes), "weights": list(weights),
                "split": split, "source": source, "template": template, "lemma": lemma}
