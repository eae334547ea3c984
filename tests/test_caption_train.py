"""The ``caption`` task end to end on a fixture dataset: feature cache, training through the engine, CIDEr-based
validation, export, and the exported model captioning images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import COLOURS, make_fixture, tiny_resnet

from modalbridge.registry import load_builtins

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train sat_tiny for a few epochs; returns (run_dir, data_dir, cache_dir)."""
    from modalbridge.training import engine

    load_builtins()
    tmp = tmp_path_factory.mktemp("caption_train")
    data = make_fixture(tmp / "data")
    enc = tiny_resnet(tmp / "encoder")
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", [
        f"run_root={tmp / 'runs'}", f"data.data=folder:{data}", f"data.encoder={enc}",
        f"data.cache_dir={tmp / 'cache'}", "trainer.max_epochs=4", "data.batch_size=6", "optim.lr=0.01",
    ])
    run_dir = engine.train(cfg)
    return run_dir, data, tmp / "cache", enc


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "logs" / "csv" / "metrics.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_training_lowers_loss_and_logs_cider(trained):
    run_dir, *_ = trained
    rows = _metrics(run_dir)
    train_loss = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(train_loss) >= 10
    assert np.mean(train_loss[-3:]) < 0.6 * np.mean(train_loss[:3])
    val_loss = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    cider = [float(r["val/CIDEr"]) for r in rows if r.get("val/CIDEr")]
    assert len(val_loss) == len(cider) == 4  # one of each per epoch (sanity check does not log CIDEr)
    assert val_loss[-1] < val_loss[0]
    assert max(cider) > 0.0 and all(np.isfinite(cider))


def test_export_has_vocab_metrics_and_best_cider_checkpoint(trained):
    run_dir, _, cache, enc = trained
    model_dir = run_dir / "model"
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["model_type"] == "show_attend_tell"
    assert meta["config"]["encoder"] == str(enc) and meta["config"]["feature_dim"] == 32
    assert meta["config"]["num_positions"] == 4
    vocab = json.loads((model_dir / "vocab.json").read_text())
    assert {"red", "green", "blue", "square", "stripe"} <= set(vocab["itos"])
    assert meta["config"]["vocab_size"] == len(vocab["itos"])
    metrics = json.loads((model_dir / "metrics.json").read_text())
    cider = [float(r["val/CIDEr"]) for r in _metrics(run_dir) if r.get("val/CIDEr")]
    assert metrics["best/val/CIDEr"] == pytest.approx(max(cider), abs=1e-5)
    # Which epoch each number is from (issue 13): plain keys = last epoch, best/* = best epoch = exported weights,
    # and weights/val/* are the exported weights' own decoded scores.
    by_epoch = {int(float(r["epoch"])): r for r in _metrics(run_dir) if r.get("val/CIDEr")}
    assert metrics["last/epoch"] == max(by_epoch) == 3
    assert metrics["weights/epoch"] == metrics["best/epoch"]
    best_row, last_row = by_epoch[metrics["best/epoch"]], by_epoch[metrics["last/epoch"]]
    assert float(best_row["val/CIDEr"]) == pytest.approx(metrics["best/val/CIDEr"], abs=1e-5)
    assert float(last_row["val/CIDEr"]) == pytest.approx(metrics["val/CIDEr"], abs=1e-5)
    for key in ("CIDEr", "BLEU-4", "ROUGE-L"):
        assert metrics[f"weights/val/{key}"] == pytest.approx(float(best_row[f"val/{key}"]), abs=1e-5)
    # The feature cache was written once per image list (train, val) and is reused.
    assert len([p for p in cache.iterdir() if (p / "meta.json").is_file()]) == 2


