"""Class vocabularies over WordNet 3.0 (Debian wordnet-base through nltk): ImageNet-1k, Fashion-MNIST, lookups."""

import gzip
import json
import re
from pathlib import Path

import pytest

from modalbridge.errors import UserError
from modalbridge.t2i import inflect, vocabularies, vocabulary, wordnet
from modalbridge.vision.fashion_mnist import CLASSES as FASHION_CLASSES

MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")


@pytest.fixture(scope="module")
def imagenet():
    return vocabularies.imagenet1k()


@pytest.fixture(scope="module")
def fashion():
    return vocabularies.fashion()


def test_lexnames_match_the_man_page():
    assert len(wordnet.LEXNAMES) == 45
    lines = wordnet.lexnames_text().splitlines()
    assert lines[0] == "00\tadj.all\t3" and lines[5] == "05\tnoun.animal\t1" and lines[44] == "44\tadj.ppl\t3"
    if MAN_PAGE.is_file():  # the embedded list is the man page's table
        text = gzip.open(MAN_PAGE, "rt").read()
        table = re.findall(r"^(\d\d)\t(\S+)", text, flags=re.M)
        assert [name for _, name in table] == wordnet.LEXNAMES


def test_corpus_cache_is_plain_files_built_once(tmp_path):
    root = wordnet.ensure_corpus(cache=tmp_path)
    corpus = root / "corpora" / "wordnet"
    assert (corpus / "lexnames").read_text() == wordnet.lexnames_text()
    # nltk's path hardening refuses symlinks out of the corpus root and hardlinks: copies only
    assert all(not p.is_symlink() and p.stat().st_nlink == 1 for p in corpus.iterdir())
    stamp = (corpus / "data.noun").stat().st_mtime_ns
    assert wordnet.ensure_corpus(cache=tmp_path) == root
    assert (corpus / "data.noun").stat().st_mtime_ns == stamp


def test_missing_wordnet_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MODALBRIDGE_WORDNET_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="apt-get install wordnet-base"):
        wordnet.ensure_corpus(cache=tmp_path / "cache")


def test_all_imagenet_wnids_resolve_in_biggan_order(imagenet):
    wnids = vocabularies.IMAGENET_WNIDS.read_text().split()
    assert len(imagenet) == 1000 and imagenet.wnids == wnids
    assert len(set(wnids)) == 1000 and all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    for i, c in enumerate(imagenet):
        assert c.index == i and c.lemmas and c.gloss and c.hypernyms[-1] == "entity"
        assert len(c.hypernyms) == len(c.hypernym_wnids) == len(c.hypernym_lexnames)
        assert all("_" not in x for x in c.lemmas)
    assert (imagenet[0].label, imagenet[1].label, imagenet[207].label) == ("tench", "goldfish", "golden retriever")
    assert imagenet[207].hypernyms[:2] == ["retriever", "sporting dog"]
    assert imagenet[207].category == "animal" and imagenet[817].category == "vehicle"  # sports car
    assert "Tinca tinca" in imagenet[0].scientific and "tench" not in imagenet[0].scientific


def test_multiword_lemmas_and_lookup(imagenet):
    assert imagenet.classes_for("golden retriever") == (207,)
    assert imagenet.classes_for("Golden  Retrievers") == (207,)  # case, spacing, plural
    assert imagenet.classes_for("golden_retriever") == (207,)
    assert "German shepherd dog" in imagenet[235].lemmas and imagenet.classes_for("german shepherd dogs") == (235,)
    assert imagenet.classes_for("Tinca tinca") == (0,)
    assert imagenet.index("n02099601") == 207 and imagenet.index("golden retriever") == 207
    found = imagenet.find("A Golden Retriever and two tabby cats next to a crane, consommé.")
    assert [(m.text, m.classes) for m in found] == [
        ("Golden Retriever", (207,)), ("tabby cats", (281,)), ("crane", (134, 517)), ("consommé", (925,))]
    assert found[0].start == 2 and found[0].end == 18
    assert [m.classes for m in imagenet.find("a catamaran")] == [(484,)]  # whole tokens: no "cat" inside


def test_ambiguity_map(imagenet):
    amb = imagenet.ambiguous
    assert amb["crane"] == (134, 517)
    assert {imagenet[i].lexname for i in amb["crane"]} == {"noun.animal", "noun.artifact"}
    assert amb["maillot"] == (638, 639) and amb["cardigan"] == (264, 474)
    assert "drake" not in amb and imagenet.classes_for("drake") == (97,)
    with pytest.raises(UserError, match="several classes"):
        imagenet.index("crane")


def test_hypernym_map(imagenet):
    dogs = imagenet.classes_for("dog", hypernyms=True)
    assert 207 in dogs and 235 in dogs and len(dogs) >= 100 and 281 not in dogs
    assert imagenet.classes_for("dog") == ()  # not a class lemma
    assert imagenet.classes_for("dogs", hypernyms=True) == dogs
    for word in ("entity", "device", "object", "artifact", "area", "person"):
        assert word not in imagenet.hypernym_to_classes
    assert not set(imagenet.hypernym_to_classes) & set(imagenet.word_to_classes)
    assert all(len(v) <= vocabulary.MAX_HYPERNYM_CLASSES for v in imagenet.hypernym_to_classes.values())
    m = imagenet.find("a dog chasing a golden retriever", hypernyms=True)
    assert [(x.phrase, x.kind) for x in m] == [("dog", "hypernym"), ("golden retriever", "lemma")]


