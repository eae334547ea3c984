"""What judges the generator while the GAN trains: a projection discriminator with spectral norm, the hinge losses
and DiffAugment of D's inputs. Training only: nothing here is exported.

- discriminator: residual SNGAN/BigGAN D with a projection head, ``D(x, y) = psi(phi(x)) + <embed(y), phi(x)>``
  (Miyato & Koyama 2018, https://arxiv.org/abs/1802.05637), optionally an auxiliary K-way classifier head on phi(x);
- spectral normalisation of every D weight (Miyato et al. 2018, https://arxiv.org/abs/1802.05957);
- hinge loss (Lim & Ye 2017; as in SAGAN/BigGAN);
- DiffAugment (Zhao et al. 2020, https://arxiv.org/abs/2006.10738).

Notation: B batch, C image channels, H = W = resolution, K classes, ch discriminator width, F = ch * 2 (the feature
dim of phi(x)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from modalbridge.errors import UserError


@dataclass
class DiscriminatorConfig:
    in_channels: int = 3
    resolution: int = 32
    channel_width: int = 32  # ch: first block width; later blocks use 2 * ch
    num_classes: int = 10
    aux_classifier: bool = False  # an extra linear K-way head on phi(x) (auxiliary classifier, see GANModelConfig)


def _sn_conv(c_in: int, c_out: int, k: int) -> nn.Module:
    return spectral_norm(nn.Conv2d(c_in, c_out, k, padding=k // 2))


class DBlock(nn.Module):
    """Residual block: [ReLU] conv3 ReLU conv3 [avg-pool] + shortcut (1x1 conv where channels change or pooling).

    The first block skips the leading ReLU (its input is the image; SNGAN's "optimized block").
    """

    def __init__(self, c_in: int, c_out: int, down: bool, preactivation: bool):
        super().__init__()
        self.down, self.preactivation = down, preactivation
        self.conv1, self.conv2 = _sn_conv(c_in, c_out, 3), _sn_conv(c_out, c_out, 3)
        self.shortcut = _sn_conv(c_in, c_out, 1) if (c_in != c_out or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, h, w) -> (B, c_out, h', w')
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.shortcut is not None:
            # pool before the 1x1 conv on raw input (cheaper, as SNGAN), after it otherwise (as BigGAN)
            s = self.shortcut(F.avg_pool2d(s, 2)) if (self.down and not self.preactivation) else self.shortcut(s)
            if self.down and self.preactivation:
                s = F.avg_pool2d(s, 2)
        return h + s


class ProjectionDiscriminator(nn.Module):
    """BigGAN's 32x32 D (4 residual blocks, 2 of them downsampling) with spectral norm and a projection head."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        ch = config.channel_width
        n_down = int(math.log2(config.resolution)) - 3  # down to 8x8: 32 -> 2 downsamplings, 64 -> 3
        if n_down < 1 or 2 ** (n_down + 3) != config.resolution:
            raise UserError(f"discriminator resolution must be a power of two >= 16, got {config.resolution}")
        widths = [ch] + [2 * ch] * (n_down + 1)
        blocks = [DBlock(config.in_channels, widths[0], down=True, preactivation=False)]
        for i in range(1, len(widths)):
            blocks.append(DBlock(widths[i - 1], widths[i], down=i < n_down, preactivation=True))
        self.blocks = nn.Sequential(*blocks)
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))  # psi
        self.embed = spectral_norm(nn.Embedding(config.num_classes, widths[-1]))  # the projection's class table
        self.aux = nn.Linear(widths[-1], config.num_classes) if config.aux_classifier else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor, return_logits: bool = False):
        """Realness scores ``(B,)`` of ``images`` (B, C, H, W) in [-1, 1] for classes ``labels`` (B,).

        With ``return_logits`` (needs ``aux_classifier``): ``(scores (B,), class logits (B, K))``.
        """
        h = F.relu(self.blocks(images)).sum((2, 3))  # (B, F) global sum pooling
        scores = self.linear(h).squeeze(-1) + (self.embed(labels) * h).sum(-1)  # (B,)
        if not return_logits:
            return scores
        if self.aux is None:
            raise UserError("return_logits needs a discriminator built with aux_classifier=True")
        return scores, self.aux(h)  # (B,), (B, K)


# ---------------------------------------------------------------------------------------------- losses
def d_hinge_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``."""
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def g_hinge_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-E[D(G(z))]``."""
    return -fake_scores.mean()


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation of D's inputs, real and fake alike (Zhao et al. 2020, DiffAugment,
    https://arxiv.org/abs/2006.10738): ``translation`` shifts by up to 1/8 of the side (zero-filled, i.e. the
    background of [-1, 1] images is -1 after the shift), ``cutout`` blanks a random square of half the side.

    Args:
        x: images (B, C, H, W) in [-1, 1].
        policy: comma-separated names from {translation, cutout}; "" returns ``x``.
    """
    if not policy:
        return x
    b, _, h, w = x.shape
    dev = x.device
    for name in policy.split(","):
        if name == "translation":
            s = max(1, h // 8)
            dx = torch.randint(-s, s + 1, (b, 1, 1), device=dev, generator=generator)
            dy = torch.randint(-s, s + 1, (b, 1, 1), device=dev, generator=generator)
            ys = torch.arange(h, device=dev).view(1, h, 1) - dy  # (B, H, 1) source row of each output row
            xs = torch.arange(w, device=dev).view(1, 1, w) - dx  # (B, 1, W)
            valid = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).unsqueeze(1)  # (B, 1, H, W)
            idx = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).flatten(1)  # (B, H*W)
            flat = x.flatten(2).gather(2, idx.unsqueeze(1).expand(-1, x.shape[1], -1))  # (B, C, H*W)
            x = torch.where(valid, flat.view_as(x), torch.full_like(x, -1.0))
        elif name == "cutout":
            ch, cw = h // 2, w // 2
            cy = torch.randint(0, h - ch + 1, (b, 1, 1), device=dev, generator=generator)
            cx = torch.randint(0, w - cw + 1, (b, 1, 1), device=dev, generator=generator)
            ys = torch.arange(h, device=dev).view(1, h, 1)
            xs = torch.arange(w, device=dev).view(1, 1, w)
            hole = ((ys >= cy) & (ys < cy + ch) & (xs >= cx) & (xs < cx + cw)).unsqueeze(1)  # (B, 1, H, W)
            x = x.masked_fill(hole, 0.0)
        else:
            raise UserError(f"model.diffaugment: unknown augmentation '{name}' (translation, cutout)")
    return x
