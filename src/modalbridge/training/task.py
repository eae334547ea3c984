"""Base classes every training task builds on: a task makes a LightningModule, a DataModule and exports a model."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import torch

from modalbridge import checkpoint as ckpt


class BridgeModule(pl.LightningModule):
    """Wraps a registered ``model`` (what gets exported) and builds the optimizer from ``OptimConfig``."""

    def __init__(self, model: torch.nn.Module, optim_cfg):
        super().__init__()
        self.model = model
        self.optim_cfg = optim_cfg

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def training_step(self, batch, batch_idx):
        """Default step for models whose output carries its loss: ``model(*batch).loss``, logged as train/loss."""
        out = self.model(*batch)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(batch[0]))
        return out.loss

    def _loss_scaler(self):
        """The precision plugin's gradient scaler: set under ``16-mixed`` only (None for float32 and bf16)."""
        return getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Lightning's, except that a fused optimizer without a loss scaler (bf16 mixed precision) is clipped by the
        precision plugin's own norm/value clip: Lightning's mixed-precision plugin refuses any fused optimizer, for fear
        of a scaler that bf16 does not have (tested)."""
        if gradient_clip_val and self._loss_scaler() is None and getattr(
                optimizer, "_step_supports_amp_scaling", False):
            plugin = self.trainer.precision_plugin
            clip = plugin.clip_grad_by_value if gradient_clip_algorithm == "value" else plugin.clip_grad_by_norm
            clip(optimizer, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        o = self.optim_cfg
        params = self.trainable_parameters()
        if o.name == "sgd":
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
            # a loss scaler (16-mixed) and a fused step cannot be clipped between them: keep the default there
            scaled = self._loss_scaler() is not None
            fused = None if scaled and self.trainer.gradient_clip_val else _fusable(params)
            opt = cls(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, fused=fused)
        if o.scheduler == "none" and o.warmup_steps == 0:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))

        def factor(step: int) -> float:
            if step < o.warmup_steps:
                return (step + 1) / o.warmup_steps
            if o.scheduler == "cosine":
                t = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
                return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _fusable(params: list) -> bool | None:
    """Adam's fused kernel (one pass over each parameter instead of ~10 ``_foreach`` passes; the same update to float
    rounding, tested) where every parameter is a floating tensor on one device type that has it; else the default.
    ``params``: tensors or param-group dicts."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    devices = {t.device.type for t in tensors}
    ok = len(devices) == 1 and devices <= {"cpu", "cuda"} and all(t.is_floating_point() for t in tensors)
    return True if ok else None


class Task:
    """A trainable job picked by ``task:`` in a config. Subclasses set the two config classes."""

    DataConfig: type
    ModelConfig: type

    def __init__(self, cfg):
        self.cfg = cfg

    def build_module(self) -> BridgeModule:
        raise NotImplementedError

    def build_datamodule(self) -> pl.LightningDataModule:
        raise NotImplementedError

    def export(self, module: BridgeModule, path: Path, metrics: dict, run_config: dict) -> Path:
        return ckpt.save(module.model, path, metrics=metrics, extra={"run_config": run_config})
