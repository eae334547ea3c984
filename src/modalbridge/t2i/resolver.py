"""Class resolver: text -> p(class | text) over a vocabulary's classes, with no generator inside.

A table-bound mapper (mapper.py) lands on one generator's class-embedding table; this model only says *which*
classes the text names. Any generator whose class order matches the vocabulary (all BigGAN-deep resolutions share
ImageNet's) turns the probabilities into its own class embedding at draw time (:func:`class_embedding`).

It starts as the zero-shot baseline a user would write (mean-pooled sentence embedding, cosine to an embedding of
every name and description of each class, best match per class) and is fine-tuned from there, the recipe of
CLIP-style zero-shot heads fine-tuned with an anchor to their initialisation (LP-FT, Kumar et al. 2022,
https://arxiv.org/abs/2202.10054; WiSE-FT, Wortsman et al. 2022, https://arxiv.org/abs/2109.01903): training can
only move it away from the baseline as far as the sentences justify.

Notation: B batch, T word pieces, H text-encoder hidden size, P prototypes (one per name or description of a class),
K classes, E class-embedding size of a generator.

    x = normalize(pool(states))                      (B, H)   pool = attention pooling, initialised to the mean
    s_p = cos(x, prototype_p)                        (B, P)
    logit_k = scale * max_{p of class k} s_p + bias_k + bonus * mention_k         (B, K)

``mention`` (B, K) is lexical evidence computed from the text by the caller: 1 for the classes a word of the text
names exactly (a lemma or everyday name of the vocabulary, spread over the classes of an ambiguous word).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modalbridge.registry import MODELS
from modalbridge.t2i.mapper import AttentionPool


@dataclass
class ResolverConfig:
    """A resolver, the text encoder it reads and its vocabulary size (the vocabulary itself is in vocab.json)."""

    text_encoder: str = "minilm"
    text_layer: int = -1
    max_length: int | None = None
    text_hidden: int = 384  # H
    num_classes: int = 1000  # K
    num_prototypes: int = 1000  # P
    pool_hidden: int = 64
    init_scale: float = 20.0  # 1 / temperature of the cosine similarities
    mention_bonus: float = 4.0  # logits added to classes the text names word for word
    keep_ratio: float = 0.5  # draw time: keep classes with p >= keep_ratio * p_top1 ...
    max_keep: int = 3  # ... at most this many, and only relatives of the top class (see class_embedding)
    vocabulary: str = "imagenet1k"

    def __post_init__(self):
        if min(self.text_hidden, self.num_classes, self.num_prototypes, self.pool_hidden, self.max_keep) < 1:
            raise ValueError("resolver dims must be positive")
        if self.num_prototypes < self.num_classes:
            raise ValueError("a resolver needs at least one prototype per class")
        if not 0 < self.keep_ratio <= 1 or self.init_scale <= 0:
            raise ValueError("keep_ratio must be in (0, 1] and init_scale positive")


@dataclass
class ResolverOutput:
    """``logits`` (B, K) class scores; ``loss`` only with targets."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=-1)  # (B, K)


@MODELS.register("t2i_resolver")
class ClassResolver(nn.Module):
    model_type = "t2i_resolver"
    config_class = ResolverConfig

    def __init__(self, config: ResolverConfig):
        super().__init__()
        c = self.config = config
        self.attention_pool = AttentionPool(c.text_hidden, c.pool_hidden)
        nn.init.zeros_(self.attention_pool.query.weight)  # uniform token weights: exactly mean pooling at init
        self.prototypes = nn.Parameter(torch.randn(c.num_prototypes, c.text_hidden) * 0.02)  # (P, H)
        self.register_buffer("prototype_class", torch.arange(c.num_prototypes) % c.num_classes)  # (P,)
        self.class_bias = nn.Parameter(torch.zeros(c.num_classes))  # (K,)
        self.log_scale = nn.Parameter(torch.tensor(math.log(c.init_scale)))

    def set_prototypes(self, prototypes: torch.Tensor, prototype_class: torch.Tensor) -> None:
        """(P, H) embeddings of the classes' names and descriptions, (P,) their class indices."""
        same = tuple(prototypes.shape) == tuple(self.prototypes.shape)
        if not same or prototype_class.shape != self.prototype_class.shape:
            raise ValueError(f"expected {tuple(self.prototypes.shape)} prototypes, got {tuple(prototypes.shape)}")
        if set(prototype_class.tolist()) != set(range(self.config.num_classes)):
            raise ValueError("every class needs at least one prototype")
        with torch.no_grad():
            self.prototypes.copy_(F.normalize(prototypes.float(), dim=-1))
            self.prototype_class.copy_(prototype_class.long())

    def pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H), (B, T) -> (B, H) unit vectors."""
        return F.normalize(self.attention_pool(states, mask), dim=-1)  # (B, H)

    def class_similarity(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H) unit vectors -> (B, K): best cosine over each class's prototypes."""
        sims = x @ F.normalize(self.prototypes, dim=-1).t()  # (B, P)
        out = sims.new_full((x.shape[0], self.config.num_classes), -1.0)  # (B, K)
        return out.scatter_reduce(1, self.prototype_class.expand_as(sims), sims, reduce="amax", include_self=True)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, mention: torch.Tensor | None = None,
                weights: torch.Tensor | None = None) -> ResolverOutput:
        """Score the classes.

        Args:
            states: (B, T, H) token hidden states of the text encoder.
            mask: (B, T) bool, True at real tokens.
            mention: optional (B, K) lexical evidence (see module docstring).
            weights: optional (B, K) soft targets (rows sum to 1); given, the output carries the cross-entropy.
        """
        x = self.pool(states, mask.bool())  # (B, H)
        logits = self.log_scale.exp() * self.class_similarity(x) + self.class_bias  # (B, K)
        if mention is not None:
            logits = logits + self.config.mention_bonus * mention.to(logits.dtype)
        loss = None
        if weights is not None:  # soft-target cross-entropy: a sentence naming two classes keeps both
            loss = -(weights * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        return ResolverOutput(logits=logits, loss=loss)


def keep_classes(probs: torch.Tensor, related: torch.Tensor, keep_ratio: float, max_keep: int) -> torch.Tensor:
    """Sharpen class probabilities so that one object never becomes a chimera of unrelated classes.

    Rule: keep the top class; keep another class only if it is among the ``max_keep`` most probable, has at least
    ``keep_ratio`` times the top class's probability, and is a close relative of the top class (``related``: (K, K)
    bool, e.g. same WordNet parent or grandparent: two dog breeds may blend, a dog and a bus may not); renormalise.

    Args:
        probs: (B, K) class probabilities.
        related: (K, K) bool relation, True on the diagonal.
    Returns:
        (B, K) the kept probabilities, rows summing to 1.
    """
    top_p, top_i = probs.topk(min(max_keep, probs.shape[-1]), dim=-1)  # (B, M)
    keep = torch.zeros_like(probs, dtype=torch.bool)  # (B, K)
    ok = (top_p >= keep_ratio * top_p[:, :1]) & related[top_i[:, :1], top_i]  # (B, M)
    keep.scatter_(1, top_i, ok)
    kept = torch.where(keep, probs, torch.zeros_like(probs))
    return kept / kept.sum(-1, keepdim=True)


def class_embedding(probs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, K) class probabilities, a generator's (K, E) class table -> (B, E) p-weighted class embeddings."""
    if probs.shape[-1] != table.shape[0]:
        raise ValueError(f"{probs.shape[-1]} class probabilities for a generator with {table.shape[0]} classes")
    return probs.to(table.dtype) @ table  # (B, E)
