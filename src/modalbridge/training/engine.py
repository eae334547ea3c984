"""Config-driven training on Lightning: run directories, checkpoints, loggers, resume, init_from, DDP.

``modalbridge train CONFIG.yaml key=value ...`` resolves a :class:`RunConfig` (defaults <- YAML <- overrides),
builds the task named by ``task:`` from the ``TASKS`` registry and runs a Lightning ``Trainer`` in
``runs/<name>/<timestamp>/``:

    config.yaml            resolved config (also written into the exported model); config.N.yaml: earlier stages'
                           configs, kept when a --resume with overrides changed it
    checkpoints/           best.ckpt (by checkpoint.monitor), last.ckpt (every epoch), epoch=N.ckpt every N epochs
    logs/csv, logs/tensorboard   (+ MLflow in <run_root>/mlflow.db or W&B offline files when selected)
    model/                 the best weights exported as a model directory (config.json + model.safetensors)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from modalbridge import checkpoint as ckpt
from modalbridge.config import from_dict, merge, parse_overrides, read_yaml, save_yaml, to_dict
from modalbridge.errors import UserError
from modalbridge.files import atomic_write_bytes
from modalbridge.registry import TASKS
from modalbridge.training.resume import epoch_seed_callback, last_checkpoint_callback, load_training_checkpoint

RUN_DIR_ENV = "MODALBRIDGE_RUN_DIR"  # rank 0 picks the run dir; DDP workers started by Lightning inherit it


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: Literal["32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32"
    gradient_clip_val: float = 0.0
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    progress: bool = True
    deterministic: bool = False


@dataclass
class CheckpointConfig:
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    every_n_epochs: int = 0  # 0: only best and last
    early_stopping_patience: int = 0  # 0: off


@dataclass
class LoggerConfig:
    backends: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    mlflow_tracking_uri: str | None = None  # default: sqlite:///<run_root>/mlflow.db
    wandb_project: str = "modalbridge"


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    scheduler: Literal["none", "cosine"] = "none"
    warmup_steps: int = 0


@dataclass
class RunConfig:
    task: str = ""
    name: str = ""
    seed: int = 0
    run_root: str = "runs"
    init_from: str | None = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: Any = field(default_factory=dict)  # the task's DataConfig
    model: Any = field(default_factory=dict)  # the task's ModelConfig


def resolve_config(yaml_path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- YAML <- overrides; ``data``/``model`` are typed by the task's config classes."""
    raw = read_yaml(yaml_path) if yaml_path is not None else {}
    raw = merge(raw, parse_overrides(overrides or []))
    task_name = raw.get("task")
    if not task_name:
        raise UserError("config has no 'task' (known tasks: " + ", ".join(sorted(TASKS)) + ")")
    task_cls = TASKS.get_entry(str(task_name))
    data, model = raw.pop("data", {}) or {}, raw.pop("model", {}) or {}
    cfg = from_dict(RunConfig, raw)
    cfg.data = from_dict(task_cls.DataConfig, data, prefix="data.")
    cfg.model = from_dict(task_cls.ModelConfig, model, prefix="model.")
    cfg.name = cfg.name or cfg.task
    check_values(cfg)
    return cfg


