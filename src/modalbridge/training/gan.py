"""Training the small class-conditional GAN: BigGAN-deep generator vs. a projection discriminator.

The generator is ``generators/biggan.py``'s ``BigGAN`` (model type ``biggan_deep``) at a small width, so the
exported model has exactly the interface of the published BigGAN-deep and ``modalbridge draw`` runs on it:
``G(z (B, Z), class_embedding (B, E), truncation) -> (B, 3, H, W)`` in [-1, 1], ``G.class_embeddings`` (K, E).
The class embeddings are learned as the generator's own table.

Recipe (each piece cites its paper):
- the discriminator, its hinge losses and DiffAugment: :mod:`modalbridge.training.discriminator`;
- two time-scale update rule, Adam betas (0, 0.999), one D step per G step (SAGAN, https://arxiv.org/abs/1805.08318);
- exponential moving average of G's weights, the exported model (BigGAN, https://arxiv.org/abs/1809.11096);
- truncation trick at sampling time: z from a normal truncated to [-2, 2], scaled by ``truncation`` (BigGAN).

Notation: B batch, C image channels (3), H = W = resolution (32), K classes, Z noise dim, E class-embedding dim.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalbridge import assets, render
from modalbridge import checkpoint as ckpt
from modalbridge.config import from_dict, to_dict
from modalbridge.errors import UserError
from modalbridge.generators.biggan import BigGAN, BigGANConfig, truncated_noise
from modalbridge.registry import TASKS
from modalbridge.training.batching import make_loader
from modalbridge.training.discriminator import (
    DiscriminatorConfig,
    ProjectionDiscriminator,
    d_hinge_loss,
    diff_augment,
    g_hinge_loss,
)
from modalbridge.training.task import BridgeModule, Task


# ---------------------------------------------------------------------------------------------- EMA, sampling
@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for floating parameters; buffers are copied.

    One fused ``_foreach`` call per list instead of a kernel per tensor (timm's ModelEmaV3 does the same): on a GPU
    the small generator's step is bound by kernel launches.
    """
    e_params, m_params = list(ema.parameters()), [p.detach() for p in model.parameters()]
    if len(e_params) != len(m_params):
        raise ValueError("ema and model have different parameter lists")
    torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    e_bufs, m_bufs = list(ema.buffers()), list(model.buffers())
    if len(e_bufs) != len(m_bufs):
        raise ValueError("ema and model have different buffer lists")
    if e_bufs:
        torch._foreach_copy_(e_bufs, m_bufs)


@torch.no_grad()
def sample(generator: nn.Module, labels: torch.Tensor, truncation: float = 1.0, seed: int = 0,
           batch_size: int = 250) -> torch.Tensor:
    """Images ``(N, 3, H, W)`` in [-1, 1] for class ids ``labels`` (N,), reproducible from ``seed``."""
    z = truncated_noise(len(labels), generator.config.z_dim, truncation, seed).to(labels.device)  # (N, Z)
    emb = generator.class_embeddings  # (K, E)
    out = [generator(z[i : i + batch_size], emb[labels[i : i + batch_size]], truncation)
           for i in range(0, len(labels), batch_size)]
    return torch.cat(out).clamp(-1, 1)


def load_generator_config(model_cfg: GANModelConfig):
    """The generator's ``BigGANConfig``: ``BigGANConfig.small(...)`` with ``model.generator`` fields on top."""
    base = BigGANConfig.small(resolution=model_cfg.resolution, channel_width=model_cfg.g_channel_width,
                              num_classes=model_cfg.num_classes, out_channels=model_cfg.out_channels)
    return from_dict(BigGANConfig, {**to_dict(base), **model_cfg.generator}, prefix="model.generator.")


# ---------------------------------------------------------------------------------------------- training task
@dataclass
class GANDataConfig:
    dataset: Literal["fashion_mnist", "random"] = "fashion_mnist"  # random: tiny noise images (tests)
    batch_size: int = 64
    limit: int = 0  # use the first N training images (0: all)
    n_random: int = 64
    num_workers: int = 0


