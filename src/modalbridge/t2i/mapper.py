"""Mappers: token hidden states of a frozen text encoder -> a class embedding of a frozen class-conditional generator.

The bridge is Mikolov et al.'s idea of a learned translation between two latent spaces
(https://arxiv.org/abs/1309.4168): a small module trained to land on the generator's class-embedding table.

Notation: B batch, T word pieces, H text-encoder hidden size, E class-embedding size (128 for BigGAN),
K classes of the generator, D mapper hidden size. ``table`` is the generator's (K, E) class-embedding table;
a target is a mixture: weights w (B, K) summing to 1, target embedding w @ table (one class: a one-hot w).

Heads (registry ``MAPPERS``, picked by ``MapperConfig.kind``):
    linear_mean  per-token linear H -> E, then masked mean over tokens (the linear translation baseline)
    mlp          masked mean of the states, then an MLP
    attention    attention pooling over tokens (a learned query scores each token), then an MLP
    inspan       attention pooling + MLP -> K logits -> softmax -> convex combination of the table's rows:
                 the output always lies inside the convex hull of the real class embeddings, where the generator
                 was trained, so it cannot produce off-manifold embeddings.
Losses (``MapperConfig.loss``): mse and cosine against the target embedding; contrastive = InfoNCE over the full
class table (van den Oord et al., https://arxiv.org/abs/1807.03748) with the mixture weights as soft labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modalbridge.errors import UserError
from modalbridge.registry import MODELS, Registry

MAPPERS = Registry("mapper")
LOSSES = ("mse", "cosine", "contrastive")


@dataclass
class MapperConfig:
    """A mapper and the two frozen models it bridges (so a model directory rebuilds the whole pipeline)."""

    kind: str = "inspan"
    loss: str = "contrastive"
    text_hidden: int = 384  # H
    embed_dim: int = 128  # E
    num_classes: int = 10  # K
    hidden: int = 256  # D
    dropout: float = 0.1
    token_dropout: float = 0.0  # training only: drop each word piece from the mask with this probability
    temperature: float = 0.1  # InfoNCE temperature; also softens retrieval scores
    text_encoder: str = "minilm"
    text_layer: int = -1
    max_length: int | None = None
    generator: str = "default"

    def __post_init__(self):
        if self.kind not in MAPPERS:
            raise ValueError(f"unknown mapper kind '{self.kind}' (known: {', '.join(sorted(MAPPERS))})")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown mapper loss '{self.loss}' (known: {', '.join(LOSSES)})")
        if min(self.text_hidden, self.embed_dim, self.num_classes, self.hidden) < 1 or self.temperature <= 0:
            raise ValueError("dims and temperature must be positive")
        if not 0 <= self.token_dropout < 1 or not 0 <= self.dropout < 1:
            raise ValueError("dropout and token_dropout must be in [0, 1)")


@dataclass
class MapperOutput:
    """``embedding`` (B, E) for the generator; ``logits`` (B, K) class scores; ``loss`` only with targets."""

    embedding: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor | None = None


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C), (B, T) -> (B, C): mean over the real tokens."""
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, C)


class AttentionPool(nn.Module):
    """Additive attention pooling (Bahdanau et al., https://arxiv.org/abs/1409.0473): a learned query scores
    each token; the softmax over real tokens weights the states. Lets class words outweigh 'a photo of'."""

    def __init__(self, h: int, d: int):
        super().__init__()
        self.proj = nn.Linear(h, d)
        self.query = nn.Linear(d, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.query(torch.tanh(self.proj(x))).squeeze(-1)  # (B, T)
        scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, dim=1).nan_to_num(0.0)  # (B, T); all-masked rows give zeros
        return torch.einsum("bt,btc->bc", w, x)  # (B, H)


def _mlp(c: MapperConfig, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(c.text_hidden), nn.Linear(c.text_hidden, c.hidden), nn.GELU(), nn.Dropout(c.dropout),
        nn.Linear(c.hidden, d_out),
    )


@MAPPERS.register("linear_mean")
class LinearMean(nn.Module):
    def __init__(self, c: MapperConfig):
        super().__init__()
        self.proj = nn.Linear(c.text_hidden, c.embed_dim)

    def forward(self, x, mask, table):
        return masked_mean(self.proj(x), mask), None  # (B, T, H) -> (B, T, E) -> (B, E)


@MAPPERS.register("mlp")
class MeanMLP(nn.Module):
    def __init__(self, c: MapperConfig):
        super().__init__()
        self.mlp = _mlp(c, c.embed_dim)

    def forward(self, x, mask, table):
        return self.mlp(masked_mean(x, mask)), None  # (B, H) -> (B, E)


@MAPPERS.register("attention")
class AttentionMLP(nn.Module):
    def __init__(self, c: MapperConfig):
        super().__init__()
        self.pool = AttentionPool(c.text_hidden, c.hidden)
        self.mlp = _mlp(c, c.embed_dim)

    def forward(self, x, mask, table):
        return self.mlp(self.pool(x, mask)), None  # (B, H) -> (B, E)


