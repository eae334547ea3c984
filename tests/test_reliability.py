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
from modalbridge.training import engine

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
