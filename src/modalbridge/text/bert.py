"""BERT encoder (Devlin et al. 2019) in plain PyTorch, loading Hugging Face's published files without transformers.

Notation: B batch, T word pieces, H hidden size, N heads, D = H / N head size, F intermediate (feed-forward) size.

Why: importing transformers and resolving ``AutoModel`` costs ~4-5 s per process here, longer than the rest of a
``draw``/``classify`` command. A BERT-family directory with ``config.json`` (``model_type: bert``, absolute positions,
exact GELU), ``model.safetensors`` and ``tokenizer.json`` is read directly: the weights through safetensors (memory
mapped), the tokenizer through the ``tokenizers`` library (the Rust core that HF's fast tokenizers wrap). Parameter
names equal HF's ``BertModel`` state-dict keys, so loading is strict and the outputs equal ``BertModel``'s (a test
compares both on random and on the shipped MiniLM weights). Anything else falls back to transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_hf(cls, d: dict) -> BertConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def supported(config: dict) -> bool:
    """Whether an HF ``config.json`` describes a model this file computes exactly (else: use transformers)."""
    return (config.get("model_type") == "bert" and config.get("hidden_act", "gelu") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and not config.get("is_decoder", False) and not config.get("add_cross_attention", False))


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.size(1)
        x = self.word_embeddings(ids) + self.token_type_embeddings.weight[0] + self.position_embeddings.weight[:T]
        return self.LayerNorm(x)  # (B, T, H); dropout is off in eval


class SelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = (lin(x).view(B, T, self.heads, -1).transpose(1, 2) for lin in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, N, T, D); softmax(q k^T / sqrt(D) + bias)
        return y.transpose(1, 2).reshape(B, T, H)


class Projection(nn.Module):
    """``dense`` then residual add and LayerNorm (HF's BertSelfOutput / BertOutput)."""

    def __init__(self, d_in: int, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = SelfAttention(c)
        self.output = Projection(c.hidden_size, c)


class Intermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = Projection(c.intermediate_size, c)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, bias), x)  # post-LN, as in BERT
        return self.output(F.gelu(self.intermediate.dense(x)), x)  # (B, T, H); exact (erf) GELU


class Encoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # L + 1 of (B, T, H): embeddings, then each layer


class Bert(nn.Module):
    """BERT's encoder stack; ``forward(input_ids, attention_mask)`` like HF's ``BertModel`` (no pooler)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> BertOutput:
        x = self.embeddings(input_ids)  # (B, T, H)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # (B, 1, 1, T) additive bias: padded keys get the dtype's minimum, so their attention weight is 0
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        states = [x]
        for layer in self.encoder.layer:
            x = layer(x, bias)
            states.append(x)
        return BertOutput(x, tuple(states) if output_hidden_states else None)


class Encoding:
    """What :class:`WordPieces` returns: ``enc["input_ids"]``, ``enc["offset_mapping"]`` and ``enc.word_ids(i)``,
    the parts of HF's ``BatchEncoding`` that :class:`modalbridge.text.encoders.TextEncoder` reads."""

    def __init__(self, encodings):
        self._encodings = encodings
        self._data = {"input_ids": [e.ids for e in encodings], "offset_mapping": [e.offsets for e in encodings]}

    def __getitem__(self, key: str):
        return self._data[key]

    def word_ids(self, i: int) -> list[int | None]:
        return self._encodings[i].word_ids


class WordPieces:
    """A ``tokenizer.json`` through the ``tokenizers`` library, called like HF's fast tokenizer (no padding)."""

    is_fast = True

    def __init__(self, path: Path, model_max_length: int):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self.model_max_length = model_max_length
        pad = self._tok.token_to_id("[PAD]")
        self.pad_token_id = 0 if pad is None else pad
        self._limit: int | None = None

    def __call__(self, texts: list[str], truncation: bool = True, max_length: int | None = None, **_) -> Encoding:
        limit = max_length if truncation else None
        if limit != self._limit:
            if limit:
                self._tok.enable_truncation(limit)
            else:
                self._tok.no_truncation()
            self._limit = limit
        return Encoding(self._tok.encode_batch(texts))


def load(path: Path) -> tuple[Bert, WordPieces] | None:
    """Model and tokenizer from an HF BERT directory, or None when it needs transformers (other architecture,
    no safetensors or no tokenizer.json)."""
    cfg_file, weights, tok_file = path / "config.json", path / "model.safetensors", path / "tokenizer.json"
    if not (cfg_file.is_file() and weights.is_file() and tok_file.is_file()):
        return None
    hf = json.loads(cfg_file.read_text())
    if not supported(hf):
        return None
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for damaged files
        raise ValueError(f"{weights.name}: {e}") from None
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    model = Bert(BertConfig.from_hf(hf))
    wanted = set(model.state_dict())  # heads (pooler, MLM/NSP "cls.*") are not part of the encoder: left out
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in wanted}
    if set(state) != wanted or any(state[k].shape != v.shape for k, v in model.state_dict().items()):
        return None  # not the layout this file computes: transformers decides
    model.load_state_dict(state, strict=True)
    limit = hf.get("max_position_embeddings", 512)
    tc = path / "tokenizer_config.json"
    if tc.is_file():
        limit = json.loads(tc.read_text()).get("model_max_length", limit)
    return model.eval(), WordPieces(tok_file, int(min(limit, 1 << 30)) if limit else 512)
