"""Issue 9 regressions: hostile or broken inputs get one ``error:`` line and exit 2, never code execution,
a traceback or a lost result; resume continues from the truly last epoch and keeps the history."""

import csv
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from modalbridge.cli import app
from modalbridge.registry import load_builtins
from modalbridge.training import batching, engine

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "test" / "toy.yaml"
FAST = ["trainer.progress=false", "logger.backends=[csv]", "data.n_train=32", "data.n_val=16", "data.batch_size=16"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    load_builtins()
    monkeypatch.delenv(engine.RUN_DIR_ENV, raising=False)


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _train(root, *overrides, resume=None):
    cfg = engine.resolve_config(TOY if resume is None else Path(resume) / "config.yaml",
                                [f"run_root={root}", *FAST, *overrides])
    return engine.train(cfg, resume=resume)


def _resume_dir(tmp_path) -> Path:
    """A run dir that --resume accepts up to its checkpoint: the toy config and an empty checkpoints/."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(TOY, run / "config.yaml")
    return run


class _Evil:
    """Unpickling this calls exec(), which creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


# ----------------------------------------------------------------------------------- resume never runs code
@pytest.mark.parametrize("fmt", ["pickle", "torch.save"])
def test_resume_refuses_malicious_pickle(tmp_path, fmt):
    run, marker = _resume_dir(tmp_path), tmp_path / "pwned"
    last = run / "checkpoints" / "last.ckpt"
    payload = {"state_dict": {}, "epoch": 0, "global_step": 0, "loops": _Evil(marker)}
    if fmt == "pickle":
        last.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, last)
    res = runner.invoke(app, ["train", "--resume", str(run), f"run_root={tmp_path}"])
    assert not marker.exists(), "unpickling ran code"
    assert res.exit_code == 2, res.output
    line = _error_line(res)
    assert str(last) in line and "refused" in line


