"""Caption dataset loaders on fixtures in the exact published formats, built in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from modalbridge.captioning import openclipart
from modalbridge.captioning.datasets import load, parse_spec
from modalbridge.captioning.records import DataWarning
from modalbridge.errors import UserError


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), (200, 10, 10)).save(path)
    return path


def test_coco_captions_json(tmp_path):
    ann = tmp_path / "annotations" / "captions_val2017.json"
    ann.parent.mkdir()
    data = {
        "info": {"description": "COCO 2017 Dataset"},
        "licenses": [],
        "images": [
            {"license": 4, "file_name": "000000397133.jpg", "coco_url": "", "height": 427, "width": 640, "id": 397133},
            {"license": 1, "file_name": "000000037777.jpg", "coco_url": "", "height": 230, "width": 352, "id": 37777},
            {"license": 1, "file_name": "000000252219.jpg", "coco_url": "", "height": 428, "width": 640, "id": 252219},
        ],
        "annotations": [
            {"image_id": 397133, "id": 370509, "caption": "A man is in a kitchen making pizzas."},
            {"image_id": 37777, "id": 1, "caption": "The dining table near the kitchen has a bowl of fruit on it."},
            {"image_id": 397133, "id": 375891, "caption": "Man in apron standing on front of oven with pans "},
            {"image_id": 999, "id": 5, "caption": "orphan caption"},
        ],
    }
    ann.write_text(json.dumps(data))
    for name in ("000000397133.jpg", "000000037777.jpg"):  # 252219 is missing
        _img(tmp_path / "val2017" / name)
    with pytest.warns(DataWarning) as w:
        recs = load(f"coco:{ann}")
    messages = " | ".join(str(x.message) for x in w)
    assert "1 captions refer to image ids" in messages
    assert "1 of 3 image files are missing" in messages and "000000252219.jpg" in messages
    assert [r.image_id for r in recs] == ["397133", "37777"]
    assert recs[0].captions == [
        "A man is in a kitchen making pizzas.",
        "Man in apron standing on front of oven with pans",
    ]
    assert recs[0].split == "val" and recs[0].path == (tmp_path / "val2017" / "000000397133.jpg").resolve()
    with pytest.raises(UserError, match="refer to image ids"):
        load(f"coco:{ann}:{tmp_path / 'val2017'}", strict=True)


def test_karpathy_coco_and_flickr8k(tmp_path):
    coco = {
        "images": [
            {
                "filepath": "val2014",
                "sentids": [770337, 771687],
                "filename": "COCO_val2014_000000391895.jpg",
                "imgid": 0,
                "split": "test",
                "sentences": [
                    {
                        "tokens": ["a", "man", "with", "a", "red", "helmet"],
                        "raw": "A man with a red helmet.",
                        "imgid": 0,
                        "sentid": 770337,
                    },
                    {
                        "tokens": ["man", "riding", "a", "motor", "bike"],
                        "raw": "Man riding a motor bike.",
                        "imgid": 0,
                        "sentid": 771687,
                    },
                ],
                "cocoid": 391895,
            },
            {
                "filepath": "val2014",
                "filename": "COCO_val2014_000000522418.jpg",
                "imgid": 1,
                "split": "restval",
                "sentences": [{"tokens": ["a", "woman", "cutting", "a", "cake"], "imgid": 1, "sentid": 2}],
                "cocoid": 522418,
            },
        ],
        "dataset": "coco",
    }
    (tmp_path / "dataset_coco.json").write_text(json.dumps(coco))
    for im in coco["images"]:
        _img(tmp_path / im["filepath"] / im["filename"])
    recs = load(f"coco-karpathy:{tmp_path / 'dataset_coco.json'}")
    assert [(r.image_id, r.split) for r in recs] == [("391895", "test"), ("522418", "train")]  # restval -> train
    assert recs[0].captions == ["A man with a red helmet.", "Man riding a motor bike."]
    assert recs[1].captions == ["a woman cutting a cake"]  # no "raw": tokens joined
    assert recs[0].meta["tokens"][1] == ["man", "riding", "a", "motor", "bike"]
    assert recs[0].path == tmp_path / "val2014" / "COCO_val2014_000000391895.jpg"

    flickr = {
        "images": [
            {
                "sentids": [0],
                "imgid": 0,
                "split": "train",
                "filename": "2513260012_03d33305cf.jpg",
                "sentences": [{"tokens": ["a", "black", "dog"], "raw": "A black dog is running .", "imgid": 0}],
            },
            {
                "sentids": [1],
                "imgid": 1,
                "split": "val",
                "filename": "2903617548_d3e38d7f88.jpg",
                "sentences": [{"tokens": ["a", "little", "baby"], "raw": "A little baby plays croquet .", "imgid": 1}],
            },
        ],
        "dataset": "flickr8k",
    }
    (tmp_path / "f8k").mkdir()
    (tmp_path / "f8k" / "dataset_flickr8k.json").write_text(json.dumps(flickr))
    imgs = tmp_path / "Flicker8k_Dataset"
    _img(imgs / "2513260012_03d33305cf.jpg")
    _img(imgs / "2903617548_d3e38d7f88.jpg")
    recs = load(f"karpathy:{tmp_path / 'f8k' / 'dataset_flickr8k.json'}:{imgs}")
    assert [(r.image_id, r.split, r.captions) for r in recs][1] == (
        "2903617548_d3e38d7f88.jpg",
        "val",
        ["A little baby plays croquet ."],
    )


def test_flickr_token_file_with_split_lists(tmp_path):
    tokens = tmp_path / "Flickr8k.token.txt"
    tokens.write_text(
        "1000268201_693b08cb0e.jpg#0\tA child in a pink dress is climbing up a set of stairs in an entry way .\n"
        "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
        "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\n"
        "1002674143_1b742ab4b8.jpg#0\tA little girl covered in paint sits in front of a painted rainbow .\n"
        # the real Flickr8k.token.txt has this typo (image "...jpg.1" does not exist)
        "2258277193_586949ec62.jpg.1#0\tPeople sitting on a mat on the ground .\n"
        "\n"
    )
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("1000268201_693b08cb0e.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("1001773457_577c3a7d70.jpg\n")
    (tmp_path / "Flickr_8k.testImages.txt").write_text("1002674143_1b742ab4b8.jpg\n")
    for n in ("1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg", "1002674143_1b742ab4b8.jpg"):
        _img(tmp_path / "Flicker8k_Dataset" / n)
    with pytest.warns(DataWarning, match=r"1 of 4 image files are missing \(first: .*2258277193_586949ec62.jpg.1\)"):
        recs = load(f"flickr:{tokens}")
    assert [(r.image_id, r.split, len(r.captions)) for r in recs] == [
        ("1000268201_693b08cb0e.jpg", "train", 2),
        ("1001773457_577c3a7d70.jpg", "val", 1),
        ("1002674143_1b742ab4b8.jpg", "test", 1),
    ]
    assert recs[0].captions[1] == "A girl going into a wooden building ."
    bad = tmp_path / "bad.token"
    bad.write_text("1000268201_693b08cb0e.jpg#0\tok\nno tab here\n")
    with pytest.raises(UserError, match=r"bad.token:2"):
        load(f"flickr:{bad}:{tmp_path / 'Flicker8k_Dataset'}")


def test_folder_csv_russian_and_jsonl(tmp_path):
    d = tmp_path / "memes"
    _img(d / "a.png")
    _img(d / "sub" / "b.jpg")
    (d / "captions.csv").write_text(
        "\ufeffimage,caption,split\n"
        'a.png,"Кот смотрит на огурец, и ему страшно",train\n'
        "a.png,Испуганный кот,train\n"
        "sub/b.jpg,Когда понедельник 😩,test\n"
        "sub/b.jpg,,test\n"
        "missing.png,Нет файла,train\n",
        encoding="utf-8",
    )
    with pytest.warns(DataWarning) as w:
        recs = load(f"folder:{d}")
    text = " | ".join(str(x.message) for x in w)
    assert "1 empty captions skipped" in text and "1 of 3 image files are missing" in text
    with (
        pytest.warns(DataWarning),
        pytest.raises(UserError, match=r"1 of 3 image files are missing \(first: .*missing"),
    ):
        load(f"folder:{d}", strict=True)
    assert [(r.image_id, r.split, r.captions) for r in recs] == [
        ("a.png", "train", ["Кот смотрит на огурец, и ему страшно", "Испуганный кот"]),
        ("sub/b.jpg", "test", ["Когда понедельник 😩"]),
    ]
    j = tmp_path / "j"
    _img(j / "x.png")
    _img(j / "y.png")
    lines = [
        {"image": "x.png", "captions": ["two shirts", "a pair of shirts"], "split": "train", "items": [1, 2]},
        {"image": "y.png", "caption": "ein Hund", "split": "validation", "image_id": "y-1"},
    ]
    (j / "captions.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    recs = load(str(j))  # bare folder path: sniffed
    assert [(r.image_id, r.split, r.captions) for r in recs] == [
        ("x.png", "train", ["two shirts", "a pair of shirts"]),
        ("y-1", "val", ["ein Hund"]),
    ]
    (j / "captions.jsonl").write_text('{"image": "x.png", "caption": "ok"}\n{not json}\n')
    with pytest.raises(UserError, match="captions.jsonl:2"):
        load(f"folder:{j}")
    k = tmp_path / "kaggle"  # Kaggle Flickr8k: captions.txt with an image,caption header
    _img(k / "1000268201_693b08cb0e.jpg")
    (k / "captions.txt").write_text("image,caption\n1000268201_693b08cb0e.jpg,A child in a pink dress .\n")
    assert load(f"folder:{k}")[0].captions == ["A child in a pink dress ."]
    (k / "captions.txt").write_text("file;text\nx;y\n")
    with pytest.raises(UserError, match="'image' and 'caption'"):
        load(f"folder:{k}")


def test_parse_spec_forms(tmp_path):
    s = parse_spec("coco:ann/captions_train2017.json,ann/captions_val2017.json:/data/coco/images")
    assert s.kind == "coco" and [p.name for p in s.source] == ["captions_train2017.json", "captions_val2017.json"]
    assert s.images == Path("/data/coco/images")
    assert parse_spec("coco-karpathy:data/coco/dataset_coco.json").kind == "karpathy"
    assert parse_spec("karpathy:x.json").images is None
    assert parse_spec("openclipart").source == [openclipart.OPENCLIPART_ROOT]
    assert parse_spec(f"folder:{tmp_path}").source == [tmp_path]
    with pytest.raises(UserError, match="unknown dataset kind 'cocoo'"):
        parse_spec("cocoo:x.json")
    with pytest.raises(UserError, match="not found"):
        parse_spec(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="empty"):
        parse_spec("  ")
    (tmp_path / "k.json").write_text(json.dumps({"images": [], "dataset": "flickr8k"}))
    assert parse_spec(str(tmp_path / "k.json")).kind == "karpathy"
    (tmp_path / "c.json").write_text(json.dumps({"images": [], "annotations": []}))
    assert parse_spec(str(tmp_path / "c.json")).kind == "coco"


SVG = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:cc="http://web.resource.org/cc/"
     xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://www.w3.org/2000/svg"
     width="100" height="100">
  <metadata>
    <rdf:RDF>
      <cc:Work rdf:about="">
        <dc:title>{title}</dc:title>
        <dc:description>{desc}</dc:description>
        <dc:subject><rdf:Bag><rdf:li>{kw1}</rdf:li><rdf:li>animal</rdf:li></rdf:Bag></dc:subject>
        <dc:publisher><cc:Agent rdf:about="http://www.openclipart.org/"><dc:title>Open Clip Art Project</dc:title>
        </cc:Agent></dc:publisher>
        <dc:creator><cc:Agent><dc:title>Gerald G.</dc:title></cc:Agent></dc:creator>
        <dc:format>image/svg+xml</dc:format>
      </cc:Work>
    </rdf:RDF>
  </metadata>
  <rect width="10" height="10"/>
</svg>
"""