def check_values(cfg: RunConfig) -> None:
    """Ranges the types cannot express; a bad value is a UserError naming its key, before any run dir exists."""
    import math

    t, o, c = cfg.trainer, cfg.optim, cfg.checkpoint
    rules = [
        ("trainer.max_epochs", t.max_epochs, t.max_epochs >= 1, ">= 1"),
        ("trainer.devices", t.devices, t.devices >= 1, ">= 1"),
        ("trainer.num_nodes", t.num_nodes, t.num_nodes >= 1, ">= 1"),
        ("trainer.accumulate_grad_batches", t.accumulate_grad_batches, t.accumulate_grad_batches >= 1, ">= 1"),
        ("trainer.log_every_n_steps", t.log_every_n_steps, t.log_every_n_steps >= 1, ">= 1"),
        ("trainer.check_val_every_n_epoch", t.check_val_every_n_epoch, t.check_val_every_n_epoch >= 1, ">= 1"),
        ("trainer.gradient_clip_val", t.gradient_clip_val, t.gradient_clip_val >= 0, ">= 0"),
        ("trainer.limit_train_batches", t.limit_train_batches, t.limit_train_batches > 0, "> 0"),
        ("trainer.limit_val_batches", t.limit_val_batches, t.limit_val_batches >= 0, ">= 0"),
        ("optim.lr", o.lr, math.isfinite(o.lr) and o.lr >= 0, "a finite number >= 0"),
        ("optim.weight_decay", o.weight_decay, math.isfinite(o.weight_decay) and o.weight_decay >= 0, ">= 0"),
        ("optim.momentum", o.momentum, 0 <= o.momentum < 1, "in [0, 1)"),
        ("optim.betas", o.betas, len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "two numbers in [0, 1)"),
        ("optim.warmup_steps", o.warmup_steps, o.warmup_steps >= 0, ">= 0"),
        ("checkpoint.every_n_epochs", c.every_n_epochs, c.every_n_epochs >= 0, ">= 0 (0: off)"),
        ("checkpoint.early_stopping_patience", c.early_stopping_patience, c.early_stopping_patience >= 0,
         ">= 0 (0: off)"),
        ("seed", cfg.seed, 0 <= cfg.seed <= 2**32 - 1, "in 0..2**32-1"),
    ]
    for name in ("batch_size", "extract_batch_size"):  # every task's loaders
        value = getattr(cfg.data, name, None)
        if isinstance(value, int):
            rules.append((f"data.{name}", value, value >= 1, ">= 1"))
    value = getattr(cfg.data, "num_workers", None)
    if isinstance(value, int):
        rules.append(("data.num_workers", value, value >= 0, ">= 0"))
    for key, value, ok, want in rules:
        if not ok:
            raise UserError(f"config key '{key}' must be {want}, got {value!r}")


def new_run_dir(cfg: RunConfig) -> Path:
    if os.environ.get(RUN_DIR_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(os.environ[RUN_DIR_ENV])
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.run_root) / cfg.name / stamp
    run_dir, i = base, 1
    while run_dir.exists():
        run_dir, i = base.with_name(f"{stamp}-{i}"), i + 1
    try:
        run_dir.mkdir(parents=True)
        probe = run_dir / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot create the run directory {run_dir} (run_root={cfg.run_root}): "
                        f"{e.strerror or type(e).__name__}") from None
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    return run_dir


def _loggers(cfg: RunConfig, run_dir: Path, resumed_epoch: int | None = None) -> list:
    from lightning.pytorch import loggers as L

    out = []
    for name in cfg.logger.backends:
        if name == "csv":
            out.append(L.CSVLogger(run_dir / "logs", name="csv", version=""))
            if resumed_epoch is not None:
                _keep_csv_history(out[-1], resumed_epoch)
        elif name == "tensorboard":
            out.append(L.TensorBoardLogger(run_dir / "logs", name="tensorboard", version="", default_hp_metric=False))
        elif name == "mlflow":
            if not _has("mlflow"):
                raise UserError("logger 'mlflow' needs the mlflow package: pip install 'modalbridge[track]'")
            uri = cfg.logger.mlflow_tracking_uri or f"sqlite:///{Path(cfg.run_root).resolve()}/mlflow.db"
            out.append(L.MLFlowLogger(experiment_name=cfg.name, tracking_uri=uri, run_name=run_dir.name))
        elif name == "wandb":
            if not _has("wandb"):
                raise UserError("logger 'wandb' needs the wandb package: pip install 'modalbridge[track]'")
            out.append(L.WandbLogger(project=cfg.logger.wandb_project, save_dir=str(run_dir), offline=True))
        else:
            raise UserError(f"unknown logger '{name}' (known: csv, tensorboard, mlflow, wandb)")
    return out


