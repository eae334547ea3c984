"""``draw``: library pipeline and CLI on tiny models built in tmp_path (BERT + mapper + BigGAN), and the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny import make_tiny_mapper
from typer.testing import CliRunner

from modalbridge import assets, render
from modalbridge.cli import app
from modalbridge.errors import UserError
from modalbridge.generators import truncated_noise
from modalbridge.t2i import pipeline as P
from modalbridge.t2i.resolver import class_embedding


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_mapper(tmp_path_factory.mktemp("t2i"))


def draw(*args: str):
    r = CliRunner().invoke(app, ["draw", *args])
    return r.exit_code, r.stdout, r.stderr


def test_library_draw(model_dir):
    pipe = P.load_drawer(str(model_dir))
    assert P.load_drawer(str(model_dir)) is pipe  # loaded once per process
    d = pipe.draw("a red\x00 dress\u200b ", n=3, seed=5, truncation=0.4)
    assert d.text == "a red dress" and d.seed == 5 and len(d.images) == 3
    assert d.images[0].size == (8, 8) and d.images[0].mode == "RGB"  # a gray generator's channel, repeated
    r, g, b = d.images[0].split()
    assert r.tobytes() == g.tobytes() == b.tobytes()
    assert len(d.classes) == 5 and {"label", "wnid", "score"} == set(d.classes[0])
    scores = [c["score"] for c in d.classes]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-3
    same = pipe.draw("a red dress", n=3, truncation=0.4)  # default seed comes from the cleaned text
    other = pipe.draw("a blue dress", n=3, truncation=0.4)
    assert same.seed == P.text_seed("a red dress") != other.seed
    assert render.png_bytes(same.images[1]) == render.png_bytes(pipe.draw("a red dress", n=3, truncation=0.4).images[1])
    with pytest.raises(UserError, match="empty"):
        pipe.draw(" \t\x07\n ")
    with pytest.raises(UserError, match="truncation"):
        pipe.draw("a dress", truncation=0.0)


def test_several_objects_get_their_own_images(model_dir):
    pipe = P.load_drawer(str(model_dir))
    assert pipe.objects("an elephant and a bus") == ["an elephant", "a bus"]
    assert pipe.objects("a photo of a dress, a purse and two elephants") == ["a photo of a dress", "a purse",
                                                                           "two elephants"]
    assert pipe.objects("a dress and a gown") == ["a dress and a gown"]  # one class twice: one object
    assert pipe.objects("a red dress") == ["a red dress"]
    d = pipe.draw("an elephant and a bus", n=2, seed=1)
    assert [o.text for o in d.objects] == ["an elephant", "a bus"] and len(d.images) == 4
    # Each object's embedding is the mapper's output for its own piece, not for the whole sentence.
    emb, _, _ = pipe.embed(["an elephant", "a bus", "an elephant and a bus"])
    torch.testing.assert_close(d.objects[0].embedding, emb[0])
    torch.testing.assert_close(d.objects[1].embedding, emb[1])
    assert len(pipe.draw("an elephant and a bus", n=2, seed=1, split_objects=False).images) == 2


def test_per_token_words_align_to_word_pieces(model_dir):
    pipe = P.load_drawer(str(model_dir))
    frames = pipe.per_token("the xyz dresses", seed=2)
    assert [w for w, _, _ in frames] == ["the", "xyz", "dresses"]  # "xyz" is three word pieces, one word
    enc = pipe.encoder.encode("the xyz dresses")
    mask = torch.zeros(1, enc.mask.shape[1], dtype=torch.bool)
    mask[0, 2:5] = True  # x ##y ##z
    out = pipe.classifier.model(enc.hidden, mask)
    # An in-span mapper's mixture is drawn like a resolver's: sharpen(p) @ the generator's table.
    expected = class_embedding(
        pipe.classifier.sharpen(pipe.classifier.model.class_scores(out)), pipe.table)
    z = truncated_noise(1, 128, P.DEFAULT_TRUNCATION, 2)
    img = render.to_pil(pipe.generator(z, expected, P.DEFAULT_TRUNCATION))[0]
    assert render.png_bytes(img) == render.png_bytes(frames[1][1])


def test_cli_json_files_and_determinism(model_dir, tmp_path):
    code, out, err = draw("a red dress", "--n", "2", "--seed", "3", "--json", "--model", str(model_dir),
                          "--out", str(tmp_path), "--gif")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["text"] == "a red dress" and len(rec["images"]) == 2 and len(rec["classes"]) == 5
    assert {"label", "wnid", "score"} == set(rec["classes"][0])
    for p in rec["images"] + [rec["grid"], rec["gif"]]:
        assert Path(p).is_file()
    im = Image.open(rec["images"][0])
    assert im.size == (128, 128)  # 8x8 enlarged (nearest) to at least 128 px
    assert Image.open(rec["gif"]).n_frames == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    first = Path(rec["images"][1]).read_bytes()
    code, out2, _ = draw("a red dress", "--n", "2", "--seed", "3", "--json", "--model", str(model_dir),
                         "--out", str(tmp_path / "again"))
    assert code == 0 and Path(json.loads(out2)["images"][1]).read_bytes() == first


def test_cli_prompts_per_token_interpolation(model_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dress\n\nan elephant and a bus\n", encoding="utf-8")
    code, out, err = draw("--prompts", str(prompts), "--json", "--n", "1", "--model", str(model_dir),
                          "--out", str(tmp_path / "o"))
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in recs] == ["a dress", "an elephant and a bus"]
    assert len(recs[1]["images"]) == 2 and [o["text"] for o in recs[1]["objects"]] == ["an elephant", "a bus"]
    code, out, err = draw("the red dress", "--per-token", "--json", "--model", str(model_dir), "--out", str(tmp_path))
    rec = json.loads(out)
    assert code == 0 and [w["word"] for w in rec["words"]] == ["the", "red", "dress"]
    assert Image.open(rec["gif"]).n_frames == 3
    code, out, err = draw("a dress", "--to", "a bag", "--steps", "4", "--json", "--gif", "--model", str(model_dir),
                          "--out", str(tmp_path))
    rec = json.loads(out)
    assert code == 0 and len(rec["images"]) == 4
    gif = Image.open(rec["gif"])  # Pillow merges identical neighbour frames, adding up their durations
    durations = []
    for k in range(gif.n_frames):
        gif.seek(k)
        durations.append(gif.info["duration"])
    assert sum(durations) == 4 * 250


def test_cli_bad_input(model_dir, tmp_path):
    m = ["--model", str(model_dir), "--out", str(tmp_path)]
    for args, msg in [
        (["", *m], "empty"),
        (["  \x00\x1b  ", *m], "empty"),
        (["a dress", "--truncation", "0", *m], "truncation"),
        (["a dress", "--truncation", "1.5", *m], "truncation"),
        (["a dress", "--n", "0", *m], "n must be"),
        (["a dress", "--model", "no such model"], "unknown model"),
        (["a dress", "--model", "no-such-model"], "no-such-model"),  # a hub id: not cached, or no network
        (["a dress", "--model", str(tmp_path / "missing") + "/"], "not found"),
        (["--prompts", str(tmp_path / "none.txt"), *m], "prompts file not found"),
        ([*m], "give a TEXT"),
    ]:
        code, out, err = draw(*args)
        assert code == 2, (args, out, err)
        assert err.startswith("error:") and msg in err and len(err.strip().splitlines()) == 1, (args, err)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    assert draw("a dress", "--model", str(bad))[0] == 2
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    for f in model_dir.iterdir():
        (trunc / f.name).write_bytes(f.read_bytes())
    (trunc / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes()[:200])
    code, _, err = draw("a dress", "--model", str(trunc))
    assert code == 2 and "corrupt or truncated" in err
    assert not list(tmp_path.glob("*.png"))  # nothing written for bad input


def test_cli_long_text_truncated_with_warning(model_dir, tmp_path):
    code, out, err = draw("red dress " * 10_000, "--n", "1", "--json", "--model", str(model_dir), "--out",
                          str(tmp_path))
    assert code == 0
    assert "warning:" in err and "truncated" in err
    assert len(json.loads(out)["images"]) == 1


@pytest.mark.skipif(assets.embedded("t2i-fashion") is None, reason="t2i-fashion not shipped yet")
def test_shipped_default_is_deterministic(tmp_path):
    a = draw("a red dress", "--n", "2", "--json", "--out", str(tmp_path / "a"))
    b = draw("a red dress", "--n", "2", "--json", "--out", str(tmp_path / "b"))
    assert a[0] == b[0] == 0, a[2]
    ra, rb = json.loads(a[1]), json.loads(b[1])
    assert ra["classes"][0]["label"] == "Dress"
    assert [Path(p).read_bytes() for p in ra["images"]] == [Path(p).read_bytes() for p in rb["images"]]


@pytest.mark.skipif(assets.embedded("t2i-fashion") is None, reason="t2i-fashion not shipped yet")
def test_shipped_default_draws_what_the_text_names():
    """End to end on the shipped models: text -> MiniLM -> mapper -> gan-fashion -> images that the Fashion-MNIST
    classifier (trained on real images only, scripts/train_fashion_classifier.py) recognises as the class named."""
    import numpy as np

    from modalbridge.t2i.pipeline import load_drawer
    from modalbridge.vision.classifier import load_classifier

    prompts = {"a woman in a red dress": 3, "white running sneakers": 7, "a leather handbag": 8, "a pair of jeans": 1,
               "a warm winter parka": 4, "flip-flops on the beach": 5, "a cosy jumper": 2, "a black tee": 0,
               "ankle boots with a heel": 9}
    pipe = load_drawer(None)
    clf = load_classifier()
    recognised = []
    for text, label in prompts.items():
        d = pipe.draw(text, n=4, seed=0)
        assert len(d.objects) == 1 and d.classes[0]["label"] == pipe.vocab[label].label, (text, d.classes[:2])
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32)) for im in d.images])
        _, pred = clf.embed((x / 127.5 - 1).unsqueeze(1))  # (4, 1, 32, 32) in [-1, 1]
        recognised += (pred == label).tolist()
    assert np.mean(recognised) >= 0.8, recognised


def test_default_truncation_is_the_generators_own(model_dir):
    """gan-fashion records the evaluation panel's choice (scripts/gan_quality.py --record, the truncation in
    docs/results/gan_fashion.json); a generator without one draws at BigGAN's 0.5."""
    report = Path(__file__).resolve().parents[1] / "docs" / "results" / "gan_fashion.json"
    chosen = json.loads(report.read_text())["default_truncation"]
    assert chosen != P.DEFAULT_TRUNCATION
    shipped = P.load_drawer(None)
    assert shipped.default_truncation == chosen
    assert shipped.draw("a red dress", n=1, seed=0).truncation == chosen
    assert shipped.draw("a red dress", n=1, seed=0, truncation=0.4).truncation == 0.4
    tiny = P.load_drawer(str(model_dir))
    assert tiny.default_truncation == P.DEFAULT_TRUNCATION == 0.5
