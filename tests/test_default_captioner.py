"""The shipped default captioner "caption-fashion": loads offline, names the right clothes on unseen test scenes,
and `modalbridge evaluate` / `modalbridge caption` run on it without --model."""

from __future__ import annotations

import json

import pytest

from modalbridge import assets
from modalbridge.captioning import fashion_scenes

# Class-mention F1 of beam 3 on test scenes 0..19, measured when the model was shipped: 0.74 (see
# docs/results/caption_fashion.json for the full 500-image test split). The floor leaves a margin for
# platform-level numeric differences; a model that confuses or drops classes falls below it.
F1_FLOOR = 0.65
CIDER_FLOOR = 3.0  # CIDEr-D of beam 3 on the 6-scene CLI fixture: 3.73 measured when shipped, minus a margin
N_SCENES = 20

pytestmark = pytest.mark.skipif(assets.embedded("caption-fashion") is None, reason="caption-fashion not shipped")


@pytest.fixture(scope="module")
def captioner():
    from modalbridge.captioning.pipeline import load_captioner

    return load_captioner(None)


def test_default_is_the_shipped_show_attend_tell_and_small(captioner):
    path = assets.embedded("caption-fashion")
    assert captioner.model.model_type == "show_attend_tell"
    assert captioner.model.config.encoder == "efficientnet-lite0" and captioner.model.config.feature_dim == 1280
    assert len(captioner.vocab) == captioner.model.config.vocab_size
    assert (path / "model.safetensors").stat().st_size < 15 * 2**20
    for name in ("config.json", "vocab.json", "metrics.json"):
        assert (path / name).is_file()


def test_default_captions_unseen_test_scenes(captioner):
    scenes = [fashion_scenes.make_scene("test", i) for i in range(N_SCENES)]
    results = captioner.caption([fashion_scenes.render(s) for s in scenes], beam=3)
    captions = [r["caption"] for r in results]
    f1 = fashion_scenes.class_mention_f1(captions, [s.items for s in scenes])
    assert f1["f1"] >= F1_FLOOR, list(zip(captions, [s.captions[0] for s in scenes], strict=True))
    # attention: one distribution over the 7x7 grid per generated word
    r = results[0]
    assert len(r["attention"]) == len(r["words"]) > 0 and len(r["attention"][0]) == 49
    assert abs(sum(r["attention"][0]) - 1.0) < 1e-4


def test_evaluate_and_caption_cli_without_model_or_data(tmp_path, monkeypatch):
    """`evaluate` with neither --model nor --data: the default model on the default test scenes, regenerated into
    $MODALBRIDGE_CACHE (6 scenes here instead of 500, to keep the test short)."""
    from typer.testing import CliRunner

    from modalbridge.cli import app

    monkeypatch.setenv("MODALBRIDGE_CACHE", str(tmp_path))
    full = fashion_scenes.ensure_test_data
    monkeypatch.setattr(fashion_scenes, "ensure_test_data", lambda: full(n_test=6))
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--split", "test", "--json", "--no-meteor"])  # METEOR: test_metrics.py
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(scores) >= {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "n_images"}
    assert scores["n_images"] == 6 and 0.0 <= scores["BLEU-1"] <= 1.0 and scores["CIDEr"] > CIDER_FLOOR
    data = fashion_scenes.default_dir()
    assert data.parent == tmp_path
    # regenerated deterministically: the same bytes as rendering the scene directly
    assert (data / "test/00002.png").read_bytes() == fashion_scenes.png_bytes(
        fashion_scenes.render(fashion_scenes.make_scene("test", 2)))
    res = runner.invoke(app, ["caption", str(data / "test/00000.png"), "--json"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(line) >= {"image", "caption", "logprob"} and line["caption"]


def test_caption_results_are_the_typed_caption_records(captioner):
    from typing import get_type_hints

    from PIL import Image

    from modalbridge.captioning.pipeline import Caption

    (result,) = captioner.caption([Image.new("RGB", (64, 64), (200, 30, 30))], beam=2)
    assert set(result) == set(get_type_hints(Caption))
    assert result["image"] is None and isinstance(result["caption"], str) and isinstance(result["logprob"], float)
    assert len(result["attention"]) == len(result["words"])  # Show-Attend-Tell: one row per word