def test_exported_model_captions_and_evaluates(trained):
    from modalbridge.captioning import datasets
    from modalbridge.captioning.pipeline import evaluate, load_captioner

    run_dir, data, *_ = trained
    cap = load_captioner(run_dir / "model")
    records = [r for r in datasets.load(f"folder:{data}") if r.split == "train"][:6]
    out = cap.caption([r.path for r in records], beam=2)
    assert len(out) == 6
    for res in out:
        assert isinstance(res["caption"], str) and res["caption"]
        assert np.isfinite(res["logprob"]) and res["logprob"] <= 0
        assert len(res["words"]) == len(res["attention"]) and len(res["attention"][0]) == 4
    # Trained on these very images: most captions name the right colour.
    right = sum(any(c in res["caption"] for c in COLOURS if c in r.captions[0]) for r, res in zip(records, out,
                                                                                                  strict=True))
    assert right >= 4
    scores = evaluate(cap, records, beam=2, meteor=False)
    assert scores["n_images"] == 6 and scores["CIDEr"] > 0.5


def test_feature_cache_reuse_and_resume(tmp_path, trained):
    from modalbridge.captioning import features
    from modalbridge.vision.encoders import build_encoder

    _, data, _, enc_dir = trained
    enc = build_encoder(str(enc_dir))
    paths = sorted(str(p) for p in data.glob("*.png"))[:10]
    a = features.extract(enc, paths, tmp_path, batch_size=4, shard_size=4, progress=False)
    assert a.grid.shape == (10, 4, 32) and a.pooled.shape == (10, 32) and a.grid.dtype == torch.float16
    assert a.meta["n_shards"] == 3
    direct = enc.encode([Image.open(p).convert("RGB") for p in paths[:6]])
    torch.testing.assert_close(a.grid[:6].float(), direct.grid, atol=2e-3, rtol=2e-3)  # rows across 2 shards
    torch.testing.assert_close(a.grid[5].float(), direct.grid[5], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(a.grid[torch.tensor([5, 0])], a.grid.tensor()[[5, 0]])
    # Interrupted extraction: meta.json and one shard gone -> only that shard is recomputed.
    (a.dir / "meta.json").unlink()
    (a.dir / "shard-00001.safetensors").unlink()
    keep = (a.dir / "shard-00000.safetensors").stat().st_mtime_ns
    b = features.extract(enc, paths, tmp_path, batch_size=4, shard_size=4, progress=False)
    assert b.dir == a.dir and (a.dir / "shard-00000.safetensors").stat().st_mtime_ns == keep
    torch.testing.assert_close(b.grid.tensor(), a.grid.tensor())
    # Another image list (or order) is another cache.
    c = features.extract(enc, paths[::-1], tmp_path, batch_size=4, shard_size=4, progress=False, store_grid=False)
    assert c.dir != a.dir and c.grid is None
    torch.testing.assert_close(c.pooled.tensor().flip(0), a.pooled.tensor())
    # One cache per encoder: a pooled-only request (Show and Tell, ClipCap) reuses the grid cache, nothing new.
    before = sorted(p.name for p in tmp_path.iterdir())
    d = features.extract(enc, paths, tmp_path, batch_size=4, shard_size=4, progress=False, store_grid=False)
    assert d.dir == a.dir and sorted(p.name for p in tmp_path.iterdir()) == before
    assert features.cached(enc, paths, tmp_path, store_grid=False).dir == a.dir


def test_bad_config_values_are_user_errors(tmp_path):
    from modalbridge.captioning.sat import ShowAttendTell
    from modalbridge.captioning.train import CaptionTask
    from modalbridge.errors import UserError
    from modalbridge.training import engine

    load_builtins()
    data = make_fixture(tmp_path / "d", 3, 0, 0)
    base = [f"run_root={tmp_path}", f"data.data=folder:{data}"]
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", [*base, "model.params.hidden_dimm=3"])
    enc = {"feature_dim": 4, "num_positions": 1, "encoder": "e", "encoder_kind": "resnet"}
    with pytest.raises(UserError, match="model.params.hidden_dimm"):
        CaptionTask(cfg)._build_model(ShowAttendTell, cfg.model.params, enc, ["a b"])
    nowhere = [f"run_root={tmp_path}", "data.data=folder:/nonexistent"]
    for bad, word in (("model.params.hidden_dimm=3", "hidden_dimm"),
                      ("model.params.attention_dim=wide", "attention_dim")):
        cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", [*nowhere, bad])
        with pytest.raises(UserError, match=f"model.params.{word}"):
            CaptionTask(cfg).prepare()  # fails on the parameter, before reading data or loading anything
    cfg = engine.resolve_config(ROOT / "configs/caption/clipcap_fashion.yaml", [*nowhere, "model.params.lm_dtype=fp8"])
    with pytest.raises(UserError, match="model.params.lm_dtype"):
        CaptionTask(cfg).prepare()  # before the LM is loaded
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", [*base, "model.arch=lstm"])
    with pytest.raises(UserError, match="unknown caption decoder 'lstm'"):
        CaptionTask(cfg).prepare()
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", base)
    with pytest.raises(UserError, match="no 'val' split"):
        CaptionTask(cfg).prepare()


def test_clipcap_trains_through_the_task_with_the_lm_tokenizer(tmp_path):
    from tiny import build_tiny_lm

    from modalbridge.captioning.pipeline import load_captioner
    from modalbridge.training import engine

    load_builtins()
    data = make_fixture(tmp_path / "data", 6, 3, 0)
    words = " ".join(f"w{i}" for i in range(10))
    lines = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines()]
    for i, rec in enumerate(lines):  # captions in the tiny LM's word-level vocabulary
        rec["captions"] = [" ".join(words.split()[i % 5 : i % 5 + 3])]
    (data / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    lm = build_tiny_lm(tmp_path / "lm", "gpt2")
    import yaml

    raw = yaml.safe_load((ROOT / "configs/caption/sat_tiny.yaml").read_text())
    raw["model"] = {"arch": "clipcap", "params": {"lm": str(lm), "prefix_length": 2, "mapper": "mlp", "max_len": 5}}
    (tmp_path / "clipcap_tiny.yaml").write_text(yaml.safe_dump(raw))
    cfg = engine.resolve_config(tmp_path / "clipcap_tiny.yaml", [
        f"run_root={tmp_path / 'runs'}", f"data.data=folder:{data}", f"data.encoder={tiny_resnet(tmp_path / 'e')}",
        f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=1",
    ])
    run_dir = engine.train(cfg)
    meta = json.loads((run_dir / "model" / "config.json").read_text())
    assert meta["model_type"] == "clipcap" and meta["config"]["lm"] == str(lm) and meta["config"]["lm_dim"] == 32
    assert json.loads((run_dir / "model" / "vocab.json").read_text())["lm"] == str(lm)
    assert "val/CIDEr" in json.loads((run_dir / "model" / "metrics.json").read_text())
    out = load_captioner(run_dir / "model").caption([data / "train_000.png"], beam=2)[0]
    assert all(w.startswith("w") for w in out["words"])


def test_init_from_reuses_the_vocabulary_and_weights(trained, tmp_path):
    from modalbridge.captioning.train import CaptionTask
    from modalbridge.training import engine

    run_dir, data, cache, enc = trained
    overrides = [f"run_root={tmp_path}", f"data.data=folder:{data}", f"data.encoder={enc}", f"data.cache_dir={cache}",
                 "data.min_freq=3", f"init_from={run_dir}"]
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", overrides)
    task = CaptionTask(cfg)
    module = task.build_module()
    engine.init_weights_from(module.model, cfg.init_from)  # what engine.train does after build_module
    first = json.loads((run_dir / "model" / "vocab.json").read_text())["itos"]
    assert task.vocab.itos == first  # not rebuilt with min_freq=3
    pretrained = checkpoint_state(run_dir / "model")
    assert all(torch.equal(v, pretrained[k]) for k, v in module.model.state_dict().items())


def checkpoint_state(model_dir: Path) -> dict:
    from modalbridge import checkpoint

    return checkpoint.load_state_dict(model_dir / "model.safetensors")


def test_val_decoding_options_come_from_the_config(tmp_path, monkeypatch):
    """data.val_length_penalty / val_top_p / val_temperature are checked before any work and used by val/CIDEr."""
    from modalbridge.captioning import decoding
    from modalbridge.captioning.pairs import CaptionCodec
    from modalbridge.captioning.sat import SATConfig, ShowAttendTell
    from modalbridge.captioning.train import CaptionTask
    from modalbridge.captioning.vocab import Vocab
    from modalbridge.errors import UserError
    from modalbridge.training import engine

    load_builtins()
    base = [f"run_root={tmp_path}", "data.data=folder:/nonexistent"]
    for bad, word in (("data.val_top_p=1.5", "top-p"), ("data.val_temperature=0.5", "exclude each other"),
                      ("data.val_length_penalty=-1", "length penalty")):
        cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", [*base, bad])
        with pytest.raises(UserError, match=f"data.val_.*{word}"):
            CaptionTask(cfg).prepare()  # fails on the option, not on the missing data
    calls = []
    real = decoding.sample

    def spy(*a, **kw):
        calls.append((kw["top_p"], kw["temperature"]))
        return real(*a, **kw)

    monkeypatch.setattr(decoding, "sample", spy)
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml",
                                [*base, "data.val_beam=1", "data.val_top_p=0.7", "data.val_temperature=0.5"])
    task = CaptionTask(cfg)
    from modalbridge.captioning.train import _val_decoding

    task.decoding = _val_decoding(cfg.data)
    task.vocab = Vocab(["a", "red", "square"])
    task.text = CaptionCodec(task.vocab)
    task.cider_features = torch.randn(2, 4, 8)
    task.cider_records = [type("R", (), {"captions": ["a red square"]})()] * 2
    model = ShowAttendTell(SATConfig(vocab_size=7, feature_dim=8, embed_dim=8, hidden_dim=8, attention_dim=8,
                                     max_len=4))
    scores = task.decode_and_score(model)
    assert calls == [(0.7, 0.5)] and "CIDEr" in scores