def _keep_csv_history(logger, resumed_epoch: int) -> None:
    """On resume, keep ``metrics.csv`` rows of epochs up to the checkpoint's (Lightning's CSV writer deletes the file
    when it opens); rows of later, unfinished epochs go, as the resumed run logs them again."""
    import csv
    import warnings

    path = Path(logger.log_dir) / "metrics.csv"
    if int(os.environ.get("LOCAL_RANK", "0")) != 0 or not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        keys, rows = sorted(reader.fieldnames or []), list(reader)
    rows = [r for r in rows if not r.get("epoch") or int(float(r["epoch"])) <= resumed_epoch]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted")
        writer = logger.experiment  # opening the writer deletes metrics.csv
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=keys)
        out.writeheader()
        out.writerows(rows)
    writer.metrics_keys = keys  # later rows are appended (new columns rewrite the header)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _callbacks(cfg: RunConfig, run_dir: Path) -> list:
    from lightning.pytorch import callbacks as C

    c = cfg.checkpoint
    out = [
        epoch_seed_callback(cfg.seed),
        C.ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="best", monitor=c.monitor, mode=c.mode, save_last=False,
            save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False,
        ),
        # Not save_last=True on the monitored callback: Lightning writes last.ckpt only when that callback saves,
        # i.e. on improvement, so last.ckpt would be the best epoch and --resume would redo epochs.
        last_checkpoint_callback(run_dir / "checkpoints"),
    ]
    if c.every_n_epochs > 0:
        out.append(C.ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="epoch={epoch}", every_n_epochs=c.every_n_epochs,
            save_top_k=-1, auto_insert_metric_name=False,
        ))
    if c.early_stopping_patience > 0:
        out.append(C.EarlyStopping(monitor=c.monitor, mode=c.mode, patience=c.early_stopping_patience))
    if cfg.trainer.progress:
        out.append(C.TQDMProgressBar(refresh_rate=max(1, cfg.trainer.log_every_n_steps)))
    return out


def init_weights_from(module: torch.nn.Module, source: str | Path) -> None:
    """Load a model directory's (or a run dir's exported ``model/``) weights into ``module`` (pretrain -> fine-tune)."""
    source = Path(source)
    model_dir = source / "model" if (source / "model" / ckpt.CONFIG_NAME).is_file() else source
    ckpt.read_meta(model_dir)
    ckpt.load_into(module, ckpt.load_state_dict(model_dir / ckpt.WEIGHTS_NAME), model_dir)


def train(cfg: RunConfig, resume: str | Path | None = None) -> Path:
    """Train ``cfg``; returns the run directory. ``resume`` continues a run dir from its ``last.ckpt``."""
    task = TASKS.get_entry(cfg.task)(cfg)
    if resume is not None:
        run_dir = Path(resume)
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise UserError(f"cannot resume: {last} not found")
        resumed_epoch = int(load_training_checkpoint(last)["epoch"])  # checked before Lightning touches it
        os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    else:
        run_dir = new_run_dir(cfg)
        last, resumed_epoch = None, None
    try:
        trainer, module = _fit(cfg, task, run_dir, last, resumed_epoch)
    except Exception:
        if last is None and not any((run_dir / "checkpoints").glob("*.ckpt")):
            _remove_run_dir(run_dir, Path(cfg.run_root))  # a failed config leaves no empty run dir behind
        raise
    if trainer.global_step == 0 and last is None and not trainer.interrupted:
        _remove_run_dir(run_dir, Path(cfg.run_root))
        raise UserError("training took no optimizer step (is the training set empty?); no model was exported")
    if trainer.is_global_zero:
        export_best(trainer, module, task, cfg, run_dir)
    return run_dir


def earlier_configs(run_dir: Path) -> list[Path]:
    """The earlier stages' configs of a run dir (``config.1.yaml``, ``config.2.yaml``, ...), in order."""
    numbered = [p for p in Path(run_dir).glob("config.*.yaml") if p.stem.split(".")[1].isdigit()]
    return sorted(numbered, key=lambda p: int(p.stem.split(".")[1]))


