"""A tiny regression task: the engine's own smoke test (resume, DDP, loggers) in a second of CPU."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from modalbridge.registry import MODELS, TASKS
from modalbridge.training.batching import make_loader
from modalbridge.training.task import BridgeModule, Task


@dataclass
class ToyModelConfig:
    dim: int = 8
    hidden: int = 16
    dropout: float = 0.1


@MODELS.register("toy_mlp")
class ToyMLP(nn.Module):
    model_type = "toy_mlp"
    config_class = ToyModelConfig

    def __init__(self, config: ToyModelConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.dim, config.hidden), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(config.hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B,)
        return self.net(x).squeeze(-1)


@dataclass
class ToyDataConfig:
    n_train: int = 256
    n_val: int = 64
    batch_size: int = 32
    noise: float = 0.1
    dump_params_per_rank: bool = False  # DDP test: every rank writes its final parameters
    step_delay_s: float = 0.0  # kill/resume test: a slow step, so a kill lands mid-run on any machine

    def __post_init__(self):
        if self.n_train < 1 or self.n_val < 0:
            raise ValueError(f"n_train must be >= 1 and n_val >= 0, got {self.n_train} and {self.n_val}")


class ToyModule(BridgeModule):
    def __init__(self, model, optim_cfg, dump_params: bool, step_delay_s: float = 0.0):
        super().__init__(model, optim_cfg)
        self.dump_params, self.step_delay_s = dump_params, step_delay_s

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.step_delay_s:
            time.sleep(self.step_delay_s)  # touches no random state: the weights are those of an undelayed run
        loss = nn.functional.mse_loss(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.model(x), y), sync_dist=True)

    def on_train_end(self):
        if self.dump_params:
            from safetensors.torch import save_file

            path = Path(self.trainer.default_root_dir) / f"params_rank{self.global_rank}.safetensors"
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(path))


class ToyData(pl.LightningDataModule):
    def __init__(self, cfg: ToyDataConfig, dim: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(dim, generator=g)
        n = cfg.n_train + cfg.n_val
        x = torch.randn(n, dim, generator=g)
        y = x @ w + cfg.noise * torch.randn(n, generator=g)
        self.train_set = torch.utils.data.TensorDataset(x[: cfg.n_train], y[: cfg.n_train])
        self.val_set = torch.utils.data.TensorDataset(x[cfg.n_train :], y[cfg.n_train :])
        self.cfg, self.seed = cfg, seed

    def train_dataloader(self):
        return make_loader(self.train_set, self.cfg.batch_size, True, self.seed, self.trainer)

    def val_dataloader(self):
        return make_loader(self.val_set, self.cfg.batch_size, False, self.seed, self.trainer)


@TASKS.register("toy_regression")
class ToyTask(Task):
    DataConfig = ToyDataConfig
    ModelConfig = ToyModelConfig

    def build_module(self):
        d = self.cfg.data
        return ToyModule(ToyMLP(self.cfg.model), self.cfg.optim, d.dump_params_per_rank, d.step_delay_s)

    def build_datamodule(self):
        return ToyData(self.cfg.data, self.cfg.model.dim, self.cfg.seed)
