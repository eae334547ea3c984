"""The training engine on the toy task: run dirs, resume == uninterrupted, init_from, loggers, DDP."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from modalbridge import checkpoint
from modalbridge.errors import UserError
from modalbridge.registry import load_builtins
from modalbridge.training import engine

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "test" / "toy.yaml"
QUIET = ["trainer.progress=false", "logger.backends=[csv]"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    load_builtins()
    monkeypatch.delenv(engine.RUN_DIR_ENV, raising=False)


def _train(tmp_path, *overrides, resume=None):
    cfg = engine.resolve_config(TOY, [f"run_root={tmp_path}", *QUIET, *overrides])
    return engine.train(cfg, resume=resume)


def _weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_run_dir_layout_and_resolved_config(tmp_path):
    run = _train(tmp_path, "trainer.max_epochs=2", "optim.lr=0.02")
    assert run.parent.parent == tmp_path and run.parent.name == "toy"
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["optim"]["lr"] == 0.02 and resolved["trainer"]["max_epochs"] == 2
    assert resolved["model"]["hidden"] == 16  # task defaults are resolved in, too
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"best.ckpt", "last.ckpt", "epoch=1.ckpt"}
    assert (run / "logs" / "csv" / "metrics.csv").is_file()
    model = checkpoint.load(run / "model")
    metrics = checkpoint.read_json_file(run / "model" / "metrics.json")
    assert "best/val/loss" in metrics
    meta = checkpoint.read_meta(run / "model")
    assert meta["extra"]["run_config"]["optim"]["lr"] == 0.02
    assert model.config.hidden == 16


def test_resume_equals_uninterrupted(tmp_path):
    straight = _train(tmp_path / "a", "trainer.max_epochs=4", "checkpoint.monitor=train/loss")
    first = _train(tmp_path / "b", "trainer.max_epochs=2", "checkpoint.monitor=train/loss")
    cfg = engine.resolve_config(first / "config.yaml", ["trainer.max_epochs=4"])
    resumed = engine.train(cfg, resume=first)
    assert resumed == first
    last_a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    last_b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert last_a.keys() == last_b.keys()
    for k in last_a:
        torch.testing.assert_close(last_a[k], last_b[k], rtol=0, atol=0, msg=k)
    # and the run really trained: weights moved away from a 2-epoch run's
    two_epochs = _train(tmp_path / "c", "trainer.max_epochs=2", "checkpoint.monitor=train/loss")
    mid = torch.load(two_epochs / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(not torch.equal(mid[k], last_a[k]) for k in mid)


def test_resume_with_overrides_keeps_the_earlier_config(tmp_path):
    """A multi-stage run (resumed with other settings) keeps every stage's resolved config: config.1.yaml, ..."""
    first = _train(tmp_path, "trainer.max_epochs=1", "checkpoint.monitor=train/loss")
    cfg = engine.resolve_config(first / "config.yaml", ["trainer.max_epochs=2", "optim.lr=5e-3"])
    engine.train(cfg, resume=first)
    kept = yaml.safe_load((first / "config.1.yaml").read_text())
    now = yaml.safe_load((first / "config.yaml").read_text())
    assert kept["trainer"]["max_epochs"] == 1 and kept["optim"]["lr"] != 5e-3
    assert now["trainer"]["max_epochs"] == 2 and now["optim"]["lr"] == 5e-3
    assert engine.keep_earlier_config(cfg, first) is None  # unchanged: no copy kept
    assert sorted(p.name for p in first.glob("config*.yaml")) == ["config.1.yaml", "config.yaml"]
    third = engine.resolve_config(first / "config.yaml", ["trainer.max_epochs=3"])
    assert engine.keep_earlier_config(third, first) == first / "config.2.yaml"


def test_resume_needs_last_checkpoint(tmp_path):
    cfg = engine.resolve_config(TOY, [f"run_root={tmp_path}", *QUIET])
    with pytest.raises(UserError, match="cannot resume"):
        engine.train(cfg, resume=tmp_path)


