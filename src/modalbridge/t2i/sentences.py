"""Training sentences for the text -> class mapper: templates, synonyms, hypernyms, glosses and mined captions.

Every sentence has a *target*: classes with weights summing to 1 (one class, or a mixture). Sources:
  template  a template filled with the class's main word (``lemmas[0]``): "a photo of a golden retriever"
  synonym   the same with another WordNet lemma (synonym substitution): "two tabbies on the grass"
  hypernym  a WordNet ancestor word; target = uniform mixture over the vocabulary classes under it: "a dog"
  gloss     WordNet's definition, with or without the class word: "a crane is a large long-necked wading bird"
  mined     COCO-format captions (``annotations/captions_*.json``) naming exactly one class word (-> that class)
            or several (-> equal shares, each spread over the classes its word names); captions naming none are
            skipped.
Two-class templates ("a dog and a cat") give 0.5/0.5 mixtures. Ambiguous words ("crane") give a uniform mixture
over their classes unless the sentence narrows them (vocabulary.py explains): a category-specific filler
("in the wild", "lifting") keeps the classes of that category; a hypernym ("a kind of wading bird") keeps the
classes under it; a gloss keeps its own class.

Splits that measure generalisation (all deterministic in the seed):
  train, val      same templates and words (val: in-distribution check)
  test_template   held-out templates (never rendered in any other split) with training words
  test_synonym    held-out lemmas (one for some classes; never in any other split, checked on the final text)
                  with training templates
Output directory (the contract with feature caching / mapper training): ``sentences.jsonl`` (one object per line:
text, classes, weights, split, source, template, lemma), ``vocabulary.json``, ``meta.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from modalbridge.errors import UserError, read_json
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

FORMAT = "modalbridge.sentences"
VERSION = 1
SPLITS = ("train", "val", "test_template", "test_synonym")
SOURCES = ("template", "synonym", "hypernym", "gloss", "mined")
FIELDS = ("text", "classes", "weights", "split", "source", "template", "lemma")

@dataclass
class SentenceConfig:
    """Split fractions, hold-out sizes and source mix of :func:`generate`."""

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


# ---------------------------------------------------------------------------------------------- mining
def read_captions(path: str | Path) -> list[tuple[str, str]]:
    """``(image_id, caption)`` pairs of a COCO-format captions file (``annotations/captions_*.json``)."""
    data = read_json(path, "captions file")
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list) or not all(isinstance(a, dict) and isinstance(a.get("caption"), str)
                                              and "image_id" in a for a in anns):
        raise UserError(f"{path} is not a COCO captions file (expected 'annotations': [{{'image_id', 'caption'}}])")
    return [(str(a["image_id"]), " ".join(a["caption"].split())) for a in anns]


def mine_caption(vocab: Vocabulary, caption: str, hypernyms: bool = False) -> dict | None:
    """Target of a caption: one class word -> its class(es); several -> equal shares; none -> None.

    Each distinct word gets ``1 / n_words``, spread uniformly over the classes it names (an ambiguous word
    spreads its share). Returns ``{"classes", "weights", "lemma"}`` (lemma: the class word when only one).
    """
    matches = vocab.find(caption, hypernyms=hypernyms)
    words: dict[str, tuple[int, ...]] = {}
    for m in matches:
        words.setdefault(m.phrase, m.classes)
    groups = sorted(set(words.values()))
    if not groups:
        return None
    weights: dict[int, float] = {}
    for g in groups:
        for k in g:
            weights[k] = weights.get(k, 0.0) + 1.0 / len(groups) / len(g)
    classes = sorted(weights)
    lemma = next(iter(words)) if len(words) == 1 else None
    return {"classes": classes, "weights": [weights[k] for k in classes], "lemma": lemma}


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from ``parts`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# ---------------------------------------------------------------------------------------------- generate
def generate(
    vocab: Vocabulary,
    n: int = 50_000,
    seed: int = 0,
    captions: Sequence[str | Path] = (),
    config: SentenceConfig | None = None,
) -> tuple[list[dict], dict]:
    """Sentences (rows of the ``sentences.jsonl`` contract) and their meta data.

    Args:
        vocab: the class vocabulary.
        n: number of generated sentences (template/synonym/hypernym/gloss); mined captions come on top.
            Fewer when the vocabulary cannot give ``n`` distinct sentences (``meta["n_generated"]`` says).
        seed: everything is deterministic in it.
        captions: COCO-format caption files to mine.
        config: split fractions and source mix.
    """
    cfg = config or SentenceConfig()
    if not isinstance(n, int) or n < 0:
        raise UserError(f"--n must be a non-negative integer, got {n}")
    if min(cfg.val, cfg.test_template, cfg.test_synonym) < 0 or cfg.val + cfg.test_template + cfg.test_synonym >= 1:
        raise UserError("split fractions must be >= 0 and leave room for train")
    files = [Path(f) for f in captions]
    parsed = [read_captions(f) for f in files]  # fail on bad input before any work
    g = SentenceSampler(vocab, seed, cfg)
    rows: list[dict] = []
    seen: set[str] = set()
    bounds = [(cfg.val, "val"), (cfg.test_template, "test_template"), (cfg.test_synonym, "test_synonym")]
    attempts, leaked = 0, 0
    while len(rows) < n and attempts < max(100, n * cfg.max_attempts_factor):
        attempts += 1
        r, acc, split = g.rng.random(), 0.0, "train"
        for frac, name in bounds:
            acc += frac
            if r < acc:
                split = name
                break
        if (split == "test_template" and not g.held_templates) or (split == "test_synonym" and not g.held_lemmas):
            split = "train"
        row = g.sample(split)
        if row is None:
            continue
        k = key(row["text"])
        if k in seen:
            continue
        if split != "test_synonym" and g.leaks(k):
            leaked += 1
            continue
        seen.add(k)
        rows.append(row)
    n_generated = len(rows)
    mined_stats = []
    for f, pairs in zip(files, parsed, strict=True):
        kept = 0
        for image_id, caption in pairs:
            k = key(caption)
            target = mine_caption(vocab, caption) if k and k not in seen else None
            if target is None:
                continue
            if g.leaks(k):
                split = "test_synonym"
            else:
                split = "val" if _unit(seed, f.name, image_id) < cfg.val else "train"  # by image: no leak
            seen.add(k)
            kept += 1
            rows.append({"text": caption, "classes": target["classes"], "weights": target["weights"],
                         "split": split, "source": "mined", "template": None, "lemma": target["lemma"]})
        mined_stats.append({"file": str(f), "captions": len(pairs), "mined": kept})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "seed": seed,
        "vocab": vocab.name,
        "n_classes": len(vocab),
        "n_requested": n,
        "n_generated": n_generated,
        "n_total": len(rows),
        "counts": _counts(rows),
        "templates": {"count": sum(t.kind != "gloss" for t in TEMPLATES), "gloss": sum(t.kind == "gloss" for t in
                      TEMPLATES), "held_out": g.held_templates,
                      "texts": {str(t.id): f"{t.kind}: {t.text}" for t in TEMPLATES}},
        "held_out_lemmas": [{"class": i, "label": vocab[i].label, "lemma": lem} for i, lem in g.held_lemmas.items()],
        "dropped_for_held_out_lemma": leaked,
        "captions": mined_stats,
        "config": asdict(cfg),
    }
    return rows, meta


def _counts(rows: list[dict]) -> dict:
    split = Counter(r["split"] for r in rows)
    source = Counter(r["source"] for r in rows)
    both = Counter((r["split"], r["source"]) for r in rows)
    return {
        "split": {s: split.get(s, 0) for s in SPLITS},
        "source": {s: source.get(s, 0) for s in SOURCES},
        "split_source": {s: {o: both.get((s, o), 0) for o in SOURCES} for s in SPLITS},
        "mixtures": sum(len(r["classes"]) > 1 for r in rows),
    }


# ---------------------------------------------------------------------------------------------- files
SENTENCES_NAME, VOCAB_NAME, META_NAME = "sentences.jsonl", "vocabulary.json", "meta.json"


def _content_hash(sentences: bytes, vocab: bytes) -> str:
    h = hashlib.sha256()
    for part in (sentences, vocab):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def check_out_dir(out: str | Path) -> Path:
    """``out`` if :func:`prepare` may write there: new, empty, or a previous output (has meta.json)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META_NAME).is_file())):
        raise UserError(f"{out} exists and is not a sentences directory; give a new --out")
    return out


