"""Show and Tell and Show, Attend and Tell: LSTM caption decoders over image features.

Notation: B batch, T caption positions fed to the decoder, P image regions (grid positions), C feature channels,
E word-embedding size, H LSTM hidden size, A attention size, V vocabulary size.

* Show and Tell (Vinyals et al. 2015, https://arxiv.org/abs/1411.4555): the pooled image feature, embedded to E, is
  the LSTM's first input (x_{-1}); then the words. The image is seen once, never again.
* Show, Attend and Tell (Xu et al. 2015, https://arxiv.org/abs/1502.03044), soft ("deterministic") attention:
  h_0, c_0 from the mean region feature (§3.1.2), at every step an attention over the P regions computed from
  h_{t-1} (eq. 4-5), a gating scalar β_t = σ(f_β(h_{t-1})) on the context (§4.2.1), the deep output layer
  p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t)) (eq. 7), dropout, and the doubly stochastic regulariser
  λ Σ_i (1 - Σ_t α_ti)² (eq. 14) added to the loss.

Both implement the decoder protocol of :mod:`modalbridge.captioning.decoder`, which
:mod:`modalbridge.captioning.decoding` drives (greedy / beam / top-p). A step is ``_advance`` (the recurrence) then
``_output`` (the output layer). Training runs the same ``_advance`` under teacher forcing, so decoding and training
cannot drift apart, and applies ``_output`` to all steps at once (one large matrix product instead of T small ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modalbridge.captioning.decoder import DECODERS, CaptionDecoder
from modalbridge.registry import MODELS

_ATT_CHUNK = 1 << 19  # float32 elements (2 MiB) of attention energies computed at once


@dataclass
class SATConfig:
    vocab_size: int = 99  # V
    feature_dim: int = 1280  # C
    num_positions: int = 49  # P, recorded for the record and for attention maps (h·w grid)
    embed_dim: int = 512  # E
    hidden_dim: int = 512  # H
    attention_dim: int = 512  # A (Show, Attend and Tell only)
    dropout: float = 0.5
    alpha_c: float = 1.0  # λ of the doubly stochastic attention regulariser (Show, Attend and Tell only)
    max_len: int = 20  # longest caption (words) decoded by default
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    encoder: str = "efficientnet-lite0"  # image encoder (name or path) whose features this decoder reads
    encoder_kind: str = "efficientnet-lite0"


class _WordDecoder(CaptionDecoder):
    """Decoders over a word :class:`~modalbridge.captioning.vocab.Vocab`: ``<pad>``/``<bos>`` are never predicted."""

    def never_generated(self) -> list[int]:
        c = self.config
        return sorted({c.pad_id, c.bos_id} - {c.eos_id})


@DECODERS.register("show_tell")
@MODELS.register("show_tell")
class ShowTell(_WordDecoder):
    """Vinyals et al. 2015: the image is the LSTM's input at t = -1 (§3.1), then words; softmax over h_t."""

    model_type = "show_tell"
    config_class = SATConfig
    feature = "pooled"

    def __init__(self, config: SATConfig):
        super().__init__()
        self.config = c = config
        self.image_embed = nn.Linear(c.feature_dim, c.embed_dim)  # W_I
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)  # W_e
        self.lstm = nn.LSTMCell(c.embed_dim, c.hidden_dim)
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_dim, c.vocab_size)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def init_state(self, memory: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = memory.mean(1) if memory.dim() == 3 else memory  # (B, C)
        x = self.dropout(self.image_embed(pooled.float()))  # (B, E)
        h, c = self.lstm(x)  # (B, H) each; zero initial state, image as x_{-1}
        return {"h": h, "c": c}

    def _advance(self, tokens, state):
        h, c = self.lstm(self.dropout(self.embed(tokens)), (state["h"], state["c"]))  # (B, H)
        return (h,), {"h": h, "c": c}, None

    def _output(self, h):
        return self.out(self.dropout(h))  # (..., H) -> (..., V)


@DECODERS.register("show_attend_tell")
@MODELS.register("show_attend_tell")
class ShowAttendTell(_WordDecoder):
    """Xu et al. 2015 with soft attention, the gating scalar β and the deep output layer."""

    model_type = "show_attend_tell"
    config_class = SATConfig
    feature = "grid"
    # Per-image constants of the state: decoding keeps one row per image, not per beam (see ``attend``).
    static_state = ("feats", "proj")

    def __init__(self, config: SATConfig):
        super().__init__()
        self.config = c = config
        self.init_h = nn.Linear(c.feature_dim, c.hidden_dim)  # f_init,h (§3.1.2)
        self.init_c = nn.Linear(c.feature_dim, c.hidden_dim)  # f_init,c
        self.att_feat = nn.Linear(c.feature_dim, c.attention_dim)  # W_a a_i, precomputed once per image
        self.att_hidden = nn.Linear(c.hidden_dim, c.attention_dim)  # W_h h_{t-1}
        self.att_score = nn.Linear(c.attention_dim, 1)  # w^T tanh(.) -> e_ti (eq. 4)
        self.gate = nn.Linear(c.hidden_dim, 1)  # f_β: one gating scalar per step (§4.2.1)
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)  # E
        self.lstm = nn.LSTMCell(c.embed_dim + c.feature_dim, c.hidden_dim)  # input [E y_{t-1}; z_t]
        self.out_hidden = nn.Linear(c.hidden_dim, c.embed_dim)  # L_h
        self.out_context = nn.Linear(c.feature_dim, c.embed_dim)  # L_z
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.embed_dim, c.vocab_size)  # L_o
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def init_state(self, memory: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = memory.float()  # (B, P, C)
        mean = feats.mean(1)  # (B, C)
        return {
            "feats": feats,
            "proj": self.att_feat(feats),  # (B, P, A)
            "h": torch.tanh(self.init_h(mean)),  # (B, H)
            "c": torch.tanh(self.init_c(mean)),  # (B, H)
        }

    def attend(self, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft attention from h_{t-1}: returns the gated context z_t ``(B, C)`` and α_t ``(B, P)``.

        ``feats``/``proj`` may hold one row per *image* while ``h`` holds K rows per image (beam search keeps
        ``static_state`` unexpanded): the K rows of an image broadcast against its one copy, so the constant
        ``(P, C)``/``(P, A)`` tensors are never copied per beam and the context is one (K, P) x (P, C) product."""
        h, proj, feats = state["h"], state["proj"], state["feats"]
        G, P, A = proj.shape  # G images
        K = h.size(0) // G  # rows (beams) per image
        hid = self.att_hidden(h).view(G, K, 1, A)  # (G, K, 1, A)
        # The (·, K, P, A) energies are computed a few images at a time so the temporary stays in cache, and tanh
        # runs in place (autograd-safe: the add saves nothing): no large allocation and memory pass per step.
        n = max(1, _ATT_CHUNK // (K * P * A))  # images per chunk
        if torch.is_grad_enabled():
            e = torch.cat([self.att_score((proj[i : i + n, None] + hid[i : i + n]).tanh_())
                           for i in range(0, G, n)]).view(G, K, P)  # (G, K, P)
        else:  # decoding: one chunk buffer reused, scores written straight into e (same values, 12 % less time)
            buf = proj.new_empty(min(n, G), K, P, A)
            w = self.att_score.weight.view(A)  # (A,)
            e = proj.new_empty(G, K, P)
            for i in range(0, G, n):
                b = buf[: min(n, G - i)]
                torch.add(proj[i : i + n, None], hid[i : i + n], out=b).tanh_()
                torch.matmul(b, w, out=e[i : i + n])  # (m, K, P)
            e += self.att_score.bias
        alpha = torch.softmax(e, dim=-1)  # (G, K, P)
        context = torch.bmm(alpha, feats).view(G * K, -1)  # (B, C), Σ_i α_ti a_i (eq. 6, φ = soft)
        beta = torch.sigmoid(self.gate(h))  # (B, 1): lets the model emphasise words over the image
        return beta * context, alpha.view(G * K, P)

    def _advance(self, tokens, state):
        emb = self.embed(tokens)  # (B, E)
        z, alpha = self.attend(state)  # (B, C), (B, P)
        h, c = self.lstm(torch.cat([emb, z], -1), (state["h"], state["c"]))  # (B, H)
        return (emb, h, z), {"feats": state["feats"], "proj": state["proj"], "h": h, "c": c}, alpha

    def _output(self, emb, h, z):
        # Deep output (eq. 7); tanh before L_o as in the authors' arctic-captions code.
        deep = torch.tanh(emb + self.out_hidden(h) + self.out_context(z))  # (..., E)
        return self.out(self.dropout(deep))  # (..., V)

    def regularizer(self, attention: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
        """Doubly stochastic attention (eq. 14): every region should get about one unit of attention over the
        caption, λ Σ_i (1 - Σ_t α_ti)²; padded steps do not count."""
        if attention is None or self.config.alpha_c == 0:
            return None
        total = (attention * mask[..., None]).sum(1)  # (B, P)
        return self.config.alpha_c * ((1.0 - total) ** 2).sum(-1).mean()
