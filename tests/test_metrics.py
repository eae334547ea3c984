"""Caption metrics against pycocoevalcap itself (golden), the Unicode path, retrieval metrics."""

from __future__ import annotations

import contextlib
import io
import random
import shutil

import numpy as np
import pytest

from modalbridge.errors import UserError
from modalbridge.metrics import caption as cap
from modalbridge.metrics import cider_d, ptb_tokenize, ranks, recall_at_k, score

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")

# A fixed fixture in COCO style: capitals, punctuation, apostrophes, hyphens, numbers, repeated words.
REFS = {
    "391895": [
        "A man with a red helmet on a small moped on a dirt road.",
        "Man riding a motor bike on a dirt road on the countryside.",
        "A man riding on the back of a motorcycle.",
        "A dirt path with a young person on a motor bike rests to the foreground of a verdant area.",
        "A man in a red shirt and a red hat is on a motorcycle on a hill side.",
    ],
    "522418": [
        "A woman wearing a net on her head cutting a cake.",
        "A woman cutting a large white sheet cake.",
        "A woman wearing a hair net cutting a large sheet cake.",
        "there is a woman that is cutting a white cake",
        "A woman marking a cake with the back of a chef's knife.",
    ],
    "184613": [
        "A child holding a flowered umbrella and petting a yak.",
        "A young man holding an umbrella next to a herd of cattle.",
        "a young boy barefoot holding an umbrella touching the horn of a cow",
        "A young boy with an umbrella who is touching the horn of a cow.",
        "A boy holding an umbrella while standing next to livestock.",
    ],
    "318219": [
        "A young boy standing in front of a computer keyboard.",
        "a little boy wearing headphones and looking at a computer monitor",
        "He is listening intently to the computer at school.",
        "A young boy stares up at the computer monitor.",
        "a young kid with head phones on using a computer ",
    ],
    "554625": [
        "a boy wearing headphones using one computer in a long row of computers",
        "A little boy with earphones on listening to something.",
        "A group of people sitting at desk using computers.",
        "Children sitting at computer stations on a long table.",
        "A small child wearing headphones plays on the computer.",
    ],
    "397133": [
        "A man is in a kitchen making pizzas.",
        "Man in apron standing on front of oven with pans and bakeware",
        "A baker is working in the kitchen rolling dough.",
        "A person standing by a stove in a kitchen.",
        "A table with pies being made and a person standing near a wall with pots and pans hanging on the wall.",
    ],
    "37777": [
        "The dining table near the kitchen has a bowl of fruit on it.",
        "A small kitchen has various appliances and a table.",
        "The kitchen is clean and ready for us to see.",
        "A kitchen and dining area decorated in white.",
        "A kitchen that has a bowl of fruit on the table.",
    ],
    "252219": [
        "A person on a skateboard and bike at a red light.",
        "People on bicycles and a skateboard wait at a red light (3 of them).",
        "a man riding a skateboard down the street next to a bike rider",
        "Two men on bikes stopped at a red traffic light - one on a skate-board.",
        "A group of people on bikes and a skateboard.",
    ],
}
HYPS = {
    "391895": "a man riding a motorcycle on a dirt road",
    "522418": "a woman cutting a cake with a knife.",
    "184613": "A boy holding an umbrella next to a cow",
    "318219": "a young boy using a computer",
    "554625": "a group of children sitting at computers",
    "397133": "a man standing in a kitchen making pizza",
    "37777": "a kitchen with a table and a bowl of fruit",
    "252219": "a man riding a bike down a street",
}