def prepare(
    vocab: Vocabulary,
    out: str | Path,
    n: int = 50_000,
    seed: int = 0,
    captions: Sequence[str | Path] = (),
    config: SentenceConfig | None = None,
) -> dict:
    """Generate sentences and write ``out/`` (sentences.jsonl, vocabulary.json, meta.json) atomically.

    An existing ``out`` must be a previous output (has meta.json) or empty; its three files are replaced and
    anything else in it (a feature cache) is kept. Returns the meta.
    """
    out = check_out_dir(out)
    rows, meta = generate(vocab, n=n, seed=seed, captions=captions, config=config)
    sent_bytes = "".join(json.dumps({f: r[f] for f in FIELDS}, ensure_ascii=False) + "\n" for r in rows).encode()
    vocab_bytes = vocab.to_json().encode()
    meta["hash"] = _content_hash(sent_bytes, vocab_bytes)
    meta_bytes = (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode()
    files = ((SENTENCES_NAME, sent_bytes), (VOCAB_NAME, vocab_bytes), (META_NAME, meta_bytes))
    if out.is_dir():
        # A previous output: swap the three files one by one (meta.json last) and keep anything else there,
        # such as the feature cache that ``extract`` puts under <out>/features (keyed by the content hash).
        from modalbridge.files import atomic_write_bytes

        for name, data in files:
            atomic_write_bytes(out / name, data)
        return meta
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is an ordinary directory
        for name, data in files:
            (tmp / name).write_bytes(data)
        os.replace(tmp, out)  # a new directory appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _require(directory: str | Path, name: str) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        raise UserError(f"{directory} is not a sentences directory ({name} missing; run 'modalbridge prepare')")
    return path


def load_sentences(directory: str | Path, split: str | None = None) -> list[dict]:
    """Rows of ``directory/sentences.jsonl`` (optionally one split), checked against the contract."""
    if split is not None and split not in SPLITS:
        raise UserError(f"unknown split '{split}'; splits: {', '.join(SPLITS)}")
    path = _require(directory, SENTENCES_NAME)
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{lineno} is not valid JSON") from None
            if not isinstance(row, dict) or set(row) != set(FIELDS) or len(row["classes"]) != len(row["weights"]):
                raise UserError(f"{path}:{lineno} does not have the fields {', '.join(FIELDS)}")
            if split is None or row["split"] == split:
                rows.append(row)
    return rows


def load_vocabulary(directory: str | Path) -> Vocabulary:
    """The vocabulary saved next to the sentences."""
    from modalbridge.t2i.vocabulary import load

    return load(_require(directory, VOCAB_NAME))


def sentences_hash(directory: str | Path) -> str:
    """Content hash of a sentences directory (sentences.jsonl + vocabulary.json), as stored in meta.json."""
    return _content_hash(_require(directory, SENTENCES_NAME).read_bytes(), _require(directory, VOCAB_NAME).read_bytes())
