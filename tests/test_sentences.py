"""Training sentences for the text -> class mapper: templates, held-out splits, mining, files, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modalbridge.cli import app
from modalbridge.errors import UserError
from modalbridge.t2i import inflect, sentences, templates, vocabularies, vocabulary
from modalbridge.t2i.sentences import SentenceConfig, generate
from modalbridge.t2i.templates import TEMPLATES
from modalbridge.t2i.vocabulary import key

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def imagenet():
    return vocabularies.imagenet1k()


@pytest.fixture(scope="module")
def fashion_json(tmp_path_factory):
    """The Fashion vocabulary as a saved JSON: sentence generation from it needs no WordNet."""
    return vocabularies.fashion().save(tmp_path_factory.mktemp("vocab") / "fashion.json")


@pytest.fixture(scope="module")
def imagenet_rows(imagenet):
    return generate(imagenet, n=6000, seed=3)


def _contains(text: str, phrase: str) -> bool:
    return f" {key(phrase)} " in f" {key(text)} "


def test_templates_cover_the_grammar():
    body = [t for t in TEMPLATES if t.kind in ("single", "plural", "pair", "disamb")]
    assert len(body) >= 30
    kinds = {t.kind for t in TEMPLATES}
    assert kinds == {"single", "plural", "disamb", "pair", "gloss"}
    assert [t.id for t in TEMPLATES] == list(range(len(TEMPLATES)))
    # fillers never name a class themselves (a stray class word would corrupt the target)
    fashion = vocabularies.fashion()
    fillers = [*templates.SUBJECTS, *templates.STYLES, *templates.GENERIC_ADJ, *templates.GENERIC_PLACE,
               *templates.GENERIC_VERB, *(w for table in (templates.ADJECTIVES, templates.PLACES, templates.VERBS)
                                          for words in table.values() for w in words)]
    for v in (vocabularies.imagenet1k(), fashion):
        assert [f for f in fillers if v.find(f)] == []


def test_rows_follow_the_contract(imagenet, imagenet_rows):
    rows, meta = imagenet_rows
    assert len(rows) == meta["n_generated"] == 6000
    assert len({key(r["text"]) for r in rows}) == len(rows)  # no duplicates, even up to case/punctuation
    for r in rows:
        assert list(r) == list(sentences.FIELDS)
        assert r["split"] in sentences.SPLITS and r["source"] in sentences.SOURCES
        assert r["classes"] == sorted(set(r["classes"])) and all(0 <= c < 1000 for c in r["classes"])
        assert abs(sum(r["weights"]) - 1) < 1e-9 and all(w > 0 for w in r["weights"])
        if r["lemma"] is not None and r["source"] != "gloss":
            assert _contains(r["text"], r["lemma"]) or _contains(r["text"], inflect.plural(r["lemma"]))
    counts = meta["counts"]
    assert sum(counts["split"].values()) == len(rows) and all(counts["split"][s] > 0 for s in sentences.SPLITS)
    assert all(counts["source"][s] > 0 for s in ("template", "synonym", "hypernym", "gloss"))
    assert 0 < counts["mixtures"] < len(rows)


def test_held_out_templates_and_synonyms_never_reach_train(imagenet_rows):
    rows, meta = imagenet_rows
    held_t = set(meta["templates"]["held_out"])
    assert held_t and not held_t & set(templates.NEVER_HELD_OUT)
    held_l = [h["lemma"] for h in meta["held_out_lemmas"]]
    assert len(held_l) >= 50
    forms = {key(f) for lem in held_l for f in (lem, inflect.plural(lem))}
    for r in rows:
        if r["split"] == "test_template":
            assert r["template"] in held_t
        elif r["source"] != "gloss":
            assert r["template"] not in held_t
        toks = key(r["text"]).split()
        spans = {" ".join(toks[i:j]) for i in range(len(toks)) for j in range(i + 1, min(len(toks), i + 8) + 1)}
        if r["split"] == "test_synonym":
            assert r["lemma"] in held_l and spans & forms
        else:
            assert not spans & forms, r["text"]  # never seen outside test_synonym
    train_lemmas = {r["lemma"] for r in rows if r["split"] == "train"}
    assert not train_lemmas & set(held_l)


def test_plural_templates_inflect(imagenet_rows):
    rows, _ = imagenet_rows
    plural_ids = {t.id for t in TEMPLATES if t.kind == "plural"}
    plural_rows = [r for r in rows if r["template"] in plural_ids and r["source"] in ("template", "synonym")]
    assert len(plural_rows) > 100
    for r in plural_rows:
        assert _contains(r["text"], inflect.plural(r["lemma"])), r
        assert not inflect.is_uncountable(r["lemma"])  # mass nouns get no plural template
    wolves = generate(vocabularies.from_wnids(["n02114367", "n02119789"]), n=300, seed=0)[0]  # timber wolf, kit fox
    texts = " ".join(r["text"] for r in wolves if r["template"] in plural_ids)
    assert "wolves" in texts and "wolfs" not in texts and "foxes" in texts


def test_ambiguous_words_get_mixtures_unless_narrowed(imagenet):
    g = sentences.SentenceSampler(imagenet, 0, SentenceConfig())
    text, classes, weights = g.render(TEMPLATES[0], 134, "crane")
    assert text == "a crane" and classes == (134, 517) and weights == (0.5, 0.5)
    disamb = next(t for t in TEMPLATES if t.kind == "disamb")
    text, classes, weights = g.render(disamb, 134, "crane")
    assert "wading bird" in text and classes == (134,) and weights == (1.0,)
    assert g._candidates("crane", 134, {"animal"}, None) == (134,)  # "in the wild" keeps the bird
    assert g._candidates("crane", 517, {"vehicle", "structure"}, None) == (134, 517)  # no fit: both stay
    gloss = next(t for t in TEMPLATES if t.kind == "gloss")
    assert g.render(gloss, 517, "crane")[1:] == ((517,), (1.0,))
    # "missile" (657, under rocket) vs "projectile, missile" (744, under weapon): "a kind of rocket" narrows to 657
    assert g.render(disamb, 657, "missile")[1:] == ((657,), (1.0,))
    # the hypernym named is the nearest one the word's other classes lack
    bat = vocabulary.Vocabulary([
        vocabulary.VocabClass(0, None, "bat", ["bat"], ["thing", "mammal"], ["x1", "x2"], category="animal"),
        vocabulary.VocabClass(1, None, "club", ["club", "bat"], ["thing", "tool"], ["x1", "x3"]),
    ])
    gb = sentences.SentenceSampler(bat, 0, SentenceConfig())
    assert gb.render(disamb, 0, "bat")[:2] == ("a bat, a kind of mammal", (0,))
    assert gb.render(disamb, 1, "bat")[:2] == ("a bat, a kind of tool", (1,))
    assert gb.render(TEMPLATES[0], 1, "bat")[1:] == ((0, 1), (0.5, 0.5))
    pair = next(t for t in TEMPLATES if t.kind == "pair")
    text, classes, weights = g.render(pair, 207, "golden retriever", other=(134, "crane"))
    assert classes == (134, 207, 517) and weights == (0.25, 0.5, 0.25)


def test_hypernym_sentences_target_all_classes_below(imagenet, imagenet_rows):
    rows, _ = imagenet_rows
    hyper = [r for r in rows if r["source"] == "hypernym"]
    assert hyper
    for r in hyper[:200]:
        assert tuple(r["classes"]) == imagenet.hypernym_to_classes[key(r["lemma"])]
        assert all(r["lemma"] in imagenet[c].hypernyms for c in r["classes"])


def test_determinism(fashion_json, tmp_path):
    vocab = vocabulary.load(fashion_json)
    a = sentences.prepare(vocab, tmp_path / "a", n=800, seed=7)
    b = sentences.prepare(vocab, tmp_path / "b", n=800, seed=7)
    c = sentences.prepare(vocab, tmp_path / "c", n=800, seed=8)
    for name in ("sentences.jsonl", "vocabulary.json", "meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/sentences.jsonl").read_bytes() != (tmp_path / "c/sentences.jsonl").read_bytes()
    assert a["hash"] == b["hash"] == sentences.sentences_hash(tmp_path / "a") != c["hash"]
    rows = sentences.load_sentences(tmp_path / "a")
    assert len(rows) == 800 and rows[0] == json.loads((tmp_path / "a/sentences.jsonl").read_text().splitlines()[0])
    assert len(sentences.load_sentences(tmp_path / "a", split="val")) == a["counts"]["split"]["val"]
    assert sentences.load_vocabulary(tmp_path / "a").labels == vocab.labels


def test_same_file_across_processes_and_hash_seeds(fashion_json, tmp_path):
    outs = []
    for hs in ("1", "2"):
        out = tmp_path / f"p{hs}"
        env = {**os.environ, "PYTHONHASHSEED": hs}
        proc = subprocess.run([sys.executable, "-m", "modalbridge", "prepare", "--vocab", str(fashion_json),
                               "--n", "400", "--seed", "3", "--out", str(out)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs.append((out / "sentences.jsonl").read_bytes())
    assert outs[0] == outs[1]


COCO = {
    "images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(1, 6)],
    "annotations": [
        {"id": 1, "image_id": 1, "caption": "A golden retriever lying on the grass."},
        {"id": 2, "image_id": 2, "caption": "a golden retriever and a tabby cat on a sofa"},
        {"id": 3, "image_id": 3, "caption": "a man walking down the street with his friend"},
        {"id": 4, "image_id": 4, "caption": "a crane standing by the lake"},
        {"id": 5, "image_id": 5, "caption": "two golden retrievers chasing another golden retriever"},
        {"id": 6, "image_id": 1, "caption": "a golden retriever lying on the grass"},  # duplicate text
    ],
}


def test_mining_coco_captions(imagenet, tmp_path):
    path = tmp_path / "annotations" / "captions_val2017.json"
    path.parent.mkdir()
    path.write_text(json.dumps(COCO))
    rows, meta = generate(imagenet, n=0, seed=0, captions=[path])
    mined = {r["text"]: r for r in rows}
    assert len(rows) == 4 and all(r["source"] == "mined" and r["template"] is None for r in rows)
    one = mined["A golden retriever lying on the grass."]
    assert (one["classes"], one["weights"], one["lemma"]) == ([207], [1.0], "golden retriever")
    two = mined["a golden retriever and a tabby cat on a sofa"]
    assert (two["classes"], two["weights"], two["lemma"]) == ([207, 281], [0.5, 0.5], None)
    assert mined["a crane standing by the lake"]["classes"] == [134, 517]  # ambiguous word: its mixture
    assert mined["two golden retrievers chasing another golden retriever"]["classes"] == [207]
    assert "a man walking down the street with his friend" not in mined  # no class word: skipped
    assert meta["captions"] == [{"file": str(path), "captions": 6, "mined": 4}]
    assert {r["split"] for r in rows} <= {"train", "val", "test_synonym"}


def test_mined_captions_with_held_out_words_go_to_test_synonym(imagenet, tmp_path):
    _, meta = generate(imagenet, n=1, seed=3)
    held = meta["held_out_lemmas"][0]
    path = tmp_path / "captions_train.json"
    path.write_text(json.dumps({"annotations": [{"image_id": 9, "caption": f"a photo of a {held['lemma']}"}]}))
    rows, _ = generate(imagenet, n=0, seed=3, captions=[path])
    assert [(r["split"], r["classes"]) for r in rows] == [("test_synonym", [held["class"]])]


def test_bad_inputs(imagenet, tmp_path):
    (tmp_path / "bad.json").write_text('{"annotations": [{"caption": 3}]}')
    with pytest.raises(UserError, match="not a COCO captions file"):
        generate(imagenet, n=10, captions=[tmp_path / "bad.json"])
    with pytest.raises(UserError, match="split fractions"):
        generate(imagenet, n=10, config=SentenceConfig(val=0.6, test_template=0.5))
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "precious.txt").write_text("x")
    with pytest.raises(UserError, match="not a sentences directory"):
        sentences.prepare(imagenet, tmp_path / "occupied", n=10)
    with pytest.raises(UserError, match="sentences.jsonl missing"):
        sentences.load_sentences(tmp_path)


def test_rerun_keeps_feature_cache(fashion_json, tmp_path):
    vocab = vocabulary.load(fashion_json)
    out = tmp_path / "data"
    sentences.prepare(vocab, out, n=100, seed=0)
    (out / "features").mkdir()
    (out / "features" / "shard.safetensors").write_text("cache")
    meta = sentences.prepare(vocab, out, n=120, seed=0)
    assert (out / "features" / "shard.safetensors").is_file()
    assert len(sentences.load_sentences(out)) == 120 and sentences.sentences_hash(out) == meta["hash"]


def test_cli_prepare(fashion_json, tmp_path):
    cap = tmp_path / "captions.json"
    cap.write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "a woman wearing a red dress"}]}))
    res = runner.invoke(app, ["prepare", "--vocab", str(fashion_json), "--n", "300", "--seed", "1",
                              "--captions", str(cap), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "301 sentences over 10 classes" in res.stdout
    rows = sentences.load_sentences(tmp_path / "out")
    assert rows[-1]["source"] == "mined" and rows[-1]["classes"] == [3]  # Dress
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["seed"] == 1 and meta["counts"]["source"]["mined"] == 1

    cases = [
        (["--vocab", "fashoin", "--out", str(tmp_path / "x")], "did you mean 'fashion'"),
        (["--vocab", "fashion", "--n", "0", "--out", str(tmp_path / "x")], "--n must be at least 1"),
        (["--vocab", "fashion", "--captions", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x")],
         "captions file not found"),
        (["--vocab", str(fashion_json), "--out", str(cap)], "not a sentences directory"),
    ]
    for args, msg in cases:
        res = runner.invoke(app, ["prepare", *args])
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], args
    assert not (tmp_path / "x").exists()
