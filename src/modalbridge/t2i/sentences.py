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
over their classes unless the sentence narrows them (sentence_sampler.py explains).

Splits that measure generalisation (all deterministic in the seed):
  train, val      same templates and words (val: in-distribution check)
  test_template   held-out templates (never rendered in any other split) with training words
  test_synonym    held-out lemmas (one for some classes; never in any other split, checked on the final text)
                  with training templates
:func:`generate` draws sentences one at a time (:mod:`modalbridge.t2i.sentence_sampler`), drops repeats and texts
that leak a held-out lemma, adds mined captions (:mod:`modalbridge.t2i.caption_mining`) and counts them;
:func:`prepare` writes them as a sentence directory, the contract with feature caching / mapper training
(:mod:`modalbridge.t2i.sentence_files`: ``sentences.jsonl``, ``vocabulary.json``, ``meta.json``). The names of
those modules that callers used from here stay importable from here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from modalbridge.errors import UserError
from modalbridge.t2i.caption_mining import mine_caption, mine_corpora, read_captions  # noqa: F401 - re-exported
from modalbridge.t2i.sentence_files import (  # noqa: F401 - the directory's format and I/O stay importable from here
    FIELDS,
    FORMAT,
    META_NAME,
    SENTENCES_NAME,
    SOURCES,
    SPLITS,
    VERSION,
    VOCAB_NAME,
    check_out_dir,
    load_sentences,
    load_vocabulary,
    sentences_hash,
    write_sentences,
)
from modalbridge.t2i.sentence_sampler import Phrase, SentenceConfig, SentenceSampler  # noqa: F401 - re-exported
from modalbridge.t2i.templates import TEMPLATES
from modalbridge.t2i.vocabulary import Vocabulary, key


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
    mined, mined_stats = mine_corpora(vocab, list(zip(files, parsed, strict=True)), seen, g.leaks, seed, cfg.val)
    rows += mined
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


# ---------------------------------------------------------------------------------------------- prepare
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
    anything else in it (a feature cache) is kept (:func:`write_sentences`). Returns the meta.
    """
    check_out_dir(out)  # fail before any sentence is made
    rows, meta = generate(vocab, n=n, seed=seed, captions=captions, config=config)
    return write_sentences(out, vocab, rows, meta)