def test_fashion_synonyms(fashion):
    assert fashion.labels == FASHION_CLASSES
    expect = {
        "jumper": "Pullover", "sweater": "Pullover", "pullover": "Pullover", "trainers": "Sneaker",
        "running shoes": "Sneaker", "sneakers": "Sneaker", "handbag": "Bag", "purse": "Bag", "slacks": "Trouser",
        "jeans": "Trouser", "trousers": "Trouser", "frock": "Dress", "gown": "Dress", "dress": "Dress",
        "parka": "Coat", "coat": "Coat", "flip-flops": "Sandal", "sandals": "Sandal", "tee": "T-shirt/top",
        "t-shirt": "T-shirt/top", "T shirts": "T-shirt/top", "shirt": "Shirt", "blouse": "Shirt",
        "ankle boots": "Ankle boot", "boot": "Ankle boot",
    }
    for word, label in expect.items():
        assert [fashion[i].label for i in fashion.classes_for(word)] == [label], word
    assert fashion.ambiguous == {"jersey": (0, 2), "jerseys": (0, 2)}  # T-shirt (WordNet) and British jumper
    assert fashion.classes_for("shoes", hypernyms=True) == (5, 7)  # sandal + sneaker
    assert fashion.classes_for("footwear", hypernyms=True) == (5, 7, 9)
    assert [fashion[i].wnid for i in range(10)][:3] == ["n03595614", "n04489008", "n04021028"]
    hits = fashion.find("a woman in a t-shirt and jeans carrying a purse")
    assert [fashion[m.classes[0]].label for m in hits] == ["T-shirt/top", "Trouser", "Bag"]


def test_json_round_trip_and_bad_files(tmp_path, fashion, imagenet):
    path = fashion.save(tmp_path / "fashion.json")
    back = vocabulary.load(path)
    assert back.to_dict() == fashion.to_dict() and back.word_to_classes == fashion.word_to_classes
    assert vocabularies.resolve(path).labels == fashion.labels
    big = vocabulary.Vocabulary.from_dict(json.loads(imagenet.to_json()))
    assert big.word_to_classes == imagenet.word_to_classes and big.hypernym_to_classes == imagenet.hypernym_to_classes
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "other.json").write_text('{"classes": []}')
    for bad, msg in [(tmp_path / "bad.json", "not valid JSON"), (tmp_path / "other.json", "not a modalbridge"),
                     (tmp_path / "missing.json", "not found")]:
        with pytest.raises(UserError, match=msg):
            vocabulary.load(bad)
    with pytest.raises(UserError, match="did you mean 'fashion'"):
        vocabularies.resolve("fashoin")
    data = fashion.to_dict()
    data["classes"][1]["index"] = 5
    with pytest.raises(UserError, match="index 5, expected 1"):
        vocabulary.Vocabulary.from_dict(data)


def test_from_names_and_wnid_lists(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps(["crane.n.04", "golden retriever", "n01440764"]))
    v = vocabularies.resolve(tmp_path / "mine.json")
    assert v.wnids == ["n03126707", "n02099601", "n01440764"]  # crane.n.04 is the machine
    assert v.labels == ["crane", "golden retriever", "tench"] and v[0].category == "artifact"
    assert v.classes_for("crane") == (0,)  # one crane in this vocabulary: not ambiguous
    (tmp_path / "bad.txt").write_text("golden retriever\nflurbleglorp\n")
    with pytest.raises(UserError, match="'flurbleglorp' is not a WordNet noun"):
        vocabularies.resolve(tmp_path / "bad.txt")
    with pytest.raises(UserError, match="not found in WordNet"):
        vocabularies.from_wnids(["n99999999"])


@pytest.mark.parametrize("word,plural", [
    ("golden retriever", "golden retrievers"), ("man-of-war", "men-of-war"), ("French loaf", "French loaves"),
    ("harvestman", "harvestmen"), ("Doberman", "Dobermans"), ("timber wolf", "timber wolves"), ("box", "boxes"),
    ("monarch", "monarchs"), ("torch", "torches"), ("lorikeet", "lorikeets"), ("lady", "ladies"),
    ("jersey", "jerseys"), ("volcano", "volcanoes"), ("piano", "pianos"), ("goose", "geese"), ("sheep", "sheep"),
    ("cup of coffee", "cups of coffee"), ("T-shirt", "T-shirts"), ("flip-flop", "flip-flops"), ("jeans", "jeans"),
    ("guacamole", "guacamole"), ("Maltese dog", "Maltese dogs"), ("cactus", "cacti"),
])
def test_plural_inflection(word, plural):
    assert inflect.plural(word) == plural


def test_articles():
    cases = {"umbrella": "an umbrella", "unicycle": "a unicycle", "hourglass": "an hourglass", "ox": "an ox",
             "European fire salamander": "a European fire salamander", "CD player": "a CD player",
             "iPod": "an iPod", "jeans": "a pair of jeans", "guacamole": "some guacamole", "one-piece": "a one-piece",
             "furniture": "some furniture", "neckwear": "some neckwear"}
    for word, phrase in cases.items():
        assert inflect.with_article(word) == phrase


def test_vocabulary_is_the_same_in_every_process():
    """nltk orders hypernym paths by string hashes; the vocabulary must not depend on PYTHONHASHSEED."""
    import os
    import subprocess
    import sys

    code = ("import hashlib, json; from modalbridge.t2i import vocabularies as v; "
            "print(hashlib.sha256(json.dumps(v.imagenet1k().to_dict(), sort_keys=True).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(digests) == 1