def test_init_from_copies_weights(tmp_path):
    pre = _train(tmp_path / "pre", "trainer.max_epochs=1")
    cfg = engine.resolve_config(TOY, [f"run_root={tmp_path / 'ft'}", *QUIET, f"init_from={pre}"])
    task = engine.TASKS.get_entry(cfg.task)(cfg)
    module = task.build_module()
    engine.init_weights_from(module.model, cfg.init_from)
    for k, v in _weights(pre).items():
        torch.testing.assert_close(module.model.state_dict()[k], v)
    with pytest.raises(UserError, match="do not match"):
        wide = engine.resolve_config(TOY, ["model.hidden=32"])
        engine.init_weights_from(engine.TASKS.get_entry("toy_regression")(wide).build_module().model, pre / "model")


def test_early_stopping_stops(tmp_path):
    # lr 0 => val loss never improves => stops after patience+1 epochs instead of 10
    run = _train(tmp_path, "trainer.max_epochs=10", "optim.lr=0.0", "checkpoint.early_stopping_patience=1")
    epochs = {int(r["epoch"]) for r in _csv_rows(run) if r.get("epoch")}
    assert max(epochs) < 9


def _csv_rows(run):
    import csv

    with open(run / "logs" / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_unknown_task_logger_and_keys(tmp_path):
    with pytest.raises(UserError, match="unknown task 'toy_regresion'.*did you mean 'toy_regression'"):
        engine.resolve_config(TOY, ["task=toy_regresion"])
    with pytest.raises(UserError, match="'data.n_trian'"):
        engine.resolve_config(TOY, ["data.n_trian=3"])
    with pytest.raises(UserError, match="unknown logger"):
        _train(tmp_path, "logger.backends=[nosuch]")


def test_tensorboard_and_mlflow_loggers(tmp_path):
    pytest.importorskip("mlflow")
    run = _train(tmp_path, "trainer.max_epochs=1", "logger.backends=[csv,tensorboard,mlflow]")
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlflow.db").stat().st_size > 0


def test_ddp_two_cpu_processes_equal_params(tmp_path):
    """`devices=2 strategy=ddp` on CPU (gloo): two processes, one optimizer step, identical parameters on both ranks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop(engine.RUN_DIR_ENV, None)
    cmd = [
        sys.executable, "-m", "modalbridge", "train", str(TOY), f"run_root={tmp_path}", *QUIET,
        "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
        "data.dump_params_per_rank=true", "data.batch_size=16",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "toy").iterdir()
    r0, r1 = load_file(str(run / "params_rank0.safetensors")), load_file(str(run / "params_rank1.safetensors"))
    init = engine.TASKS.get_entry("toy_regression")(engine.resolve_config(TOY, [])).build_module  # noqa: F841
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=k)
    torch.manual_seed(0)
    fresh = engine.resolve_config(TOY, [])
    assert fresh.seed == 0
    # one step was really taken: the final weights differ from the seeded initial weights
    import lightning.pytorch as pl

    pl.seed_everything(0, verbose=False)
    init_model = engine.TASKS.get_entry("toy_regression")(fresh).build_module().model
    assert any(not torch.equal(init_model.state_dict()[k], r0[k]) for k in r0)


def test_wandb_offline_logger(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = _train(tmp_path, "trainer.max_epochs=1", "logger.backends=[wandb]")
    assert list((run / "wandb").glob("offline-run-*")), list(run.iterdir())


def test_missing_tracking_package_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "_has", lambda module: False)
    with pytest.raises(UserError, match=r"needs the mlflow package: pip install 'modalbridge\[track\]'"):
        _train(tmp_path, "logger.backends=[mlflow]")


def test_bf16_mixed_precision_on_cpu(tmp_path):
    run = _train(tmp_path, "trainer.max_epochs=1", "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=0.5")
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["trainer"]["precision"] == "bf16-mixed"
    assert all(v.dtype == torch.float32 for v in _weights(run).values())  # master weights stay fp32
    with pytest.raises(UserError, match="precision"):
        engine.resolve_config(TOY, ["trainer.precision=8"])


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_is_fused_on_cpu_and_steps_like_foreach(name):
    """configure_optimizers picks Adam's fused kernel for CPU parameters (param groups too); its update equals the
    ``_foreach`` one to float rounding over a few steps with weight decay; an integer tensor keeps the default."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from modalbridge.training.task import BridgeModule, _fusable

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = nets[0][0].weight.detach().clone()
    cfg = engine.OptimConfig(name=name, lr=1e-2, weight_decay=0.1)
    fused = BridgeModule(nets[0], cfg).configure_optimizers()
    assert fused.defaults["fused"] is True
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    plain = cls(nets[1].parameters(), lr=1e-2, weight_decay=0.1, foreach=True)
    x = torch.randn(16, 5)
    for _ in range(3):
        for net, opt in zip(nets, (fused, plain), strict=True):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert (nets[0][0].weight - start).abs().min() > 1e-3  # every weight moved (3 steps of lr 1e-2)
    # under bf16-mixed (no loss scaler) the fused optimizer's gradients are clipped by the module itself
    module = BridgeModule(nets[0], cfg)
    module._trainer = SimpleNamespace(precision_plugin=MixedPrecision("bf16-mixed", "cpu"))
    for algorithm, limit in (("norm", 0.5), ("value", 0.01)):
        for p in nets[0].parameters():
            p.grad = torch.full_like(p, 3.0)
        module.configure_gradient_clipping(fused, limit, algorithm)
        grads = [p.grad for p in nets[0].parameters()]
        if algorithm == "norm":
            assert abs(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))) - limit) < 1e-5
        else:
            assert all(float(g.abs().max()) <= limit for g in grads)
    groups = [{"params": list(nets[0][0].parameters())}, {"params": list(nets[0][2].parameters()), "lr": 1e-3}]
    assert _fusable(groups) is True
    assert _fusable([torch.zeros(3, dtype=torch.long)]) is None


