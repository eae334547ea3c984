"""Fashion scenes: deterministic generation, split separation, caption grammar, class-mention F1."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from modalbridge.captioning import fashion_scenes as fs
from modalbridge.captioning.fashion_scenes import Item, class_mention_f1, class_mentions, make_captions, noun_phrase


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_prefixes_are_stable(tmp_path):
    a = fs.generate(tmp_path / "a", n_train=3, n_val=2, n_test=3, seed=7)
    b = fs.generate(tmp_path / "b", n_train=3, n_val=2, n_test=3, seed=7)
    fa, fb = _files(a), _files(b)
    assert fa == fb
    assert sum(k.endswith(".png") for k in fa) == 8
    # Scene i depends only on (seed, split, i): a shorter split is a byte-identical prefix.
    c = fs.generate(tmp_path / "c", n_train=0, n_val=0, n_test=2, seed=7)
    assert (c / "test/00001.png").read_bytes() == fa["test/00001.png"]
    # Another seed gives other scenes.
    d = fs.generate(tmp_path / "d", n_train=0, n_val=0, n_test=2, seed=8)
    assert (d / "test/00000.png").read_bytes() != fa["test/00000.png"]


def test_captions_jsonl_records_match_the_scenes(tmp_path):
    out = fs.generate(tmp_path, n_train=2, n_val=1, n_test=2)
    recs = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert [r["split"] for r in recs] == ["train", "train", "val", "test", "test"]
    for r in recs:
        assert (out / r["image"]).is_file() and len(r["captions"]) == 5
        scene = fs.make_scene(r["split"], int(r["image"][-9:-4]))
        assert r["captions"] == scene.captions and [Item(**i) for i in r["items"]] == scene.items
    assert fs.read_items(out)["test/00001.png"] == fs.make_scene("test", 1).items


def test_splits_never_share_fashion_mnist_items():
    _, train = fs._pools("train")
    _, val = fs._pools("val")
    train_ids, val_ids = np.concatenate(train), np.concatenate(val)
    assert len(np.intersect1d(train_ids, val_ids)) == 0
    assert len(train_ids) + len(val_ids) == 60000 and len(val_ids) == fs.N_VAL_POOL
    used = {s: {it.source for i in range(150) for it in fs.make_scene(s, i).items} for s in ("train", "val")}
    assert used["train"] <= set(train_ids.tolist()) and used["val"] <= set(val_ids.tolist())
    _, test = fs._pools("test")
    assert len(np.concatenate(test)) == 10000  # test scenes draw from the Fashion-MNIST test set only


def test_render_places_items_in_their_cells():
    scene = fs.Scene("x", "test", 0, [Item(3, "red", "large", 0, 0, 0), Item(8, "blue", "small", 2, 2, 5)], [])
    img = np.asarray(fs.render(scene)).astype(int)
    ink = np.abs(img - np.array(fs.BACKGROUND)).sum(-1) > 60  # (224, 224)
    ys, xs = np.nonzero(ink)
    assert ys.min() >= 16 and xs.min() >= 16 and ys.max() < 208 and xs.max() < 208  # inside the crop-safe margin
    assert ink[:80, :80].any() and ink[144:, 144:].any() and not ink[80:144, 80:144].any()
    red = img[:80, :80][ink[:80, :80]].mean(0)
    assert red[0] > red[2] + 60  # the top-left item is tinted red, not blue


@pytest.mark.parametrize(
    "args, expected",
    [
        ((3, 2, ["red"]), "two red dresses"),
        ((3, 1, ["red"]), "a red dress"),
        ((9, 1, []), "an ankle boot"),
        ((9, 1, ["small", "black"]), "a small black ankle boot"),
        ((1, 1, ["blue"]), "a pair of blue trousers"),
        ((1, 3, []), "three pairs of trousers"),
        ((0, 4, ["", "green"]), "four green t-shirts"),
        ((7, 2, []), "two sneakers"),
    ],
)
def test_noun_phrases_have_correct_articles_and_plurals(args, expected):
    assert noun_phrase(*args) == expected


def test_constructed_scene_captions():
    items = [Item(8, "red", "small", 1, 0, 0), Item(7, "blue", "large", 1, 2, 0)]
    caps = make_captions(items, np.random.default_rng(0))
    assert caps[0] == "a red bag and a blue sneaker"
    # same row: only a horizontal relation is true, in either direction
    assert caps[2] in ("a red bag to the left of a blue sneaker", "a blue sneaker to the right of a red bag")
    seen = {make_captions(items, np.random.default_rng(s))[2] for s in range(20)}
    assert len(seen) == 2
    assert caps[3] == "a red bag on the left and a blue sneaker on the right"
    assert caps[4] == "a small red bag and a large blue sneaker"
    items = [Item(3, "red", "large", 0, 1, 0), Item(3, "red", "large", 2, 1, 0), Item(4, "green", "small", 1, 1, 0)]
    caps = make_captions(items, np.random.default_rng(0))
    assert caps[0] == "two red dresses and a green coat"
    assert caps[1].startswith("three ") and caps[1].endswith(": two red dresses and a green coat")
    assert caps[4] == "two large red dresses and a small green coat"
    mixed = [Item(4, "red", "large", 0, 0, 0), Item(4, "blue", "small", 0, 1, 0)]
    caps = make_captions(mixed, np.random.default_rng(0))
    assert caps[0] == "two coats" and caps[1] == "there are two coats on a plain background"


_REL = re.compile(r"^(an? .+?) (to the left of|to the right of|above|below) (an? [^,]+)")


def test_relations_agree_with_positions_in_generated_scenes():
    checked = 0
    for i in range(300):
        scene = fs.make_scene("train", i)
        if len(scene.items) < 2:
            continue
        m = _REL.match(scene.captions[2])
        assert m, scene.captions[2]
        by_phrase = {}
        for it in scene.items:
            by_phrase.setdefault(noun_phrase(it.label, 1, [it.colour]), []).append(it)
        a_opts, b_opts = by_phrase[m.group(1)], by_phrase[m.group(3)]
        rel = m.group(2)
        ok = {
            "to the left of": lambda a, b: a.col < b.col, "to the right of": lambda a, b: a.col > b.col,
            "above": lambda a, b: a.row < b.row, "below": lambda a, b: a.row > b.row,
        }[rel]
        assert any(ok(a, b) for a in a_opts for b in b_opts if a is not b), (scene.captions[2], scene.items)
        checked += 1
    assert checked > 200


def test_reference_captions_name_exactly_the_classes_present():
    scenes = [fs.make_scene(s, i) for s in ("train", "test") for i in range(200)]
    for k in range(5):
        caps = [s.captions[k] for s in scenes]
        assert class_mention_f1(caps, [s.items for s in scenes])["f1"] == 1.0
    # counts are spelled out with the plural noun: "two dresses", never "two dress"
    for s in scenes:
        labels = [it.label for it in s.items]
        for label in set(labels):
            n = labels.count(label)
            if n > 1:
                plural = "pairs of" if label == 1 else fs.NAMES[label][1]
                assert re.search(rf"\b{fs.NUMBERS[n]} (\w+ )?{plural}\b", s.captions[0]), s.captions[0]


def test_class_mentions_and_f1_on_hand_made_examples():
    assert class_mentions("a red t-shirt and a shirt") == {0, 6}
    assert class_mentions("a t shirt") == {0}
    assert class_mentions("two pairs of trousers above ankle boots") == {1, 9}
    assert class_mentions("a sweater, a pullover and two dresses") == {2, 3}
    assert class_mentions("a blue handbag") == set()  # only whole words count
    truths = [[0], [Item(3, "red", "small", 0, 0, 0), 8]]
    scores = class_mention_f1(["a red t-shirt and a shirt", "two dresses"], truths)
    # image 1: t-shirt right, shirt wrong; image 2: dress right, bag missed -> tp 2, fp 1, fn 1
    assert scores == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    assert class_mention_f1(["a coat"], [[2]])["f1"] == 0.0
    with pytest.raises(ValueError):
        class_mention_f1(["a"], [])
