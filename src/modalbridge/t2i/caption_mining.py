"""Training sentences mined from COCO-format caption corpora (``annotations/captions_*.json``).

A caption naming exactly one class word targets that word's class(es); one naming several gets equal shares, each
spread over the classes its word names; one naming none is skipped, and so is one whose text was already made. A
caption containing a held-out lemma goes to ``test_synonym``; the others go to ``val`` or ``train`` by image
(deterministic in the seed), so that no image's captions straddle the two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from modalbridge.errors import UserError, read_json
from modalbridge.t2i.vocabulary import Vocabulary, key


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


def mine_corpora(
    vocab: Vocabulary,
    corpora: Sequence[tuple[Path, list[tuple[str, str]]]],
    seen: set[str],
    held_out: Callable[[str], bool],
    seed: int,
    val: float,
) -> tuple[list[dict], list[dict]]:
    """Sentence rows of the captions that name class words, and per-file counts ``{"file", "captions", "mined"}``.

    Args:
        vocab: the class vocabulary.
        corpora: ``(file, read_captions(file))`` per captions file, mined in this order.
        seen: ``key`` of every text made so far; captions already in it are skipped, kept ones are added.
        held_out: does a text (given by its ``key``) contain a held-out lemma? Such captions go to test_synonym.
        seed: the val/train split by image is deterministic in it.
        val: fraction of images whose captions go to val.
    """
    rows: list[dict] = []
    stats = []
    for f, pairs in corpora:
        kept = 0
        for image_id, caption in pairs:
            k = key(caption)
            target = mine_caption(vocab, caption) if k and k not in seen else None
            if target is None:
                continue
            if held_out(k):
                split = "test_synonym"
            else:
                split = "val" if _unit(seed, f.name, image_id) < val else "train"  # by image: no leak
            seen.add(k)
            kept += 1
            rows.append({"text": caption, "classes": target["classes"], "weights": target["weights"],
                         "split": split, "source": "mined", "template": None, "lemma": target["lemma"]})
        stats.append({"file": str(f), "captions": len(pairs), "mined": kept})
    return rows, stats