@pytest.mark.slow
def test_kill_9_then_resume_equals_the_uninterrupted_run(tmp_path):
    """A real training process killed with SIGKILL mid-run, then ``train --resume``: same final weights as a run that
    was never interrupted (last.ckpt is written beside and renamed, so the kill never leaves a torn file)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    epochs = ["trainer.max_epochs=16", "checkpoint.monitor=train/loss", "checkpoint.every_n_epochs=0"]
    straight = _train(tmp_path / "a", *epochs)
    # 20 ms a step (8 steps an epoch): the kill lands mid-run however fast the machine is; the delay is no weight
    cmd = [sys.executable, "-m", "modalbridge", "train", str(TOY), f"run_root={tmp_path / 'b'}", *QUIET, *epochs,
           "data.step_delay_s=0.02"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "b").rglob("checkpoints/last.ckpt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # somewhere in the middle of later epochs (a checkpoint write may be under way)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (last,) = list((tmp_path / "b").rglob("checkpoints/last.ckpt"))
    run = last.parent.parent
    killed_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert killed_at < 15, "the process finished before the kill; the test needs a longer run"
    r = subprocess.run([sys.executable, "-m", "modalbridge", "train", "--resume", str(run)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert not list(run.glob("checkpoints/*.tmp"))


def test_length_grouped_sampler_keeps_the_epoch_and_cuts_padding():
    from modalbridge.training.batching import EpochSampler

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 40, (1000,), generator=g).tolist()
    plain = EpochSampler(1000, seed=1)
    grouped = EpochSampler(1000, seed=1, lengths=lengths, group=50 * 8)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        grouped.set_epoch(epoch)
        a, b = list(plain), list(grouped)
        assert sorted(b) == list(range(1000)) and b == list(grouped)  # every item once, reproducible
        assert b != a

        def padding(order):  # padded slots in batches of 8
            return sum(8 * max(lengths[i] for i in order[k:k + 8]) - sum(lengths[i] for i in order[k:k + 8])
                       for k in range(0, 1000, 8))

        assert padding(b) < 0.2 * padding(a)
    ranks = [list(EpochSampler(1000, seed=1, rank=r, world=2, lengths=lengths, group=800)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(1000))


def test_pad_is_the_one_collate_for_states_and_ids():
    from modalbridge.training.batching import pad

    states, mask = pad([torch.ones(2, 3), torch.full((4, 3), 2.0)])
    assert states.shape == (2, 4, 3) and mask.tolist() == [[True, True, False, False], [True] * 4]
    assert states[0, 2:].abs().sum() == 0 and torch.equal(states[1], torch.full((4, 3), 2.0))
    ids, _ = pad([torch.tensor([5, 6], dtype=torch.long), torch.tensor([], dtype=torch.long)], -100)
    assert ids.dtype == torch.long and ids.tolist() == [[5, 6], [-100, -100]]
    with pytest.raises(ValueError):
        pad([])