@dataclass
class GANModelConfig:
    resolution: int = 32  # 28x28 Fashion-MNIST is zero-padded (black) to this
    num_classes: int = 10
    g_channel_width: int = 16
    out_channels: int = 1  # 1: G learns gray (the data) and repeats it to RGB; 3: G learns RGB (gray_penalty)
    generator: dict = field(default_factory=dict)  # BigGANConfig overrides on top of BigGANConfig.small(...)
    d_channel_width: int = 32
    d_lr: float = 4e-4  # TTUR: D learns faster than G (optim.lr); optim.betas serve both
    n_dis: int = 1  # D steps per G step
    gray_penalty: float = 10.0  # weight of mean((rgb - gray)^2) in G's loss: gray data, RGB interface (0: off)
    max_minutes: float = 0.0  # stop (and export) after this much training wall time (0: no limit)
    ema_decay: float = 0.999
    ema_start: int = 500  # G steps before the EMA starts averaging (it copies G until then)
    sample_every: int = 500  # G steps between sample grids written to run_dir/samples (0: never)
    sample_truncation: float = 1.0
    standing_batches: int = 4  # batches per truncation slot for the exported standing statistics
    classes: list[str] = field(default_factory=list)  # class names, recorded in the exported model
    # --- recipe v2 (issue 12); the defaults keep the original recipe
    aux_weight: float = 0.0  # >0: D gets an auxiliary K-way head trained on real labels (weight aux_d_weight) and
    aux_d_weight: float = 1.0  # G a cross-entropy term on its fakes (weight aux_weight): projection + AC (TAC/P2GAN)
    balanced_labels: bool = False  # fake labels: every class equally often in each batch (shuffled)
    init_generator: str = ""  # warm start: G and its EMA start from this biggan_deep model dir / embedded name
    freeze_class_table: bool = False  # keep G's class-embedding table fixed (mappers trained on it stay exact)
    d_warmup_steps: int = 0  # D-only steps before G trains (a fresh D catching up with a warm-started G)
    max_g_steps: int = 0  # stop after this many G steps (0: epochs / max_minutes decide)
    lr_decay_from: int = 0  # >0: both learning rates fall linearly from this G step to 0 at max_g_steps (0: constant)
    snapshot_every: int = 0  # G steps between exported EMA snapshots in run_dir/snapshots/stepN (0: never)
    # --- recipe v3 (issue 12, a GPU run): a wider G from scratch on the same class table
    init_class_table: str = ""  # copy G's class-embedding table (E, K) from this biggan_deep model dir / name
    diffaugment: str = ""  # DiffAugment policy on every D input, e.g. "translation,cutout" ("" = off)


def lr_factor(step: int, decay_from: int, max_steps: int) -> float:
    """Learning-rate multiplier for the G step after ``step`` completed ones: 1 until ``decay_from`` (0: always 1),
    then linear down to 0 at ``max_steps`` (SN-GAN's schedule, Miyato et al. 2018, over the last stretch only)."""
    if not decay_from or step < decay_from:
        return 1.0
    return max(0.0, (max_steps - step) / (max_steps - decay_from))


