"""Feature cache: extracted once, keyed by encoder/layer/max_length/sentences, equal to direct encoding; CLI."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import make_tiny_encoder, make_tiny_sentences
from typer.testing import CliRunner

from modalbridge.cli import app
from modalbridge.errors import UserError
from modalbridge.t2i import features
from modalbridge.text import load_text_encoder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    return make_tiny_encoder(root / "enc"), make_tiny_sentences(root / "sent")


def test_extract_matches_direct_encoding_and_is_reused(setup, tmp_path, monkeypatch):
    enc_dir, data = setup
    from modalbridge.t2i.sentences import load_sentences

    texts = [r["text"] for r in load_sentences(data)]
    entry = features.extract(data, str(enc_dir), cache=tmp_path / "c", batch_size=16, shard_size=128,
                             dtype="float32")
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["n"] == len(texts) == 300 and len(meta["shards"]) == 3 and meta["hidden_size"] == 32
    feats = features.load_entry(entry)
    assert len(feats) == 300 and feats.states.shape == (int(feats.lengths.sum()), 32)
    direct = load_text_encoder(str(enc_dir)).encode(texts[:20], sort=False)
    for i in [0, 7, 19]:
        n = int(direct.lengths[i])
        assert len(feats[i]) == n
        torch.testing.assert_close(feats[i], direct.hidden[i, :n], atol=1e-5, rtol=1e-4)
    # Shard boundaries: sentence 128 is the first of shard 1.
    assert int(feats.offsets[128]) == json.loads((entry / "meta.json").read_text())["shards"][0]["tokens"]

    # Second time: no encoder is loaded, the same entry is returned.
    def boom(*a, **k):
        raise AssertionError("encoder loaded although the cache exists")

    monkeypatch.setattr(features, "load_text_encoder", boom)
    assert features.extract(data, str(enc_dir), cache=tmp_path / "c", dtype="float32") == entry
    again = features.load_features(data, str(enc_dir), cache=tmp_path / "c", dtype="float32")
    torch.testing.assert_close(again.states, feats.states)


def test_key_changes_with_layer_max_length_and_sentences(setup, tmp_path):
    enc_dir, data = setup
    base = features.entry_dir(data, str(enc_dir))
    assert base.parent == data / "features"
    assert features.entry_dir(data, str(enc_dir), layer=1) != base
    assert features.entry_dir(data, str(enc_dir), max_length=16) != base
    other = make_tiny_sentences(tmp_path / "other", n=100, seed=1)
    assert features.entry_dir(other, str(enc_dir)).name != base.name
    # float16 (default) storage, layer 1, truncation to 6 pieces.
    with pytest.warns(UserWarning, match="truncated"):
        feats = features.load_features(data, str(enc_dir), layer=1, max_length=6, cache=tmp_path / "c")
    assert feats.states.dtype == torch.float16 and int(feats.lengths.max()) <= 6
    assert feats.meta["layer"] == 1


def test_corrupt_shard_and_missing_cache(setup, tmp_path):
    enc_dir, data = setup
    entry = features.extract(data, str(enc_dir), cache=tmp_path / "c")
    shard = entry / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(UserError, match="unreadable"):
        features.load_entry(entry)
    with pytest.raises(UserError, match="no feature cache"):
        features.load_features(data, str(enc_dir), layer=0, cache=tmp_path / "c", build=False)
    with pytest.raises(UserError, match="sentences"):
        features.extract(tmp_path, str(enc_dir))


def test_extract_cli(setup, tmp_path):
    enc_dir, data = setup
    r = CliRunner().invoke(app, ["extract", "--data", str(data), "--encoder", str(enc_dir), "--cache",
                                 str(tmp_path / "c"), "--batch-size", "32"])
    assert r.exit_code == 0, r.output
    assert "300 sentences" in r.output and "hidden 32" in r.output
    entries = list((tmp_path / "c").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    r = CliRunner().invoke(app, ["extract", "--data", str(tmp_path / "nope"), "--encoder", str(enc_dir)])
    assert r.exit_code == 2 and "error:" in r.output
    r = CliRunner().invoke(app, ["extract", "--data", str(data), "--encoder", str(enc_dir), "--layer", "9"])
    assert r.exit_code == 2 and "layer 9 out of range" in r.output
