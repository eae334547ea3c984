"""BigGAN-deep generator (Brock et al. 2018, https://arxiv.org/abs/1809.11096), loadable from published weights.

Parameter and buffer names follow the PyTorch port of the TF-Hub generators published as the hub repos
``huggingface/biggan-deep-{128,256,512}`` (``config.json`` + ``pytorch_model.bin``), so their state dicts load
strictly. The same module, built from ``BigGANConfig.small``, is the small class-conditional GAN trained here.

Notation:
    B batch, C channels, H/W height/width, ch = channel_width, Z = z_dim, E = class_embed_dim,
    K = num_classes, S = n_stats (truncation grid points), t = truncation in (0, 1],
    c = [z, e], the (B, Z + E) conditioning vector that every block sees (BigGAN-deep feeds all of z everywhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from modalbridge.errors import UserError
from modalbridge.registry import MODELS

# The published layouts: (upsample?, in multiple of ch, out multiple of ch) per residual block (paper Table 7-9);
# attention before block 8 in all three (64x64, 4ch), which the published parameter counts confirm.
LAYERS_128 = [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8),
              (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)]  # fmt: skip
LAYERS_256 = LAYERS_128[:5] + [(True, 8, 8), (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2),
                               (False, 2, 2), (True, 2, 1)]  # fmt: skip
LAYERS_512 = LAYERS_256 + [(False, 1, 1), (True, 1, 1)]


@dataclass
class BigGANConfig:
    """The fields of the published ``config.json`` (defaults: biggan-deep-128) plus ``out_channels``.

    ``layers`` lists residual blocks as ``(upsample, in_mult, out_mult)``; block channels are ``mult * ch``.
    The self-attention block sits before block ``attention_layer_position`` (None: no attention).
    Statistics of every batch norm are stored for ``n_stats`` truncations on the grid ``i / (n_stats - 1)``.
    """

    output_dim: int = 128
    z_dim: int = 128
    class_embed_dim: int = 128
    channel_width: int = 128
    num_classes: int = 1000
    layers: list = field(default_factory=lambda: list(LAYERS_128))
    attention_layer_position: int | None = 8
    eps: float = 1e-4
    n_stats: int = 51
    out_channels: int = 3

    def __post_init__(self):
        if not all(isinstance(x, (list, tuple)) and len(x) == 3 for x in self.layers) or not self.layers:
            raise ValueError(f"layers must be a non-empty list of (upsample, in_mult, out_mult), got {self.layers!r}")
        self.layers = [(bool(up), int(a), int(b)) for up, a, b in self.layers]
        if any(b > a for _, a, b in self.layers):
            raise ValueError("a block may keep or reduce its channel multiple, not grow it")
        size = 4 * 2 ** sum(up for up, _, _ in self.layers)
        if size != self.output_dim:
            raise ValueError(f"layers upsample 4x4 to {size}x{size}, but output_dim is {self.output_dim}")
        if not 1 <= self.out_channels <= self.channel_width * self.layers[-1][2]:
            raise ValueError(f"out_channels must be in 1..{self.channel_width * self.layers[-1][2]}")
        if self.n_stats < 2:
            raise ValueError("n_stats must be at least 2")

    @classmethod
    def published(cls, size: int) -> BigGANConfig:
        """The config.json of ``huggingface/biggan-deep-<size>``, size 128, 256 or 512."""
        layers = {128: LAYERS_128, 256: LAYERS_256, 512: LAYERS_512}
        if size not in layers:
            raise ValueError(f"published BigGAN-deep sizes are 128, 256, 512, not {size}")
        return cls(output_dim=size, layers=list(layers[size]))

    @classmethod
    def small(cls, resolution: int = 32, channel_width: int = 16, num_classes: int = 10, out_channels: int = 1,
              attention: bool = True, z_dim: int = 128, class_embed_dim: int = 128) -> BigGANConfig:
        """A reduced BigGAN-deep for small images (e.g. Fashion-MNIST padded to 32x32, or 64x64).

        Mirrors the published layout: per upsampling stage a plain block then an upsampling block; the first stage
        keeps its width, every later stage halves it, ending at ``channel_width`` channels; self-attention at half
        the output resolution. ``resolution=32`` gives 6 blocks with widths 4ch -> 4ch -> 2ch -> ch.

        Args:
            resolution: output side, a power of two >= 8.
            channel_width: ch, the width of the last stage (a multiple of 4; of 8 with attention).
            out_channels: 1 for grayscale, 3 for RGB. The others are the config fields of the same name.
        """
        n_up = int(math.log2(resolution)) - 2
        if resolution < 8 or 4 * 2**n_up != resolution:
            raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
        mults = [2 ** (n_up - 1)] + [2 ** (n_up - 1 - k) for k in range(n_up)]  # widths at each stage boundary
        layers = []
        for k in range(n_up):
            layers += [(False, mults[k], mults[k]), (True, mults[k], mults[k + 1])]
        attn = 2 * (n_up - 1) if attention else None  # before the last stage's plain block, at resolution / 2
        return cls(output_dim=resolution, z_dim=z_dim, class_embed_dim=class_embed_dim, channel_width=channel_width,
                   num_classes=num_classes, layers=layers, attention_layer_position=attn, out_channels=out_channels)


class SpectralNormed(nn.Module):
    """A weight ``weight_orig`` divided by its largest singular value sigma (Miyato et al. 2018, arXiv:1802.05957).

    sigma = u^T W v with the stored power-iteration vectors ``weight_u``/``weight_v`` (names as torch's
    ``spectral_norm``, so published checkpoints load); training runs one power iteration per call, updating u and v.
    In eval mode without autograd the normalised weight is cached until a tensor it depends on changes in place.
    """

    def __init__(self, shape: tuple[int, ...], bias: bool, eps: float):
        super().__init__()
        self.eps = eps
        self.weight_orig = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(shape[0])) if bias else None
        self.register_buffer("weight_u", torch.empty(shape[0]))
        self.register_buffer("weight_v", torch.empty(math.prod(shape[1:])))
        self._cache: tuple | None = None
        if not self.weight_orig.is_meta:
            nn.init.orthogonal_(self.weight_orig)  # BigGAN initialises G orthogonally (paper, Sec. 4)
            self.weight_v.copy_(F.normalize(torch.randn(self.weight_v.shape[0]), dim=0))
            self.weight_u.copy_(F.normalize(self.weight_orig.detach().flatten(1) @ self.weight_v, dim=0))  # sigma > 0

    def weight(self) -> torch.Tensor:
        w, u, v = self.weight_orig, self.weight_u, self.weight_v
        mat = w.reshape(w.shape[0], -1)  # (out, in * k * k)
        if self.training:
            with torch.no_grad():  # in place, as torch's spectral_norm, so buffers see the update
                v = F.normalize(torch.mv(mat.t(), u), dim=0, eps=self.eps, out=v)
                u = F.normalize(torch.mv(mat, v), dim=0, eps=self.eps, out=u)
            u, v = u.clone(), v.clone()
        elif not torch.is_grad_enabled():
            key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (w, u, v))
            if self._cache is None or self._cache[0] != key:  # conv weights kept channels-last, as oneDNN wants
                w_sn = w / torch.dot(u, torch.mv(mat, v))
                self._cache = (key, w_sn.contiguous(memory_format=torch.channels_last) if w.dim() == 4 else w_sn)
            return self._cache[1]
        return w / torch.dot(u, torch.mv(mat, v))


class SNLinear(SpectralNormed):
    def __init__(self, d_in: int, d_out: int, bias: bool = True, eps: float = 1e-4):
        super().__init__((d_out, d_in), bias, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class SNConv2d(SpectralNormed):
    """A 'same'-padded convolution; ``keep`` uses only the first output channels (exactly as slicing the output)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True, eps: float = 1e-4):
        super().__init__((c_out, c_in, kernel, kernel), bias, eps)

    def forward(self, x: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        w, b = self.weight(), self.bias
        if keep is not None:
            w, b = w[:keep], None if b is None else b[:keep]
        if w.shape[-1] == 1:  # on channels-last input a 1x1 conv is one GEMM over (B*H*W, C); oneDNN's is slower
            return F.linear(x.permute(0, 2, 3, 1), w.flatten(1), b).permute(0, 3, 1, 2)  # (B, C_out, H, W)
        return F.conv2d(x, w, b, padding=w.shape[-1] // 2)


class StandingBatchNorm(nn.Module):
    """Batch norm with statistics stored per truncation, optionally class-conditional (gain 1 + scale(c)).

    Eval mode normalises with 'standing statistics' (Brock et al. 2018) recorded at the truncations
    t_i = i / (S - 1), linearly interpolated in between. Training mode normalises with batch statistics.
    """

    def __init__(self, channels: int, cond_dim: int | None, n_stats: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("running_means", torch.zeros(n_stats, channels))  # (S, C)
        self.register_buffer("running_vars", torch.ones(n_stats, channels))  # (S, C)
        self.conditional = cond_dim is not None
        if self.conditional:
            self.scale = SNLinear(cond_dim, channels, bias=False, eps=eps)
            self.offset = SNLinear(cond_dim, channels, bias=False, eps=eps)
        else:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        self.collect: list | None = None  # set by BigGAN.update_standing_stats

    def stats_at(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance at truncation ``t``: on-grid exactly, off-grid linearly interpolated.

        The reference port (pytorch_pretrained_biggan 0.1.1) weighs the two neighbours the wrong way round
        (``m[i] * f + m[i+1] * (1 - f)`` for position ``i + f``), and since it takes ``modf(t / 0.02)`` even grid
        values whose quotient rounds just below/above an integer (t = 0.14, 0.28, 0.56, 0.58, 0.94) get the
        neighbouring slot. Slot i holds the statistics measured at t_i, so the right value is ``lerp(m[i], m[i+1], f)``
        with positions within 1e-6 of a grid point snapped to it.
        """
        m, v = self.running_means, self.running_vars  # (S, C)
        pos = t * (m.shape[0] - 1)
        if abs(pos - round(pos)) < 1e-6:
            return m[round(pos)], v[round(pos)]  # (C,), (C,)
        i, f = math.floor(pos), pos - math.floor(pos)
        return torch.lerp(m[i], m[i + 1], f), torch.lerp(v[i], v[i + 1], f)  # (C,), (C,)

    def forward(self, x: torch.Tensor, t: float, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.training or self.collect is not None:
            mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)  # (C,), (C,)
            if self.collect is not None:
                self.collect.append(torch.stack([mean, var]))
        else:
            mean, var = self.stats_at(t)
        if self.conditional:
            gain, bias = 1 + self.scale(cond), self.offset(cond)  # (B, C), (B, C)
        else:
            gain, bias = self.weight[None], self.bias[None]  # (1, C)
        scale = (gain * torch.rsqrt(var + self.eps))[:, :, None, None]  # (B|1, C, 1, 1)
        return torch.addcmul(bias[:, :, None, None], x - mean[None, :, None, None], scale)  # (B, C, H, W)


class SelfAttention(nn.Module):
    """Non-local block (Zhang et al. 2018, SAGAN, arXiv:1805.08318): keys/values max-pooled 2x, no 1/sqrt(d) scale."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.snconv1x1_theta = SNConv2d(channels, channels // 8, 1, bias=False, eps=eps)
        self.snconv1x1_phi = SNConv2d(channels, channels // 8, 1, bias=False, eps=eps)
        self.snconv1x1_g = SNConv2d(channels, channels // 2, 1, bias=False, eps=eps)
        self.snconv1x1_o_conv = SNConv2d(channels // 2, channels, 1, bias=False, eps=eps)
        self.gamma = nn.Parameter(torch.zeros(1))  # starts as identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = self.snconv1x1_theta(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
        k = F.max_pool2d(self.snconv1x1_phi(x), 2).flatten(2).transpose(1, 2)  # (B, HW/4, C/8)
        v = F.max_pool2d(self.snconv1x1_g(x), 2).flatten(2).transpose(1, 2)  # (B, HW/4, C/2)
        o = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v  # (B, HW, HW/4) @ (B, HW/4, C/2) -> (B, HW, C/2)
        o = o.transpose(1, 2).reshape(B, C // 2, H, W)  # (B, C/2, H, W)
        return x + self.gamma * self.snconv1x1_o_conv(o)  # (B, C, H, W)


class GenBlock(nn.Module):
    """BigGAN-deep residual block (paper Fig. 16b): four BN-ReLU-conv steps with a 4x channel bottleneck.

    Main path: 1x1 (C_in -> C_in/4), [2x nearest upsample] 3x3, 3x3, 1x1 (-> C_out). Skip path: keep the first
    C_out channels, [upsample]; no skip parameters, which is what lets the deep model go deeper for free.
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int, upsample: bool, n_stats: int, eps: float):
        super().__init__()
        mid, self.upsample, self.c_out = c_in // 4, upsample, c_out
        self.bn_0 = StandingBatchNorm(c_in, cond_dim, n_stats, eps)
        self.conv_0 = SNConv2d(c_in, mid, 1, eps=eps)
        self.bn_1 = StandingBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_1 = SNConv2d(mid, mid, 3, eps=eps)
        self.bn_2 = StandingBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_2 = SNConv2d(mid, mid, 3, eps=eps)
        self.bn_3 = StandingBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_3 = SNConv2d(mid, c_out, 1, eps=eps)

    def forward(self, x: torch.Tensor, c: torch.Tensor, t: float) -> torch.Tensor:
        # in-place ReLUs are autograd-safe here: the norm's backward does not need its output
        h = self.conv_0(F.relu(self.bn_0(x, t, c), inplace=True))  # (B, C_in/4, H, W)
        h = F.relu(self.bn_1(h, t, c), inplace=True)
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")  # (B, C_in/4, 2H, 2W)
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, t, c), inplace=True))
        h = self.conv_3(F.relu(self.bn_3(h, t, c), inplace=True))  # (B, C_out, H', W')
        x = x[:, : self.c_out]  # (B, C_out, H, W)
        if not self.upsample:
            return h + x
        # h + nearest-2x(x) without materialising the upsampled x: one broadcast add on (B, H, 2, W, 2, C) views
        B, C, H2, W2 = h.shape
        h6 = h.permute(0, 2, 3, 1).reshape(B, H2 // 2, 2, W2 // 2, 2, C)  # a view for channels-last h
        out = h6 + x.permute(0, 2, 3, 1)[:, :, None, :, None]  # (B, H, 2, W, 2, C)
        return out.reshape(B, H2, W2, C).permute(0, 3, 1, 2)  # (B, C_out, 2H, 2W), channels-last


class Generator(nn.Module):
    """c -> linear -> (B, 16ch, 4, 4) -> residual blocks (+ attention) -> BN-ReLU-3x3 conv -> tanh."""

    def __init__(self, config: BigGANConfig):
        super().__init__()
        ch, cond_dim, self.config = config.channel_width, config.z_dim + config.class_embed_dim, config
        self.gen_z = SNLinear(cond_dim, 4 * 4 * config.layers[0][1] * ch, eps=config.eps)
        layers = []
        for i, (up, m_in, m_out) in enumerate(config.layers):
            if i == config.attention_layer_position:
                layers.append(SelfAttention(m_in * ch, config.eps))
            layers.append(GenBlock(m_in * ch, m_out * ch, cond_dim, up, config.n_stats, config.eps))
        self.layers = nn.ModuleList(layers)
        c_last = config.layers[-1][2] * ch
        self.bn = StandingBatchNorm(c_last, None, config.n_stats, config.eps)
        # The published conv keeps all C channels (the TF graph's); only the first out_channels are ever used.
        self.conv_to_rgb = SNConv2d(c_last, c_last, 3, eps=config.eps)

    def forward(self, c: torch.Tensor, t: float) -> torch.Tensor:
        h = self.gen_z(c)  # (B, 4 * 4 * C0)
        # TF's (B, H, W, C) order read as (B, C0, 4, 4) is channels-last in memory, which oneDNN's CPU convolutions
        # run fastest on (no layout reorders around every conv); every later op keeps that layout.
        h = h.view(c.shape[0], 4, 4, -1).permute(0, 3, 1, 2)  # (B, C0, 4, 4)
        for layer in self.layers:
            h = layer(h, c, t) if isinstance(layer, GenBlock) else layer(h)  # (B, C, H, W)
        h = F.relu(self.bn(h, t))
        return torch.tanh(self.conv_to_rgb(h, keep=self.config.out_channels)).contiguous()  # (B, out_channels, H, W)


@MODELS.register("biggan_deep")
class BigGAN(nn.Module):
    """BigGAN-deep generator: ``forward(z, class_embedding, truncation) -> images in [-1, 1]``.

    ``embeddings`` is the published ``Linear(K -> E, bias=False)`` applied to one-hot labels, so class i's
    embedding is column i of its weight; callers (e.g. a text -> embedding mapper) pass embeddings directly.
    """

    model_type = "biggan_deep"
    config_class = BigGANConfig

    def __init__(self, config: BigGANConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Linear(config.num_classes, config.class_embed_dim, bias=False)
        self.generator = Generator(config)

    @property
    def class_embeddings(self) -> torch.Tensor:
        """(K, E): row i is the embedding of class i."""
        return self.embeddings.weight.t()

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        """Class indices (B,) -> embeddings (B, E); equal to ``embeddings(one_hot(labels))``."""
        return self.class_embeddings[labels]

    def forward(self, z: torch.Tensor, class_embedding: torch.Tensor, truncation: float) -> torch.Tensor:
        """Generate images.

        Args:
            z: (B, Z) noise, normally ``truncated_noise(B, Z, truncation, seed)``.
            class_embedding: (B, E), e.g. ``class_embeddings[labels]`` or a mapper's output.
            truncation: in (0, 1]; picks the batch-norm statistics matching the noise's truncation.

        Returns:
            (B, 3, output_dim, output_dim) images in [-1, 1]; a grayscale generator (``out_channels=1``) repeats
            its channel, so every generator has the published RGB interface.
        """
        t, cfg = check_truncation(truncation), self.config
        if z.dim() != 2 or z.shape[1] != cfg.z_dim or class_embedding.shape != (z.shape[0], cfg.class_embed_dim):
            raise UserError(f"BigGAN expects z (B, {cfg.z_dim}) and class_embedding (B, {cfg.class_embed_dim}), got "
                            f"{tuple(z.shape)} and {tuple(class_embedding.shape)}")  # fmt: skip
        c = torch.cat([z, class_embedding.to(z.dtype)], dim=1)  # (B, Z + E)
        x = self.generator(c, t)  # (B, out_channels, H, W)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # (B, 3, H, W)

    @torch.no_grad()
    def update_standing_stats(self, batches: int = 4, batch_size: int = 64, seed: int = 0) -> None:
        """Record 'standing statistics' (Brock et al. 2018) for every truncation slot of every batch norm.

        For each grid truncation t_i, runs ``batches`` batches of truncated noise (scaled to t_i) with random
        classes through the generator, and stores the average batch mean/variance of each norm layer in slot i.
        Call after training, before sampling in eval mode.
        """
        cfg, norms = self.config, [m for m in self.modules() if isinstance(m, StandingBatchNorm)]
        was_training, device, g = self.training, self.embeddings.weight.device, torch.Generator().manual_seed(seed)
        self.eval()
        try:
            for i in range(cfg.n_stats):
                t = i / (cfg.n_stats - 1)
                for norm in norms:
                    norm.collect = []
                for b in range(batches):
                    z = truncated_noise(batch_size, cfg.z_dim, 1.0, seed * 1_000_003 + i * 1009 + b) * t
                    labels = torch.randint(cfg.num_classes, (batch_size,), generator=g)
                    c = torch.cat([z.to(device), self.embed(labels.to(device))], dim=1)  # (B, Z + E)
                    self.generator(c, max(t, 1e-6))
                for norm in norms:
                    mean_var = torch.stack(norm.collect).mean(0)  # (2, C)
                    norm.running_means[i], norm.running_vars[i] = mean_var[0], mean_var[1]
        finally:
            for norm in norms:
                norm.collect = None
            self.train(was_training)


def check_truncation(truncation: float) -> float:
    """Return ``truncation`` as a float, or raise UserError unless it is in (0, 1]."""
    try:
        t = float(truncation)
    except (TypeError, ValueError):
        raise UserError(f"truncation must be a number in (0, 1], got {truncation!r}") from None
    if not 0.0 < t <= 1.0:  # also rejects NaN
        raise UserError(f"truncation must be in (0, 1], got {truncation}")
    return t


def truncated_noise(batch: int, dim: int, truncation: float, seed: int | None = None) -> torch.Tensor:
    """(batch, dim) noise for the truncation trick (paper Sec. 3.1): N(0, 1) resampled into [-2, 2], times
    ``truncation``; reproducible for a given ``seed``."""
    t = check_truncation(truncation)
    g = torch.Generator()
    g.seed() if seed is None else g.manual_seed(seed)
    z = torch.empty(batch, dim)
    nn.init.trunc_normal_(z, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=g)
    return z * t  # (batch, dim)
