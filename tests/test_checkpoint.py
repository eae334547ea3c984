import json
import pickle

import pytest
import torch

from modalbridge import checkpoint
from modalbridge.errors import UserError
from modalbridge.files import FILE_MODE
from modalbridge.training.toy import ToyMLP, ToyModelConfig


def _model(hidden=16):
    torch.manual_seed(1)
    return ToyMLP(ToyModelConfig(dim=8, hidden=hidden))


def test_round_trip_and_side_files(tmp_path):
    m = _model()
    path = checkpoint.save(m, tmp_path / "m", vocab={"a": 1}, metrics={"val/loss": 0.5}, extra={"note": "x"})
    meta = json.loads((path / "config.json").read_text())
    assert meta["model_type"] == "toy_mlp" and meta["config"]["hidden"] == 16 and meta["modalbridge_version"]
    loaded = checkpoint.load(path)
    assert not loaded.training
    x = torch.randn(4, 8)
    m.eval()
    torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    assert checkpoint.read_json_file(path / "vocab.json") == {"a": 1}
    assert checkpoint.read_json_file(path / "metrics.json") == {"val/loss": 0.5}
    # safetensors writes its files 0o600; a saved model is readable like any file its user writes
    assert {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()} == dict.fromkeys(
        ["model.safetensors", "config.json", "vocab.json", "metrics.json"], FILE_MODE)


def test_save_replaces_atomically(tmp_path):
    checkpoint.save(_model(16), tmp_path / "m")
    checkpoint.save(_model(32), tmp_path / "m")
    assert checkpoint.load(tmp_path / "m").config.hidden == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or backup dirs left


def test_truncated_and_corrupt_weights(tmp_path):
    path = checkpoint.save(_model(), tmp_path / "m")
    w = path / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        checkpoint.load(path)
    w.write_bytes(b"\x00" * 3)
    with pytest.raises(UserError, match="corrupt or truncated"):
        checkpoint.load(path)
    w.write_bytes(b"garbage that is not safetensors at all" * 10)
    with pytest.raises(UserError, match="corrupt or truncated"):
        checkpoint.load(path)


def test_mismatched_config(tmp_path):
    path = checkpoint.save(_model(16), tmp_path / "m")
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["hidden"] = 20
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="do not match"):
        checkpoint.load(path)
    meta["config"]["bogus"] = 1
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="bogus"):
        checkpoint.load(path)


def test_missing_and_not_a_model_dir(tmp_path):
    with pytest.raises(UserError, match="not found"):
        checkpoint.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        checkpoint.load(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        checkpoint.load(tmp_path / "empty")
    path = checkpoint.save(_model(), tmp_path / "m")
    with pytest.raises(UserError, match="expected"):
        checkpoint.load(path, expected="biggan_deep")


def test_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle code ran')",))

    bad = tmp_path / "weights.bin"
    bad.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(UserError, match="pickle"):
        checkpoint.load(bad)
    # a pickle renamed to model.safetensors inside a model dir is not unpickled either
    path = checkpoint.save(_model(), tmp_path / "m")
    (path / "model.safetensors").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(UserError, match="corrupt or truncated"):
        checkpoint.load(path)


def test_unregistered_model_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError):
        checkpoint.save(torch.nn.Linear(2, 2), tmp_path / "x")
    assert not (tmp_path / "x").exists()