def test_max_train_images_cap_is_said_not_silent():
    import warnings
    from types import SimpleNamespace

    from modalbridge.captioning.pairs import take_split

    recs = [SimpleNamespace(split="train") for _ in range(5)] + [SimpleNamespace(split="test")]
    with pytest.warns(UserWarning, match="first 2 of 5 'train' images"):
        assert len(take_split(recs, "train", 2)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cap, or a cap above the size: nothing to say
        assert len(take_split(recs, "train", 0)) == len(take_split(recs, "train", 9)) == 5


def test_load_captioner_is_loaded_once_until_its_directory_changes(trained, tmp_path):
    import shutil

    from modalbridge.captioning.pipeline import load_captioner

    model_dir = tmp_path / "m"
    shutil.copytree(trained[0] / "model", model_dir)
    first = load_captioner(model_dir)
    assert load_captioner(str(model_dir)) is first  # once per process, like load_drawer
    (model_dir / "metrics.json").write_text('{"val/CIDEr": 9.0}')  # the directory was saved again
    again = load_captioner(model_dir)
    assert again is not first and again.metrics == {"val/CIDEr": 9.0}


def test_unreadable_training_images_are_skipped_and_said(tmp_path):
    """One broken or missing file must not fail a run: it is left out before extraction, on a warning line each."""
    from modalbridge.training import engine

    load_builtins()
    data = make_fixture(tmp_path / "data", n_train=6, n_val=3, n_test=1)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = next(p for p in sorted(data.iterdir()) if p.suffix == ".png" and p.name != "broken.png")
    (data / "cut.png").write_bytes(good.read_bytes()[:120])  # a valid header, the pixel data cut off
    lines = (data / "captions.jsonl").read_text().splitlines()
    lines += [json.dumps({"image": name, "captions": ["a bad file"], "split": "train"})
              for name in ("broken.png", "missing.png", "cut.png")]
    (data / "captions.jsonl").write_text("\n".join(lines) + "\n")
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", [
        f"run_root={tmp_path / 'runs'}", f"data.data=folder:{data}", f"data.encoder={tiny_resnet(tmp_path / 'enc')}",
        f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=1", "data.batch_size=3",
    ])
    with pytest.warns(UserWarning) as seen:
        run_dir = engine.train(cfg)
    said = [str(w.message) for w in seen]
    assert [s for s in said if "skipping" in s and "broken.png" in s], said  # unreadable: left out before extraction
    assert [s for s in said if "missing.png" in s], said  # missing: the dataset loader already drops it, and says so
    assert [s for s in said if "cut.png could not be decoded" in s], said  # fails only when decoded: row left out
    assert (run_dir / "model" / "model.safetensors").is_file()
    from modalbridge.captioning import features

    caches = [features.load(p) for p in (tmp_path / "cache").iterdir() if (p / "meta.json").is_file()]
    train = next(c for c in caches if any(p.endswith("cut.png") for p in c.paths))
    cut = [i for i, p in enumerate(train.paths) if p.endswith("cut.png")]
    assert train.failed == cut and float(train.pooled[cut[0]].abs().sum()) == 0.0
    assert all(float(train.pooled[i].abs().sum()) > 0 for i in range(len(train)) if i not in cut)


