"""``modalbridge caption`` / ``modalbridge evaluate`` through Typer's runner, on a small model directory built here
(random Show-Attend-Tell over a tiny ResNet encoder); and the library calls they wrap."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from modalbridge import checkpoint
from modalbridge.cli import app

runner = CliRunner()
WORDS = ["a", "red", "green", "square", "stripe", "on", "noise"]


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tiny import tiny_resnet

    from modalbridge.captioning.sat import SATConfig, ShowAttendTell, ShowTell
    from modalbridge.captioning.vocab import Vocab

    tmp = tmp_path_factory.mktemp("caption_cli")
    enc = tiny_resnet(tmp / "encoder")
    vocab = Vocab(WORDS)
    torch.manual_seed(0)
    models = {}
    for cls in (ShowAttendTell, ShowTell):
        cfg = SATConfig(vocab_size=len(vocab), feature_dim=32, num_positions=4, embed_dim=16, hidden_dim=16,
                        attention_dim=16, dropout=0.0, max_len=6, encoder=str(enc), encoder_kind="resnet")
        model = cls(cfg)
        with torch.no_grad():
            model.out.bias[vocab.eos_id] = -3.0  # captions of a few words, not empty
            model.out.bias[vocab.unk_id] = -9.0
        models[cls.model_type] = checkpoint.save(model, tmp / cls.model_type, vocab=vocab.to_dict())
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        path = tmp / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 50, 3), dtype=np.uint8)).save(path)
        images.append(path)
    lines = [json.dumps({"image": p.name, "captions": ["a red square", "a square on noise"], "split": "test"})
             for p in images]
    (tmp / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return {"models": models, "images": images, "data": tmp, "tmp": tmp}


def test_caption_json_lines_match_the_library(setup):
    from modalbridge.captioning.pipeline import load_captioner

    model = setup["models"]["show_attend_tell"]
    images = [str(p) for p in setup["images"]]
    res = runner.invoke(app, ["caption", *images, "--model", str(model), "--beam", "2", "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [d["image"] for d in lines] == images
    lib = load_captioner(model).caption(images, beam=2)
    for d, ref in zip(lines, lib, strict=True):
        assert set(d) == {"image", "caption", "logprob"}
        assert d["caption"] == ref["caption"] and d["logprob"] == pytest.approx(ref["logprob"], abs=1e-5)
        assert d["caption"] and all(w in WORDS for w in d["caption"].split())
    plain = runner.invoke(app, ["caption", images[0], "--model", str(model), "--beam", "2"])
    assert plain.exit_code == 0 and plain.stdout.strip() == f"{images[0]}\t{lines[0]['caption']}"


def test_caption_attention_maps(setup, tmp_path):
    model = setup["models"]["show_attend_tell"]
    img = str(setup["images"][1])
    out = tmp_path / "att"
    res = runner.invoke(app, ["caption", img, "--model", str(model), "--attention", str(out), "--json"])
    assert res.exit_code == 0, res.output
    caption = json.loads(res.stdout)["caption"]
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == len(caption.split()) > 0  # one heat map per generated word
    assert str(out) in res.stderr
    assert pngs[0].name.startswith("000_img1_00_")
    with Image.open(pngs[0]) as im:
        assert im.size == (256, 256 + 28)
        title = np.asarray(im.convert("L"))[:28]
        assert title.min() < 100  # the word is drawn in the title band
    # A model without attention cannot draw maps: one clear error.
    res = runner.invoke(app, ["caption", img, "--model", str(setup["models"]["show_tell"]), "--attention", str(out)])
    assert res.exit_code == 2 and "show_attend_tell" in _error_line(res)


def test_attention_overlay_puts_heat_where_attention_is():
    from modalbridge.render import attention_overlay

    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    att = torch.tensor([1.0, 0.0, 0.0, 0.0])  # top-left region of a 2x2 grid
    im = np.asarray(attention_overlay(grey, "word", att, size=64), dtype=np.float32)[28:]
    assert im[:16, :16].mean() > im[48:, 48:].mean() + 30


def test_bad_images_give_one_error_line_and_exit_2(setup, tmp_path):
    model = str(setup["models"]["show_attend_tell"])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    buf = setup["images"][0].read_bytes()
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(buf[: len(buf) // 2])
    for bad in (empty, text, truncated, tmp_path / "missing.png"):
        res = runner.invoke(app, ["caption", str(setup["images"][0]), str(bad), "--model", model, "--json"])
        assert res.exit_code == 2, (bad, res.output)
        _error_line(res)
        assert res.stdout == ""  # nothing captioned before the bad image was found
    res = runner.invoke(app, ["caption", str(setup["images"][0]), "--model", model, "--beam", "0"])
    assert res.exit_code == 2 and "beam" in _error_line(res)
    res = runner.invoke(app, ["caption", str(setup["images"][0]), "--model", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not found" in _error_line(res)


def test_default_model_missing_is_a_clear_error(setup, monkeypatch, tmp_path):
    from modalbridge import assets

    monkeypatch.setattr(assets, "WEIGHTS_DIR", tmp_path / "no-weights")
    res = runner.invoke(app, ["caption", str(setup["images"][0])])
    assert res.exit_code == 2 and "caption-fashion" in _error_line(res)


def test_evaluate_json_scores(setup):
    # --no-meteor: METEOR starts a 2 GB JVM (a minute on a busy machine); the metrics tests cover it.
    model = str(setup["models"]["show_attend_tell"])
    data = f"folder:{setup['data']}"
    res = runner.invoke(app, ["evaluate", "--model", model, "--data", data, "--split", "test", "--beam", "1",
                              "--json", "--no-meteor"])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "n_images"}
    assert scores["n_images"] == 3 and 0.0 <= scores["BLEU-1"] <= 1.0 and scores["CIDEr"] >= 0.0
    assert scores["METEOR"] is None
    res = runner.invoke(app, ["evaluate", "--model", model, "--data", data, "--split", "test", "--beam", "1",
                              "--json", "--lang", "ru"])  # Unicode tokenizer, METEOR unsupported: no JVM either
    assert res.exit_code == 0, res.output
    ru = json.loads(res.stdout)
    assert ru["METEOR"] is None and ru["n_images"] == 3 and 0.0 <= ru["BLEU-1"] <= 1.0
    res = runner.invoke(app, ["evaluate", "--model", model, "--data", data, "--split", "train"])
    assert res.exit_code == 2 and "no images in split 'train'" in _error_line(res)
    nosplit = setup["tmp"] / "nosplit"  # a folder without a split column: every image is scored
    nosplit.mkdir()
    lines = [json.dumps({"image": str(p), "captions": ["a red square"]}) for p in setup["images"][:2]]
    (nosplit / "captions.jsonl").write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["evaluate", "--model", model, "--data", f"folder:{nosplit}", "--beam", "1", "--json",
                              "--no-meteor"])
    assert res.exit_code == 0 and json.loads(res.stdout)["n_images"] == 2, res.output
    assert "has no splits; scoring all 2 images" in res.stderr


# ------------------------------------------------------------------------- decoding options (issue 13)
def _spy(monkeypatch):
    """Record the keyword arguments that reach decoding.beam_search / decoding.sample (and still run them)."""
    from modalbridge.captioning import decoding

    calls = []
    for name in ("beam_search", "sample", "greedy"):
        real = getattr(decoding, name)

        def spy(*a, _real=real, _name=name, **kw):
            calls.append((_name, {k: v for k, v in kw.items() if k in ("beam_size", "length_penalty", "top_p",
                                                                         "temperature")}))
            return _real(*a, **kw)

        monkeypatch.setattr(decoding, name, spy)
    return calls


def test_decoding_options_reach_the_decoder_from_caption_and_evaluate(setup, monkeypatch):
    model = str(setup["models"]["show_attend_tell"])
    img = str(setup["images"][0])
    calls = _spy(monkeypatch)
    res = runner.invoke(app, ["caption", img, "--model", model, "--beam", "4", "--length-penalty", "0", "--json"])
    assert res.exit_code == 0, res.output
    assert calls[-1] == ("beam_search", {"beam_size": 4, "length_penalty": 0.0})
    res = runner.invoke(app, ["caption", img, "--model", model, "--top-p", "0.5", "--temperature", "0.7", "--json"])
    assert res.exit_code == 0, res.output
    assert calls[-1] == ("sample", {"top_p": 0.5, "temperature": 0.7})
    res = runner.invoke(app, ["caption", img, "--model", model, "--temperature", "2"])
    assert res.exit_code == 0 and calls[-1] == ("sample", {"top_p": 1.0, "temperature": 2.0}), res.output
    data = f"folder:{setup['data']}"
    res = runner.invoke(app, ["evaluate", "--model", model, "--data", data, "--length-penalty", "2.5", "--json",
                              "--no-meteor"])
    assert res.exit_code == 0, res.output
    assert calls[-1] == ("beam_search", {"beam_size": 3, "length_penalty": 2.5})
    res = runner.invoke(app, ["evaluate", "--model", model, "--data", data, "--top-p", "0.9", "--json", "--no-meteor"])
    assert res.exit_code == 0 and json.loads(res.stdout)["n_images"] == 3, res.output
    assert calls[-1] == ("sample", {"top_p": 0.9, "temperature": 1.0})


def test_sampled_captions_match_the_library_and_are_reproducible(setup):
    from modalbridge.captioning.pipeline import load_captioner

    model = setup["models"]["show_attend_tell"]
    images = [str(p) for p in setup["images"]]
    args = ["caption", *images, "--model", str(model), "--top-p", "0.8", "--temperature", "1.5", "--json"]
    first, again = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0 and first.stdout == again.stdout, first.output
    lib = load_captioner(model).caption(images, top_p=0.8, temperature=1.5)
    assert [json.loads(line)["caption"] for line in first.stdout.splitlines()] == [r["caption"] for r in lib]
    # temperature 0 is greedy; a length penalty changes nothing for beam 1
    cap = load_captioner(model)
    greedy = [r["caption"] for r in cap.caption(images, beam=1)]
    assert [r["caption"] for r in cap.caption(images, temperature=0.0)] == greedy
    assert [r["caption"] for r in cap.caption(images, beam=1, length_penalty=3.0)] == greedy


@pytest.mark.parametrize("args,word", [
    (["--length-penalty", "-1"], "length penalty"),
    (["--length-penalty", "6"], "length penalty"),
    (["--length-penalty", "nan"], "length penalty"),
    (["--top-p", "0"], "top-p"),
    (["--top-p", "1.5"], "top-p"),
    (["--top-p", "inf"], "top-p"),
    (["--temperature", "-0.5"], "temperature"),
    (["--temperature", "11"], "temperature"),
    (["--beam", "3", "--top-p", "0.9"], "exclude each other"),
    (["--beam", "2", "--temperature", "0.5"], "exclude each other"),
    (["--length-penalty", "1", "--top-p", "0.9"], "beam search"),
])
def test_bad_decoding_options_are_one_error_line_before_anything_loads(setup, tmp_path, args, word):
    missing = str(tmp_path / "no-model")  # the options are checked first: the missing model is never reached
    img = str(setup["images"][0])
    for cmd in (["caption", img, "--model", missing], ["evaluate", "--model", missing, "--data", "folder:/nope"]):
        res = runner.invoke(app, [*cmd, *args])
        assert res.exit_code == 2, res.output
        assert word in _error_line(res) and res.stdout == ""


def test_check_functions_are_public_and_strict():
    from modalbridge.captioning import pipeline
    from modalbridge.errors import UserError

    assert pipeline.check_decoding() == pipeline.Decoding(3, 1.0, None, None)
    d = pipeline.check_decoding(beam=1, top_p=0.9)
    assert d.sampling and (d.beam, d.top_p, d.temperature) == (1, 0.9, None)
    assert pipeline.check_length_penalty(0) == 0.0 and pipeline.check_top_p(1) == 1.0
    for fn, bad in ((pipeline.check_top_p, True), (pipeline.check_temperature, "1"), (pipeline.check_beam, 2.0),
                    (pipeline.check_length_penalty, None)):
        with pytest.raises(UserError):
            fn(bad)