def keep_earlier_config(cfg: RunConfig, run_dir: Path) -> Path | None:
    """Before a resume with overrides rewrites ``config.yaml``, keep the earlier one as ``config.<n>.yaml`` (n = 1, 2,
    ... for the first, second ... piece) when it differs, so every piece of a multi-stage run stays on record.
    Returns the kept file, or None when the config did not change."""
    current = run_dir / "config.yaml"
    if not current.is_file() or read_yaml(current) == yaml.safe_load(yaml.safe_dump(to_dict(cfg))):
        return None
    kept = run_dir / f"config.{len(earlier_configs(run_dir)) + 1}.yaml"
    atomic_write_bytes(kept, current.read_bytes())  # a copy: config.yaml stays until the new one replaces it
    return kept


def _remove_run_dir(run_dir: Path, run_root: Path) -> None:
    import shutil

    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # <run_root>/<name>/ too, when this run was its only one
        if run_dir.parent != run_root and not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()


def _fit(cfg: RunConfig, task, run_dir: Path, last: Path | None, resumed_epoch: int | None):
    """Build the module, data and Lightning trainer and fit; returns (trainer, module)."""
    import lightning.pytorch as pl
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        if last is not None:
            keep_earlier_config(cfg, run_dir)
        save_yaml(cfg, run_dir / "config.yaml")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = task.build_module()
    if cfg.init_from and last is None:
        init_weights_from(module.model, cfg.init_from)
    datamodule = task.build_datamodule()
    t = cfg.trainer
    import logging

    for name in ("lightning.pytorch", "lightning.fabric"):  # no "GPU available" / tip banners on the console
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        trainer = pl.Trainer(
            default_root_dir=run_dir, max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices,
            strategy=t.strategy, num_nodes=t.num_nodes, precision=t.precision,
            gradient_clip_val=t.gradient_clip_val or None, accumulate_grad_batches=t.accumulate_grad_batches,
            log_every_n_steps=t.log_every_n_steps, check_val_every_n_epoch=t.check_val_every_n_epoch,
            limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
            logger=_loggers(cfg, run_dir, resumed_epoch), callbacks=_callbacks(cfg, run_dir),
            enable_progress_bar=t.progress, enable_model_summary=False, deterministic=t.deterministic,
            use_distributed_sampler=False,
        )
    except (ValueError, RuntimeError, TypeError, ImportError, MisconfigurationException) as e:
        # bad accelerator/precision/strategy combinations, or an accelerator this machine lacks (gpu, tpu)
        raise UserError(f"cannot build the trainer: {str(e).splitlines()[0]}") from None
    trainer.fit(module, datamodule=datamodule, ckpt_path=last, weights_only=True)
    return trainer, module


def export_best(trainer, module, task, cfg: RunConfig, run_dir: Path) -> Path:
    """Write the best checkpoint's model weights as ``run_dir/model`` (a model directory).

    ``metrics.json``: plain keys are the last epoch's values (``last/epoch``), ``best/<monitor>`` is the best score
    (``best/epoch``), ``weights/epoch`` is the epoch of the exported weights; epochs count from 0 as in checkpoints/.
    """
    cb = trainer.checkpoint_callback
    best = getattr(cb, "best_model_path", "") if cb is not None else ""
    last_epoch = max(0, trainer.current_epoch - 1)  # current_epoch counts completed epochs once fit returns
    epochs = {"last/epoch": last_epoch, "weights/epoch": last_epoch}
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        epochs["best/epoch"] = epochs["weights/epoch"] = int(state["epoch"])
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    if cb is not None and cb.best_model_score is not None:
        metrics["best/" + cfg.checkpoint.monitor] = float(cb.best_model_score)
    metrics.update(epochs)
    return task.export(module, run_dir / "model", metrics=metrics, run_config=to_dict(cfg))