def _pycocoevalcap_direct(refs, hyps):
    """The coco-caption recipe written out with pycocoevalcap's classes only (METEOR: see the slow test)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = PTBTokenizer().tokenize({k: [{"caption": hyps[k]}] for k in refs})
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    out = {f"BLEU-{i + 1}": b for i, b in enumerate(bleu)}
    out["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    return out


# pycocoevalcap 1.2 on the fixture, direct call as in _pycocoevalcap_direct plus Meteor().compute_score(gts, res).
# Frozen, so an upgrade of the toolkit that changes published numbers is caught, and METEOR (a JVM that loads a
# 60 MB paraphrase table, 15-45 s here) starts only once in this file.
FROZEN = {
    "BLEU-1": 0.8564621166816985,
    "BLEU-2": 0.7616681428558011,
    "BLEU-3": 0.6513977066771457,
    "BLEU-4": 0.5079773314781624,
    "METEOR": 0.34285787943226653,
    "ROUGE-L": 0.6604629352201444,
    "CIDEr": 1.610060235830931,
}


@needs_java
def test_golden_equals_pycocoevalcap_direct():
    ours = score(REFS, HYPS, meteor=False)
    ref = _pycocoevalcap_direct(REFS, HYPS)
    assert ours["n_images"] == len(REFS) and ours["METEOR"] is None
    for key in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert ours[key] == ref[key], key  # the same numbers, not just close
        assert ours[key] == pytest.approx(FROZEN[key], rel=1e-12), key
    assert ours["CIDEr"] == score(REFS, HYPS, meteor=False, reference_cider=True)["CIDEr"]


@needs_java
@pytest.mark.slow
def test_golden_meteor():
    ours = score(REFS, HYPS)
    assert ours["METEOR"] == pytest.approx(FROZEN["METEOR"], rel=1e-12)
    assert ours["CIDEr"] == pytest.approx(FROZEN["CIDEr"], rel=1e-12)


@needs_java
def test_ptb_tokenize_matches_pycocoevalcap_and_keeps_line_alignment():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sents = [c for v in REFS.values() for c in v]
    ref = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sents)})
    assert ptb_tokenize(sents) == [ref[i][0] for i in range(len(sents))]
    # Empty captions in the middle and at the end, and line separators the JVM would split on.
    out = ptb_tokenize(["A dog.", "", "a cat\u2028on a mat", "x\r\ny", "", "..."])
    assert out == ["a dog", "", "a cat on a mat", "x y", "", ""]


def test_cider_port_is_bit_identical_to_pycocoevalcap():
    from pycocoevalcap.cider.cider import Cider

    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]

    def sent():
        return " ".join(rng.choice(words[: rng.choice([10, 60, 300])]) for _ in range(rng.randint(0, 12)))

    gts = {f"im{i}": [sent() for _ in range(rng.randint(1, 6))] for i in range(400)}
    res = {k: sent() for k in gts}
    ref_score, ref_scores = Cider().compute_score(gts, {k: [v] for k, v in res.items()})
    ours, per_image = cider_d(gts, res)
    assert ours == ref_score
    assert np.array_equal(per_image, ref_scores)


def test_unicode_path_for_russian_without_meteor():
    refs = {"1": ["Кот сидит на окне.", "Серый кот у окна"], "2": ["Собака бежит по траве!", "Пёс на лугу"]}
    hyps = {"1": "кот сидит на окне", "2": "собака бежит по траве"}
    with pytest.warns(UserWarning, match="METEOR"):
        out = score(refs, hyps, lang="ru")
    assert out["METEOR"] is None
    assert out["BLEU-1"] == pytest.approx(1.0)  # every hypothesis word occurs in a reference
    assert out["BLEU-4"] == pytest.approx(1.0)  # each hypothesis equals one reference exactly
    assert cap.unicode_tokenize(["Пёс — на ЛУГУ, «весело»!"]) == ["пёс на лугу весело"]
    # A wrong caption scores lower than a right one on every metric.
    worse = score(refs, {"1": "собака на траве", "2": "кот на окне"}, lang="ru", meteor=False)
    for key in ("BLEU-1", "ROUGE-L", "CIDEr"):
        assert worse[key] < out[key]


def test_fast_path_skips_meteor_and_unicode_needs_no_java(monkeypatch):
    monkeypatch.setattr(cap.shutil, "which", lambda name: None)
    out = score(REFS, HYPS, meteor=False, tokenizer="unicode")
    assert out["METEOR"] is None and out["CIDEr"] > 0.5
    empty = score({1: ["a dog runs ."], 2: ["a cat"]}, {1: "", 2: "..."}, meteor=False, tokenizer="unicode")
    assert empty["BLEU-1"] == 0.0 and empty["CIDEr"] == 0.0 and empty["n_images"] == 2  # empty captions score 0
    with pytest.raises(UserError, match="apt-get install default-jre-headless"):
        score(REFS, HYPS, meteor=False)  # PTB tokenizer needs java
    with pytest.raises(UserError, match="default-jre-headless"):
        score(REFS, HYPS, tokenizer="unicode")  # METEOR needs java


def test_input_errors_are_user_errors():
    with pytest.raises(UserError, match="no hypothesis"):
        score(REFS, {"391895": "a man"}, meteor=False, tokenizer="unicode")
    with pytest.raises(UserError, match="no references"):
        score({"a": ["x"]}, {"a": "x", "b": "y"}, meteor=False, tokenizer="unicode")
    with pytest.raises(UserError, match="non-empty list"):
        score({"a": []}, {"a": "x"}, meteor=False, tokenizer="unicode")
    with pytest.raises(UserError, match="non-empty list"):
        score({"a": "just a string"}, {"a": "x"}, meteor=False, tokenizer="unicode")
    with pytest.raises(UserError, match="tokenizer"):
        score({"a": ["x"]}, {"a": "x"}, tokenizer="spacy")


def test_retrieval_ranks_and_recall():
    sim = np.eye(4) + 0.01 * np.arange(4)[None, :]  # diagonal best
    r = recall_at_k(sim, ks=(1, 2))
    assert r["R@1"] == 1.0 and r["median_rank"] == 1.0
    # Constant scores: ties count against the query, so nothing is retrieved at rank 1.
    assert ranks(np.zeros((3, 3))).tolist() == [3, 3, 3]
    # Text -> image with several correct columns (e.g. 5 captions per image): the best correct one counts.
    sim2 = np.array([[0.9, 0.1, 0.8], [0.2, 0.3, 0.4]])
    assert ranks(sim2, targets=[[1, 2], [0]]).tolist() == [2, 3]
    with pytest.raises(UserError):
        ranks(sim2)  # not square and no targets
    import torch

    assert ranks(torch.eye(3)).tolist() == [1, 1, 1]