def _finetune(tmp: Path, data: Path, enc: Path, unfreeze_after: int) -> Path:
    from modalbridge.training import engine

    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", [
        f"run_root={tmp / 'runs'}", f"data.data=folder:{data}", f"data.encoder={enc}",
        f"data.cache_dir={tmp / 'cache'}", "trainer.max_epochs=2", "data.batch_size=6", "optim.lr=0.01",
        "data.trainable_blocks=1", f"data.unfreeze_after={unfreeze_after}", "data.encoder_lr=0.01",
    ])
    return engine.train(cfg)


def test_encoder_finetuning_trains_the_last_blocks_after_the_warm_up(trained, tmp_path):
    """data.trainable_blocks caches the stem and trains the last blocks from epoch unfreeze_after on; the exported
    model carries them (encoder.safetensors) and load_captioner applies them."""
    from safetensors.torch import load_file

    from modalbridge.captioning.pipeline import load_captioner
    from modalbridge.vision.encoders import build_encoder

    _, data, _, enc = trained
    pretrained = build_encoder(str(enc), trainable_blocks=1).top_state()
    tuned = _finetune(tmp_path / "a", data, enc, unfreeze_after=1) / "model"
    kept = _finetune(tmp_path / "b", data, enc, unfreeze_after=5) / "model"  # never unfrozen in 2 epochs
    caches = [json.loads(p.read_text()) for p in (tmp_path / "a" / "cache").glob("*/meta.json")]
    assert len(caches) == 2 and all(c["encoder"]["stem_without_last_blocks"] == 1 for c in caches)
    assert json.loads((tuned / "config.json").read_text())["extra"]["encoder_trainable_blocks"] == 1
    got, same = load_file(str(tuned / "encoder.safetensors")), load_file(str(kept / "encoder.safetensors"))
    assert set(got) == set(pretrained) == set(same)
    assert all(torch.equal(same[k], pretrained[k]) for k in pretrained)  # frozen blocks: weights and BN stats kept
    assert any(not torch.equal(got[k], pretrained[k]) for k in pretrained if got[k].is_floating_point())
    cap = load_captioner(tuned)
    assert all(torch.equal(cap.encoder.top_state()[k], got[k]) for k in got)
    out = cap.caption([r for r in sorted((data / "train").glob("*.png"))[:2]], beam=2)
    assert all(isinstance(o["caption"], str) and o["caption"] for o in out)


def test_bpe_vocabulary_trains_exports_and_captions(trained, tmp_path):
    from modalbridge.captioning.pipeline import load_captioner
    from modalbridge.captioning.vocab import SubwordVocab
    from modalbridge.training import engine

    _, data, _, enc = trained
    cfg = engine.resolve_config(ROOT / "configs/caption/sat_tiny.yaml", [
        f"run_root={tmp_path / 'runs'}", f"data.data=folder:{data}", f"data.encoder={enc}",
        f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=2", "data.batch_size=6", "optim.lr=0.01",
        "data.vocab=bpe", "data.max_vocab=40", "data.min_freq=2",
    ])
    model_dir = engine.train(cfg) / "model"
    assert json.loads((model_dir / "vocab.json").read_text())["format"] == SubwordVocab.FORMAT
    cap = load_captioner(model_dir)
    assert isinstance(cap.vocab, SubwordVocab) and len(cap.vocab) == cap.model.config.vocab_size <= 44
    out = cap.caption(sorted((data / "train").glob("*.png"))[:2], beam=2)
    assert all(o["caption"] and "<unk>" not in o["caption"] and "\u2581" not in o["caption"] for o in out)