@pytest.mark.parametrize("kind", ["zero", "truncated", "random"])
def test_resume_corrupt_checkpoint_is_one_error(tmp_path, kind):
    run = _resume_dir(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0, "global_step": 1, "loops": {}}, last)
    data = last.read_bytes()
    last.write_bytes({"zero": b"", "truncated": data[: len(data) // 2], "random": os.urandom(4096)}[kind])
    res = runner.invoke(app, ["train", "--resume", str(run), f"run_root={tmp_path}"])
    assert res.exit_code == 2, res.output
    assert str(last) in _error_line(res)


def test_resume_refuses_a_file_that_is_not_a_training_checkpoint(tmp_path):
    run = _resume_dir(tmp_path)
    torch.save({"w": torch.zeros(2)}, run / "checkpoints" / "last.ckpt")
    res = runner.invoke(app, ["train", "--resume", str(run), f"run_root={tmp_path}"])
    assert res.exit_code == 2 and "not a Lightning training checkpoint" in _error_line(res)


# ---------------------------------------------------------------- last.ckpt is the last epoch; history is kept
def _csv_epochs(run) -> list[int]:
    with open(run / "logs" / "csv" / "metrics.csv") as f:
        return sorted({int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("val/loss")})


def test_last_ckpt_is_last_epoch_and_resume_keeps_history(tmp_path):
    # lr 0: val/loss never improves after epoch 0, so best.ckpt stays at epoch 0 while training goes on
    run = _train(tmp_path, "trainer.max_epochs=3", "optim.lr=0.0", "checkpoint.every_n_epochs=0")
    ckpts = run / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 2
    assert torch.load(ckpts / "best.ckpt", weights_only=True)["epoch"] == 0
    metrics = engine.ckpt.read_json_file(run / "model" / "metrics.json")
    assert (metrics["best/epoch"], metrics["last/epoch"], metrics["weights/epoch"]) == (0, 2, 0)
    assert "best/val/loss" in metrics and "val/loss" in metrics  # old readers' keys stay
    assert _csv_epochs(run) == [0, 1, 2]

    resumed = _train(tmp_path, "trainer.max_epochs=5", resume=run)
    assert resumed == run
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 4
    assert _csv_epochs(run) == [0, 1, 2, 3, 4]  # the first three epochs were not wiped
    assert engine.ckpt.read_json_file(run / "model" / "metrics.json")["last/epoch"] == 4


# ------------------------------------------------------------------------ corrupt model directories: exit 2
@pytest.mark.parametrize("kind", ["zero", "truncated", "random"])
def test_corrupt_model_directory_is_one_error(tmp_path, kind):
    from PIL import Image

    from modalbridge import assets

    model = tmp_path / "model"
    shutil.copytree(assets.resolve("caption-fashion"), model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"zero": b"", "truncated": data[: len(data) // 3], "random": os.urandom(4096)}[kind])
    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    res = runner.invoke(app, ["caption", "--model", str(model), str(tmp_path / "a.png")])
    assert res.exit_code == 2, res.output
    assert str(weights) in _error_line(res)


# ------------------------------------------------------------------------- extreme aspect ratios, pixel cap
@pytest.mark.parametrize("size", [(20000, 1), (1, 20000), (100000, 1)])
def test_extreme_aspect_ratio_is_centre_cropped_before_resizing(tmp_path, size):
    """A 20000x1 PNG used to be resized to 5,120,000 x 256 (gigabytes) before the centre crop."""
    import numpy as np
    from PIL import Image

    from modalbridge.vision.io import load_image
    from modalbridge.vision.preprocess import Preprocess

    w, h = size
    a = np.zeros((h, w, 3), np.uint8)  # black ends, a green middle wider than the 4:1 window that is kept
    if w > h:
        a[:, w // 2 - 2 * h - 1 : w // 2 + 2 * h + 1] = (0, 255, 0)
    else:
        a[h // 2 - 2 * w - 1 : h // 2 + 2 * w + 1, :] = (0, 255, 0)
    Image.fromarray(a).save(tmp_path / "thin.png")
    pre = Preprocess(256, (224, 224), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 3)
    x = pre([load_image(tmp_path / "thin.png")])
    assert x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(x[0, :, 112, 112], torch.tensor([0.0, 1.0, 0.0]), atol=0.02, rtol=0)
    # ordinary shapes are untouched: the HF rule (short side 256, centre crop 224) as before
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 300, 3), dtype=np.uint8))
    ref = img.resize((int(256 * 300 / 90), 256), resample=Image.Resampling.BICUBIC)
    left, top = (ref.width - 224) // 2, (256 - 224) // 2
    ref = torch.from_numpy(np.asarray(ref.crop((left, top, left + 224, top + 224)), np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(pre([img])[0], ref)


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width`` x ``height`` (no pixel data: only headers are read)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_api_images_over_the_pixel_cap_are_413_even_beyond_pillows_bomb_limit():
    from modalbridge.app import server as srv

    limits = srv.Limits()
    for w, h in [(6000, 5000), (100_000, 2_000)]:  # 30 MP: over our cap; 200 MP: Pillow refuses to open it
        with pytest.raises(srv.ApiError) as e:
            srv.check_image(_png_header(w, h), limits)
        assert e.value.status == 413
    srv.check_image(_png_header(100_000, 1), limits)  # few pixels: allowed (Preprocess crops it)


# ------------------------------------------------------------------------------------ API: 400, never 500
@pytest.mark.parametrize("body", [
    b'{"text": "\\ud800 a dress"}',  # a lone surrogate, legal in JSON
    b"[" * 5000 + b"]" * 5000,  # 10 KB of nesting: RecursionError inside json.loads
    b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}",
])
def test_api_draw_hostile_json_is_400(body):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from modalbridge.app import server as srv

    api = FastAPI()
    srv.add_api(api, srv.Services(None, None))
    r = TestClient(api).post("/api/draw", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and "Traceback" not in r.text


# ------------------------------------------------------------------ train: bad values are exit 2, no empty run dir
@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1", "optim.lr"), ("data.batch_size=0", "data.batch_size"), ("trainer.devices=0", "trainer.devices"),
    ("trainer.max_epochs=-3", "trainer.max_epochs"), ("data.n_train=0", "n_train"), ("seed=-1", "seed"),
    ("logger.backends=[nosuch]", "unknown logger"), ("trainer.accelerator=tpu", "cannot build the trainer"),
])
def test_train_bad_values_are_one_error_and_leave_no_run_dir(tmp_path, override, key):
    root = tmp_path / "runs"
    res = runner.invoke(app, ["train", str(TOY), f"run_root={root}", *FAST, override])
    assert res.exit_code == 2, res.output
    assert key in _error_line(res)
    assert not root.exists() or not any(root.iterdir()), list(root.rglob("*"))


def test_train_unwritable_run_root_is_one_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    res = runner.invoke(app, ["train", str(TOY), f"run_root={blocker}", *FAST])
    assert res.exit_code == 2, res.output
    assert "cannot create the run directory" in _error_line(res) and str(blocker) in _error_line(res)


def test_training_without_a_step_exports_nothing(tmp_path, monkeypatch):
    from modalbridge.errors import UserError
    from modalbridge.training import toy

    empty = torch.utils.data.TensorDataset(torch.zeros(0, 8), torch.zeros(0))
    monkeypatch.setattr(toy.ToyData, "train_dataloader", lambda self: batching.make_loader(empty, 4, True, 0))
    with pytest.raises(UserError, match="no optimizer step"):
        _train(tmp_path / "runs", "trainer.max_epochs=1")
    assert not any((tmp_path / "runs").iterdir())


# ------------------------------------------------------------------------------ warnings: one line each
def test_console_warnings_are_one_warning_line(tmp_path, monkeypatch, capfd):
    """Library warnings (Lightning here) and our own reach the console as ``warning: ...``, no source lines."""
    import re
    import sys
    import warnings

    from modalbridge import cli

    argv = ["modalbridge", "train", str(TOY), f"run_root={tmp_path}", *FAST, "trainer.max_epochs=1",
            "trainer.log_every_n_steps=50"]  # 2 batches < 50: Lightning warns about the logging interval
    monkeypatch.setattr(sys, "argv", argv)
    with warnings.catch_warnings():  # restores warnings.showwarning afterwards
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        warnings.warn("a library\n  says   this", UserWarning, stacklevel=1)
    assert exit_.value.code == 0
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "warn" in line.lower()]
    assert "warning: a library says this" in lines
    assert any("log_every_n_steps" in line for line in lines), err
    assert all(line.startswith("warning: ") for line in lines), err
    assert not re.search(r"\.py:\d+", err), err


# ------------------------------------------------------------------------------------ draw: text and seed
def test_slug_keeps_different_texts_apart():
    from modalbridge.render import slug

    assert slug("a red dress") == "a-red-dress"  # plain lowercase ASCII words: unchanged names
    stems = {slug(t) for t in ["连衣裙", "платье", "فستان", "A red dress", "a red dress!", "x" * 50, "x" * 51]}
    assert len(stems) == 7 and all(s.isascii() for s in stems)


def test_draw_non_latin_prompts_same_seed_write_distinct_files(tmp_path):
    from PIL import Image

    from modalbridge.render import save_drawing
    from modalbridge.t2i.pipeline import Drawing

    images = []
    for text in ["连衣裙", "платье", "فستان"]:  # same seed: all three used to write drawing-0-0.png
        d = Drawing(text=text, images=[Image.new("RGB", (32, 32))], classes=[], objects=[], seed=0, truncation=0.5)
        images += save_drawing(d, tmp_path)["images"]
    assert len(set(images)) == 3 and all(Path(p).is_file() for p in images)


def test_draw_undecodable_argv_bytes_and_huge_seed(tmp_path):
    # $'\xff a dress' arrives as '\udcff a dress' (PEP 383); printing or encoding it used to raise (exit 1)
    import json

    res = runner.invoke(app, ["draw", "\udcff a dress", "--n", "1", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["text"] == "a dress"  # lone surrogates are cleaned like control characters
    res = runner.invoke(app, ["draw", "a dress", "--seed", "99999999999999999999", "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "seed" in _error_line(res)


def test_text_encoder_with_pickled_code_is_refused_not_run(tmp_path):
    """A Hugging Face directory whose pytorch_model.bin holds code: one error line, the code never runs."""
    import os
    import pickle

    from tiny import make_tiny_encoder

    enc = make_tiny_encoder(tmp_path / "enc")
    (enc / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (enc / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Evil()}))
    from tiny import make_tiny_sentences

    from modalbridge.errors import UserError
    from modalbridge.text.encoders import load_text_encoder

    with pytest.raises(UserError, match="refused to load the text encoder"):
        load_text_encoder(str(enc))
    data = make_tiny_sentences(tmp_path / "sent", n=20)
    r = CliRunner().invoke(app, ["extract", "--data", str(data), "--encoder", str(enc)])
    assert r.exit_code == 2 and r.stderr.startswith("error: refused to load the text encoder"), r.stderr
    assert not marker.exists()


def test_train_console_has_no_lightning_banners(tmp_path):
    """Lightning's INFO banners ("GPU available", tips, "`Trainer.fit` stopped") stay off the console."""
    import subprocess
    import sys

    toy = Path(__file__).resolve().parent.parent / "configs" / "test" / "toy.yaml"
    r = subprocess.run([sys.executable, "-m", "modalbridge", "train", str(toy), f"run_root={tmp_path}",
                        "trainer.progress=false", "trainer.max_epochs=1", "logger.backends=[csv]"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "GPU available" not in r.stderr and "Trainer.fit" not in r.stderr and "Tip" not in r.stderr
    assert "run dir:" in r.stdout