def test_openclipart_layout_fixture(tmp_path):
    root = tmp_path / "openclipart"
    dogs = root / "svg" / "animals" / "mammals" / "dogs"
    dogs.mkdir(parents=True)
    (dogs / "beagle_copper_ganson.svg").write_text(
        SVG.format(title="Copper the Beagle", desc="Copper the Beagle.", kw1="beagle")
    )
    (dogs / "poodle.svg").write_text(SVG.format(title="Poodle", desc="A white poodle sitting", kw1="poodle"))
    (dogs / "star1.svg").write_text(SVG.format(title="gramastar", desc="", kw1="star"))
    (dogs / "star2.svg").write_text(SVG.format(title="gramastar", desc="", kw1="star"))
    (dogs / "broken.svg").write_text("<svg><metadata>")
    other = root / "svg" / "animals"  # Debian files the same drawing under two categories with a symlink
    os.symlink(dogs / "poodle.svg", other / "poodle.svg")
    _img(root / "png" / "animals" / "mammals" / "dogs" / "poodle.png")
    # The same picture uploaded again under another name (byte-identical PNG): one record, one split.
    (dogs / "white_poodle.svg").write_text(SVG.format(title="White poodle", desc="", kw1="dog"))
    shutil.copy(root / "png" / "animals" / "mammals" / "dogs" / "poodle.png",
                root / "png" / "animals" / "mammals" / "dogs" / "white_poodle.png")
    with pytest.warns(DataWarning, match="3 of 6 drawings skipped.*1 byte-identical duplicates merged"):
        recs = openclipart.load_openclipart(root, max_title_repeats=1)
    by_id = {r.image_id: r for r in recs}
    assert set(by_id) == {"animals/mammals/dogs/beagle_copper_ganson", "animals/mammals/dogs/poodle"}
    assert by_id["animals/mammals/dogs/beagle_copper_ganson"].captions == ["Copper the Beagle"]  # same desc dropped
    poodle = by_id["animals/mammals/dogs/poodle"]
    assert poodle.captions == ["Poodle", "A white poodle sitting", "White poodle"]
    assert poodle.meta["same_image"] == [str(dogs / "white_poodle.svg")]
    assert poodle.meta["keywords"] == ["poodle", "animal"]
    assert sorted(poodle.meta["categories"]) == ["animals", "animals/mammals/dogs"]
    assert poodle.path.suffix == ".png" and poodle.split in ("train", "val", "test")
    assert by_id["animals/mammals/dogs/beagle_copper_ganson"].path.suffix == ".svg"  # no PNG rendered for it
    md = openclipart.svg_metadata(dogs / "beagle_copper_ganson.svg")
    assert md["title"] == "Copper the Beagle"  # not the publisher's or creator's dc:title
    assert openclipart.openclipart_split("animals/poodle.svg") == openclipart.openclipart_split("animals/poodle.svg")


@pytest.mark.skipif(not (openclipart.OPENCLIPART_ROOT / "svg").is_dir(), reason="Debian openclipart-svg not installed")
def test_openclipart_real_package_subset():
    recs = openclipart.load_openclipart(subdir="animals/mammals/dogs", prefer="svg")
    titles = {r.captions[0] for r in recs}
    assert "Copper the Beagle" in titles and all(r.path.is_file() for r in recs)