class GANModule(BridgeModule):
    """``model`` is the EMA generator (what gets exported); ``generator`` and ``discriminator`` are trained."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, cfg):
        super().__init__(copy.deepcopy(generator).requires_grad_(False), cfg.optim)
        self.generator, self.discriminator = generator, discriminator
        self.mcfg = cfg.model
        self.automatic_optimization = False  # two optimizers, alternating steps
        self.register_buffer("g_steps", torch.zeros((), dtype=torch.long))  # in checkpoints: resume-exact EMA

    def configure_optimizers(self):
        betas = tuple(float(b) for b in self.optim_cfg.betas)
        g_params = [p for p in self.generator.parameters() if p.requires_grad]  # a frozen class table stays out
        g_opt = torch.optim.Adam(g_params, lr=self.optim_cfg.lr, betas=betas)
        d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=self.mcfg.d_lr, betas=betas)
        return [g_opt, d_opt]

    def _to_images(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 1, H, W) -> float (B, C, H, W) in [-1, 1], gray replicated to the generator's channels."""
        x = x.float().div(127.5).sub(1.0)
        return x.expand(-1, self.discriminator.config.in_channels, -1, -1)

    def _fake(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, self.generator.config.z_dim, device=self.device)  # (B, Z); truncation 1 in training
        k = self.mcfg.num_classes
        if self.mcfg.balanced_labels:  # each class n // K or n // K + 1 times, random order and random extras
            y = torch.cat([torch.randperm(k, device=self.device) for _ in range(-(-n // k))])[:n]
            y = y[torch.randperm(n, device=self.device)]
        else:
            y = torch.randint(0, k, (n,), device=self.device)  # (B,)
        return self.generator(z, self.generator.class_embeddings[y], 1.0), y  # (B, C, H, W)

    def training_step(self, batch, batch_idx):
        g_opt, d_opt = self.optimizers()
        f = lr_factor(int(self.g_steps), self.mcfg.lr_decay_from, self.mcfg.max_g_steps)  # from g_steps: resume-exact
        for opt, lr in ((g_opt, self.optim_cfg.lr), (d_opt, self.mcfg.d_lr)):
            for group in opt.param_groups:
                group["lr"] = lr * f
        real, labels = batch
        real = self._to_images(real)  # (B, C, H, W)
        b = real.shape[0]
        # --- discriminator step: hinge on real vs. (detached) fake
        with torch.no_grad():
            fake, fake_labels = self._fake(b)
        aux = self.mcfg.aux_weight > 0
        aug = self.mcfg.diffaugment
        real, fake = diff_augment(real, aug), diff_augment(fake, aug)
        if aux:
            d_real, real_logits = self.discriminator(real, labels, return_logits=True)  # (B,), (B, K)
        else:
            d_real = self.discriminator(real, labels)  # (B,)
        d_fake = self.discriminator(fake, fake_labels)  # (B,)
        d_loss = d_hinge_loss(d_real, d_fake)
        logs = {"train/d_real": d_real.mean(), "train/d_fake": d_fake.mean()}
        if aux:
            d_ce = F.cross_entropy(real_logits, labels)
            d_loss = d_loss + self.mcfg.aux_d_weight * d_ce
            logs["train/d_aux_ce"] = d_ce
        d_opt.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        d_opt.step()
        self.log_dict({"train/d_loss": d_loss, **logs}, prog_bar=True)
        self._d_steps = getattr(self, "_d_steps", 0) + 1
        if (batch_idx + 1) % self.mcfg.n_dis or self._d_steps <= self.mcfg.d_warmup_steps:
            return
        # --- generator step: D is frozen so no D gradients are computed
        self.discriminator.requires_grad_(False)
        fake, fake_labels = self._fake(b)
        seen = diff_augment(fake, aug)  # G is judged through the same augmentation as D was trained on
        if aux:
            g_scores, fake_logits = self.discriminator(seen, fake_labels, return_logits=True)
            g_ce = F.cross_entropy(fake_logits, fake_labels)
            g_loss = g_hinge_loss(g_scores) + self.mcfg.aux_weight * g_ce
            self.log("train/g_aux_ce", g_ce)
        else:
            g_loss = g_hinge_loss(self.discriminator(seen, fake_labels))
        if self.mcfg.gray_penalty and self.generator.config.out_channels > 1:
            # the data is gray replicated to RGB; a direct penalty removes colour faster than D's gradient does
            g_loss = g_loss + self.mcfg.gray_penalty * (fake - fake.mean(1, keepdim=True)).pow(2).mean()
        g_opt.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        g_opt.step()
        self.discriminator.requires_grad_(True)
        self.g_steps += 1
        step = int(self.g_steps)
        ema_update(self.model, self.generator, 0.0 if step <= self.mcfg.ema_start else self.mcfg.ema_decay)
        self.log("train/g_loss", g_loss, prog_bar=True)
        if self.mcfg.sample_every and step % self.mcfg.sample_every == 0 and self.trainer.is_global_zero:
            self.write_grid(Path(self.trainer.default_root_dir) / "samples" / f"step{step:06d}.png")
        if self.mcfg.snapshot_every and step % self.mcfg.snapshot_every == 0 and self.trainer.is_global_zero:
            self.write_snapshot(Path(self.trainer.default_root_dir) / "snapshots" / f"step{step:06d}")
        if self.mcfg.max_minutes and time.monotonic() - self._t0 > 60 * self.mcfg.max_minutes:
            self.trainer.should_stop = True  # the epoch ends here; its checkpoint and the export follow
        if self.mcfg.max_g_steps and step >= self.mcfg.max_g_steps:
            self.trainer.should_stop = True

    def write_snapshot(self, path: Path) -> None:
        """Export a copy of the EMA generator (with standing statistics) as a model dir, for later selection."""
        g = copy.deepcopy(self.model)
        g.update_standing_stats(batches=self.mcfg.standing_batches, batch_size=64, seed=0)
        ckpt.save(g, path, extra={"classes": list(self.mcfg.classes), "generator_steps": int(self.g_steps),
                                  "default_truncation": self.mcfg.sample_truncation})

    def on_train_start(self) -> None:
        self._t0 = time.monotonic()

    def write_grid(self, path: Path, per_class: int = 10) -> None:
        """A sample grid of the EMA generator: one row per class, fixed noise.

        Batch norms use the grid's own batch statistics (train mode): standing statistics are measured at export.
        """
        labels = torch.arange(self.mcfg.num_classes).repeat_interleave(per_class)
        was_training = self.model.training
        self.model.train()
        images = sample(self.model, labels.to(self.device), self.mcfg.sample_truncation, seed=0)
        self.model.train(was_training)
        save_grid(images.cpu(), per_class, path)


def save_grid(images: torch.Tensor, ncol: int, path: Path, pad: int = 2) -> None:
    """Write ``images`` (N, C, H, W) in [-1, 1] as a PNG grid with ``ncol`` columns, atomically."""
    from modalbridge.files import atomic_write_bytes

    atomic_write_bytes(path, render.png_bytes(render.grid(render.to_pil(images), ncol, pad)))


class GANData(pl.LightningDataModule):
    def __init__(self, cfg: GANDataConfig, resolution: int, num_classes: int, seed: int):
        super().__init__()
        self.cfg, self.resolution, self.num_classes, self.seed = cfg, resolution, num_classes, seed
        self.train_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.cfg.dataset == "random":
            g = torch.Generator().manual_seed(self.seed)
            images = torch.randint(0, 256, (self.cfg.n_random, 28, 28), generator=g, dtype=torch.uint8)
            labels = torch.randint(0, self.num_classes, (self.cfg.n_random,), generator=g)
        else:
            from modalbridge.vision import fashion_mnist

            x, y = fashion_mnist.load("train")
            n = self.cfg.limit or len(x)
            images, labels = torch.as_tensor(np.ascontiguousarray(x[:n])), torch.as_tensor(y[:n])
        pad = self.resolution - images.shape[-1]
        if pad < 0:
            raise UserError(f"model.resolution {self.resolution} is smaller than the 28x28 images")
        images = F.pad(images, (pad // 2, pad - pad // 2) * 2).unsqueeze(1)  # (N, 1, H, W) uint8, black padding
        self.train_set = torch.utils.data.TensorDataset(images, labels)

    def train_dataloader(self):
        return make_loader(self.train_set, self.cfg.batch_size, True, self.seed, self.trainer, drop_last=True,
                           num_workers=self.cfg.num_workers)


@TASKS.register("gan")
class GANTask(Task):
    """``task: gan`` - class-conditional BigGAN-deep on Fashion-MNIST (or random images in tests)."""

    DataConfig = GANDataConfig
    ModelConfig = GANModelConfig

    def build_module(self) -> GANModule:
        m = self.cfg.model
        if m.lr_decay_from and not m.max_g_steps > m.lr_decay_from > 0:
            raise UserError(f"model.lr_decay_from={m.lr_decay_from} needs model.max_g_steps above it "
                            f"(got {m.max_g_steps}): the learning rates reach 0 at max_g_steps")
        g_cfg = load_generator_config(m)
        d_cfg = DiscriminatorConfig(in_channels=3, resolution=m.resolution, channel_width=m.d_channel_width,
                                    num_classes=m.num_classes, aux_classifier=m.aux_weight > 0)
        generator = BigGAN(g_cfg)
        if m.init_generator:  # warm start: G (and, through GANModule's copy, its EMA) from a trained generator
            src = ckpt.load(assets.resolve(m.init_generator), expected="biggan_deep")
            if to_dict(src.config) != to_dict(g_cfg):
                raise UserError(f"model.init_generator '{m.init_generator}' has another generator config")
            generator.load_state_dict(src.state_dict())
        if m.init_class_table:  # a new generator (any width) on an existing table: mappers trained on it stay exact
            table = ckpt.load(assets.resolve(m.init_class_table), expected="biggan_deep").embeddings.weight
            if table.shape != generator.embeddings.weight.shape:
                raise UserError(f"model.init_class_table '{m.init_class_table}' has a {tuple(table.shape)} table, "
                                f"this generator {tuple(generator.embeddings.weight.shape)}")
            with torch.no_grad():
                generator.embeddings.weight.copy_(table)
        if m.freeze_class_table:
            generator.embeddings.weight.requires_grad_(False)
        return GANModule(generator, ProjectionDiscriminator(d_cfg), self.cfg)

    def build_datamodule(self) -> GANData:
        return GANData(self.cfg.data, self.cfg.model.resolution, self.cfg.model.num_classes, self.cfg.seed)

    def export(self, module: GANModule, path: Path, metrics: dict, run_config: dict) -> Path:
        """Save the EMA generator as a ``biggan_deep`` model directory; class names go into ``extra``."""
        m = self.cfg.model
        # Training normalised with batch statistics; eval mode needs per-truncation standing statistics (BigGAN).
        module.model.update_standing_stats(batches=m.standing_batches, batch_size=64, seed=self.cfg.seed)
        extra = {"run_config": run_config, "classes": list(m.classes), "generator_steps": int(module.g_steps),
                 "default_truncation": m.sample_truncation}
        return ckpt.save(module.model, path, metrics=metrics, extra=extra)