@MAPPERS.register("inspan")
class InSpan(nn.Module):
    def __init__(self, c: MapperConfig):
        super().__init__()
        self.pool = AttentionPool(c.text_hidden, c.hidden)
        self.mlp = _mlp(c, c.num_classes)

    def forward(self, x, mask, table):
        logits = self.mlp(self.pool(x, mask))  # (B, K)
        return torch.softmax(logits, dim=-1) @ table, logits  # (B, K) @ (K, E) -> (B, E): convex combination


@MODELS.register("t2i_mapper")
class T2IMapper(nn.Module):
    """Text states -> class embedding. Holds a copy of the generator's class table (targets, retrieval, in-span).

    Heads that are free in E (all but ``inspan``) trained with a scale-free loss (cosine, contrastive) get their
    output rescaled to the mean norm of the table's rows, so the generator sees embeddings of the usual size.
    """

    model_type = "t2i_mapper"
    config_class = MapperConfig

    def __init__(self, config: MapperConfig, table: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.head = MAPPERS.create(config.kind, config)
        self.register_buffer("table", torch.zeros(config.num_classes, config.embed_dim))  # (K, E)
        if table is not None:
            self.set_table(table)

    def set_table(self, table: torch.Tensor) -> None:
        if tuple(table.shape) != tuple(self.table.shape):
            raise UserError(f"class table has shape {tuple(table.shape)}, the mapper expects {tuple(self.table.shape)}")
        self.table.copy_(table.detach().float())

    def forward(self, states: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> MapperOutput:
        """Map states to class embeddings.

        Args:
            states: (B, T, H) token hidden states of the text encoder.
            mask: (B, T) bool, True at real tokens.
            weights: optional (B, K) target mixture weights (rows sum to 1); given, the output carries a loss.
        """
        c = self.config
        mask = mask.bool()
        if self.training and c.token_dropout > 0:
            # Word dropout (Iyyer et al. 2015, https://aclanthology.org/P15-1162/): the mapper cannot lean on one
            # word piece ("shirt" in "tee shirt"), so unseen combinations of known words generalise better.
            kept = mask & (torch.rand(mask.shape, device=mask.device) >= c.token_dropout)  # (B, T)
            mask = torch.where(kept.any(1, keepdim=True), kept, mask)
        emb, logits = self.head(states, mask, self.table)  # (B, E), (B, K) | None
        if c.kind != "inspan" and c.loss != "mse":
            emb = F.normalize(emb, dim=-1) * self.table.norm(dim=-1).mean()  # (B, E)
        if logits is None:
            logits = cosine_logits(emb, self.table) / c.temperature  # (B, K)
        loss = None if weights is None else self.loss(emb, weights)
        return MapperOutput(embedding=emb, logits=logits, loss=loss)

    def loss(self, emb: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        target = weights @ self.table  # (B, E)
        if self.config.loss == "mse":
            return F.mse_loss(emb, target)
        if self.config.loss == "cosine":
            return (1 - F.cosine_similarity(emb, target, dim=-1)).mean()
        logits = cosine_logits(emb, self.table) / self.config.temperature  # (B, K)
        return -(weights * F.log_softmax(logits, dim=-1)).sum(-1).mean()

    def class_scores(self, out: MapperOutput) -> torch.Tensor:
        """(B, K) probabilities over classes, shown as the top-5 of a drawing."""
        return torch.softmax(out.logits, dim=-1)


def cosine_logits(emb: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, E), (K, E) -> (B, K) cosine similarities."""
    return F.normalize(emb, dim=-1) @ F.normalize(table, dim=-1).t()


@torch.no_grad()
def retrieval_metrics(emb: torch.Tensor, weights: torch.Tensor, table: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-batch metrics: top1/top5 class retrieval (nearest class embedding by cosine), mse and cosine to the target.

    A retrieval hits at k when one of the top-k classes is a target class of maximal weight (for a sentence naming
    two classes equally, either counts).
    """
    k = min(5, table.shape[0])
    top = cosine_logits(emb, table).topk(k, dim=-1).indices  # (B, k)
    best = weights >= weights.max(-1, keepdim=True).values - 1e-6  # (B, K) target classes of maximal weight
    hits = best.gather(1, top)  # (B, k)
    target = weights @ table  # (B, E)
    return {
        "top1": hits[:, 0].float().mean(),
        "top5": hits.any(-1).float().mean(),
        "mse": F.mse_loss(emb, target),
        "cosine": F.cosine_similarity(emb, target, dim=-1).mean(),
    }


def dense_weights(classes: list[list[int]], weights: list[list[float]], num_classes: int) -> torch.Tensor:
    """Sparse mixture targets (class lists + weights per sentence) -> (B, K) rows normalised to sum to 1."""
    w = torch.zeros(len(classes), num_classes)
    for i, (cs, ws) in enumerate(zip(classes, weights, strict=True)):
        for c, x in zip(cs, ws, strict=True):
            if not 0 <= c < num_classes:
                raise UserError(f"class index {c} out of range for a generator with {num_classes} classes")
            w[i, c] += float(x)
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12)
