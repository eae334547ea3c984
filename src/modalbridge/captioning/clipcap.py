"""ClipCap: a learned prefix that turns image features into the first tokens of a (frozen) causal language model.

Mokady et al. 2021, https://arxiv.org/abs/2111.09734. Notation: B batch, C image-feature channels, P image regions,
L prefix length (LM positions the image occupies), K number of mapper input tokens ("clip_length"), D LM hidden
size, T caption tokens fed, V LM vocabulary size.

    pooled (B, C) or grid (B, P, C) ──Mapper──► prefix (B, L, D) ──[prefix; E(<bos> w_1 .. w_n)]──► LM ──► w_1 .. <eos>

* ``mapper="mlp"`` (§3.1, used with a fine-tuned LM): Linear(C, L·D/2) → tanh → Linear(L·D).
* ``mapper="transformer"`` (§3.1, used with a frozen LM): the image becomes K tokens (a linear map of the pooled
  vector, or the P grid features projected to D), concatenated with L learned constants; a transformer encoder
  mixes them and the outputs at the constants' positions are the prefix.

The LM (any ``transformers`` causal LM, loaded by :func:`modalbridge.captioning.lm.load_lm` from ``config.lm``) is
built with the module. When it is frozen it stays in eval mode and its weights are left out of ``state_dict()``: a
model directory then holds only the mapper, and loading it re-reads the LM from its own source.

``lm_dtype="bfloat16"`` (frozen LM only) stores the LM's matrices in bfloat16 and runs its matrix products in bfloat16
under autocast, while the residual stream, the norms, the rotary tables, the mapper and the loss stay float32. It
trains like float32 and takes ~1.8x fewer seconds a step on CPUs with AVX512-BF16 or AMX (bench/bench_clipcap.py,
docs/results.md "ClipCap"). Attention then runs in the LM's eager implementation: on a CPU the backward of
PyTorch's fused bf16 attention kernel is ~10x slower than float32 at caption lengths. Training and captioning use the
same setting (it is recorded in ``config.json``). Trained under ``trainer.precision=bf16-mixed`` as well
(configs/caption/clipcap_fashion.yaml), the trainable mapper's products run in bf16 too, on float32 weights; under
any CPU autocast, the mapper's and the LM's attention take PyTorch's math path (:func:`cpu_autocast_attention`).

With targets (training), the loss is fused with the LM's output layer (``decoder.linear_cross_entropy``): the
(N, V) logits over the LM's vocabulary are never stored.

Decoding follows the protocol of :mod:`modalbridge.captioning.decoding` with the LM's key/value cache: ``init_state``
runs the LM over the prefix once, each ``step`` feeds one token. The cache's per-layer keys and values live in the
state dict as plain ``(B, heads, S, head_dim)`` tensors, so beam search reorders them like any other state. An LM
module without a cache argument is rerun over prefix + tokens at every step instead (``RecomputingClipCap`` always
does that: the reference the cache must agree with).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from modalbridge.captioning.decoder import DECODERS, IGNORE, CaptionDecoder, CaptionOutput, linear_cross_entropy
from modalbridge.captioning.decoding import clean_caption, line_constraints
from modalbridge.captioning.lm import load_lm, special_ids
from modalbridge.errors import UserError
from modalbridge.registry import MODELS


@dataclass
class ClipCapConfig:
    lm: str = "gpt2"  # causal LM: hub id, local dir, .gguf file, or "smollm2"
    lm_dim: int = 768  # D (recorded; checked against the loaded LM)
    vocab_size: int = 50257  # V of the LM
    feature_dim: int = 512  # C
    num_positions: int = 1  # P of the encoder's grid
    feature: Literal["pooled", "grid"] = "pooled"  # which image features the mapper reads
    mapper: Literal["mlp", "transformer"] = "mlp"
    prefix_length: int = 10  # L
    clip_length: int = 10  # K (transformer mapper on pooled features)
    mapper_layers: int = 8
    mapper_heads: int = 8
    freeze_lm: bool = True
    lm_dtype: Literal["float32", "bfloat16"] = "float32"  # the frozen LM's weights and matrix products (see above)
    max_len: int = 30  # longest caption (LM tokens) decoded by default
    bos_id: int = 50256
    eos_id: int = 50256
    pad_id: int = 50256
    encoder: str = "openai/clip-vit-base-patch32"  # image encoder (name or path) whose features this reads
    encoder_kind: str = "clip"


def cpu_autocast_attention(device: torch.device):
    """PyTorch's plain (math) attention instead of its fused kernel under bfloat16 autocast on a CPU (e.g.
    ``trainer.precision=bf16-mixed``): the fused CPU kernel's bf16 backward is ~10x slower than float32's at
    caption lengths (bench/bench_clipcap.py); the math path runs the same products as batched matmuls."""
    if device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


class MLPMapper(nn.Module):
    def __init__(self, c: ClipCapConfig):
        super().__init__()
        self.L, self.D = c.prefix_length, c.lm_dim
        hidden = max(1, c.prefix_length * c.lm_dim // 2)
        self.net = nn.Sequential(
            nn.Linear(c.feature_dim, hidden), nn.Tanh(), nn.Linear(hidden, c.prefix_length * c.lm_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(1) if x.dim() == 3 else x  # (B, C)
        return self.net(x).view(x.shape[0], self.L, self.D)  # (B, L, D)


class TransformerMapper(nn.Module):
    def __init__(self, c: ClipCapConfig):
        super().__init__()
        self.c = c
        out = c.lm_dim if c.feature == "grid" else c.clip_length * c.lm_dim
        self.inp = nn.Linear(c.feature_dim, out)
        self.prefix_const = nn.Parameter(torch.randn(c.prefix_length, c.lm_dim))  # (L, D) learned queries
        layer = nn.TransformerEncoderLayer(
            c.lm_dim, c.mapper_heads, dim_feedforward=2 * c.lm_dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, c.mapper_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape[0], self.c.prefix_length, self.c.lm_dim
        if x.dim() == 3:
            tokens = self.inp(x)  # (B, P, D): one token per region
        else:
            tokens = self.inp(x).view(B, self.c.clip_length, D)  # (B, K, D)
        h = torch.cat([tokens, self.prefix_const.expand(B, L, D)], 1)  # (B, K + L, D)
        with cpu_autocast_attention(h.device):
            return self.transformer(h)[:, -L:]  # (B, L, D)


@DECODERS.register("clipcap")
@MODELS.register("clipcap")
class ClipCap(CaptionDecoder):
    model_type = "clipcap"
    config_class = ClipCapConfig
    feature = "pooled"  # the config's default; an instance follows ``config.feature``

    def __init__(self, config: ClipCapConfig, lm: nn.Module | None = None, tokenizer=None):
        super().__init__()
        self.config = c = config
        if lm is None:
            lm, tokenizer = load_lm(c.lm)
        self.lm = lm
        self.tokenizer = tokenizer
        dim = lm.get_input_embeddings().weight.shape[1]
        if dim != c.lm_dim:
            raise UserError(f"language model '{c.lm}' has hidden size {dim}, but the config says lm_dim={c.lm_dim}")
        if c.mapper == "transformer" and c.lm_dim % c.mapper_heads:
            raise UserError(f"mapper_heads={c.mapper_heads} must divide the LM hidden size {c.lm_dim}")
        self.feature = c.feature
        self.mapper = MLPMapper(c) if c.mapper == "mlp" else TransformerMapper(c)
        if c.freeze_lm:
            for p in self.lm.parameters():
                p.requires_grad_(False)
            self.register_state_dict_post_hook(_drop_lm_keys)
            self.register_load_state_dict_post_hook(_allow_missing_lm_keys)
        if c.lm_dtype == "bfloat16":
            if not c.freeze_lm:
                raise UserError("lm_dtype=bfloat16 needs freeze_lm=true (a fine-tuned LM keeps float32 weights)")
            _bf16_matrices(self.lm)
        self.train(self.training)

    @classmethod
    def from_lm(cls, lm_spec: str, **kwargs) -> ClipCap:
        """Build with ``lm_dim``, ``vocab_size`` and special ids read from the LM itself."""
        lm, tok = load_lm(lm_spec)
        bos, eos, pad = special_ids(tok)
        dim, vocab = lm.get_input_embeddings().weight.shape[1], lm.get_output_embeddings().weight.shape[0]
        cfg = ClipCapConfig(lm=lm_spec, lm_dim=dim, vocab_size=vocab, bos_id=bos, eos_id=eos, pad_id=pad, **kwargs)
        return cls(cfg, lm=lm, tokenizer=tok)

    def never_generated(self) -> list[int]:
        c = self.config  # GPT-2's one <|endoftext|> is bos, eos and pad at once: then nothing is masked
        return sorted({c.bos_id, c.pad_id} - {c.eos_id})

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_lm:
            self.lm.eval()  # a frozen LM keeps its dropout off
        return self

    def prefix(self, memory: torch.Tensor) -> torch.Tensor:
        return self.mapper(memory.float())  # (B, L, D)

    @contextlib.contextmanager
    def _lm_precision(self, device: torch.device):
        """Autocast to bfloat16 around every LM call when ``lm_dtype`` is bfloat16 (its weights are bf16 then); plain
        attention under any CPU autocast (:func:`cpu_autocast_attention`)."""
        bf16 = self.config.lm_dtype == "bfloat16"  # else an outer autocast (trainer precision) still applies
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            with cpu_autocast_attention(device):
                yield

    def _lm_logits(self, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        emb = self.lm.get_input_embeddings()(tokens)  # (B, T, D)
        h = torch.cat([prefix, emb.to(prefix.dtype)], 1)  # (B, L + T, D)
        with self._lm_precision(h.device):
            return self.lm(inputs_embeds=h, use_cache=False).logits  # (B, L + T, V)

    def forward(
        self, memory: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor | None = None
    ) -> CaptionOutput:
        """One LM pass over [prefix; E(input_ids)]; right padding needs no mask because the LM is causal.

        Without targets: logits ``(B, T, V)``. With targets (training), the LM's output layer runs only on the N
        scored positions - not on the prefix, not on padding - fused with the loss when that layer is frozen
        (``logits`` is then None), else ``logits`` is ``(N, V)`` of those positions (row order of
        ``targets[targets != IGNORE]``); either way the loss equals the one over full logits (tested).
        """
        L = self.config.prefix_length
        prefix = self.prefix(memory)
        split = self._body_and_head() if targets is not None else None
        if split is not None:
            body, head = split
            emb = self.lm.get_input_embeddings()(input_ids)  # (B, T, D)
            with self._lm_precision(prefix.device):
                out = body(inputs_embeds=torch.cat([prefix, emb.to(prefix.dtype)], 1), use_cache=False)
            keep = targets != IGNORE  # (B, T)
            h = out.last_hidden_state[:, L:][keep]  # (N, D)
            if not any(p.requires_grad for p in head.parameters()):
                loss = linear_cross_entropy(h, head, targets[keep], self.never_generated())
                return CaptionOutput(loss=loss, logits=None, attention=None)
            logits = self._mask(head(h))  # (N, V)
            loss = F.cross_entropy(logits.float(), targets[keep])
            return CaptionOutput(loss=loss, logits=logits, attention=None)
        logits = self._mask(self._lm_logits(prefix, input_ids)[:, L:])  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)
        return CaptionOutput(loss=loss, logits=logits, attention=None)

    def _body_and_head(self):
        """(transformer body, output layer) of the LM when its logits are just ``head(body(x).last_hidden_state)``
        (GPT-2, Llama/SmolLM2, most causal LMs); None for LMs that post-process logits (soft-capping, scaling)."""
        lm, head = self.lm, self.lm.get_output_embeddings()
        body = getattr(lm, "base_model", None)
        cfg = getattr(lm, "config", None)
        if head is None or body is None or body is lm or any(
                getattr(cfg, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale")):
            return None
        return body, head

    def init_state(self, memory: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._cache_keyword() is None:  # an LM without a key/value cache: recompute at every step
            return self._recompute_init(memory)
        prefix = self.prefix(memory)  # (B, L, D)
        _, cache = self._lm_cached(prefix, None)
        return kv_state(cache)  # the LM has read the prefix once

    def _step(self, tokens, state):
        if "prefix" in state:
            return self._recompute_step(tokens, state)
        emb = self.lm.get_input_embeddings()(tokens)[:, None]  # (B, 1, D)
        # the residual stream's dtype: float32 under lm_dtype=bfloat16 (whose cached keys/values are bf16)
        dtype = torch.float32 if self.config.lm_dtype == "bfloat16" else next(iter(state.values())).dtype
        logits, cache = self._lm_cached(emb.to(dtype), kv_cache(state))
        return logits[:, -1], kv_state(cache), None  # (B, V)

    def _recompute_init(self, memory: torch.Tensor) -> dict[str, torch.Tensor]:
        prefix = self.prefix(memory)  # (B, L, D)
        return {"prefix": prefix, "tokens": torch.zeros(prefix.shape[0], 0, dtype=torch.long, device=prefix.device)}

    def _recompute_step(self, tokens, state):
        seq = torch.cat([state["tokens"], tokens[:, None]], 1)  # (B, t)
        logits = self._lm_logits(state["prefix"], seq)[:, -1]  # (B, V): the LM over prefix + every token so far
        return logits, {"prefix": state["prefix"], "tokens": seq}, None

    def _cache_keyword(self) -> str | None:
        """The LM's key/value-cache argument: ``cache`` in recent transformers, ``past_key_values`` before, None
        for a module without one."""
        if not hasattr(self, "_cache_kw"):
            import inspect

            params = inspect.signature(self.lm.forward).parameters
            self._cache_kw = next((k for k in ("cache", "past_key_values") if k in params), None)
        return self._cache_kw

    def _lm_cached(self, embeds: torch.Tensor, cache):
        """One LM call that reads and extends a key/value cache: ``(logits (B, S, V), cache)``."""
        kw = {} if cache is None else {self._cache_keyword(): cache}
        with self._lm_precision(embeds.device):
            out = self.lm(inputs_embeds=embeds, use_cache=True, **kw)
        new = getattr(out, "cache", None)
        return out.logits, new if new is not None else out.past_key_values

    def encode_text(self, text: str, max_len: int | None = None) -> list[int]:
        """Caption -> ``[bos] + ids + [eos]`` with the LM's subword tokenizer (ids truncated to ``max_len``)."""
        ids = self.tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
        if max_len is not None:
            ids = ids[:max_len]
        return [self.config.bos_id, *ids, self.config.eos_id]

    def decode_text(self, ids) -> str:
        """Ids -> one caption line: cut at EOS, special tokens dropped, cut at the first line break, no control
        characters (an LM trained on documents readily continues "a red umbrella." with "\\n\\nThis is ...")."""
        ids = [int(i) for i in ids]
        if self.config.eos_id in ids:
            ids = ids[: ids.index(self.config.eos_id)]
        ids = [i for i in ids if i not in (self.config.bos_id, self.config.pad_id)]
        return clean_caption(self.tokenizer.decode(ids, skip_special_tokens=True))

    def line_constraints(self) -> tuple[list[int], list[int]]:
        """``(stop, suppress)`` ids for decoding (see :func:`~modalbridge.captioning.decoding.line_constraints`):
        tokens holding a line break end the caption, other control-character tokens and the tokenizer's unknown
        token are never emitted. Computed once from the tokenizer (one decode per vocabulary entry)."""
        if getattr(self, "_line_constraints", None) is None:
            tok, n = self.tokenizer, min(self.config.vocab_size, len(self.tokenizer))
            texts = tok.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
            stop, suppress = line_constraints(texts)
            unk = getattr(tok, "unk_token_id", None)
            if unk is not None and unk != self.config.eos_id:
                suppress.append(int(unk))
            self._line_constraints = (stop, sorted(set(suppress)))
        return self._line_constraints


class RecomputingClipCap(ClipCap):
    """Reference decoding without the key/value cache: the LM reruns over prefix + every token so far at each step
    (what ClipCap did before the cache). The cached decoding must agree with it (tests/test_clipcap.py,
    bench/bench_clipcap.py). Build it around an existing model's LM and copy the mapper's weights."""

    def init_state(self, memory: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._recompute_init(memory)


def _bf16_matrices(lm: nn.Module) -> None:
    """bfloat16 weights for the LM's linear and embedding layers (GPT-2's ``Conv1D`` included; norms and rotary
    buffers stay float32) and its eager attention (see the module docstring for why)."""
    for module in lm.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) or type(module).__name__ == "Conv1D":
            module.to(torch.bfloat16)
    if getattr(lm.config, "_attn_implementation", None) == "sdpa" and hasattr(lm, "set_attn_implementation"):
        lm.set_attn_implementation("eager")


def kv_state(cache) -> dict[str, torch.Tensor]:
    """An HF key/value cache -> ``{"k0": (B, heads, S, head_dim), "v0": ..., "k1": ...}``: decoding state that
    ``reorder_state`` can index like any other. Sliding-window caches are not supported (their layers carry more)."""
    state = {}
    for i, (k, v, *rest) in enumerate(cache):
        if rest and rest[0] is not None:
            raise UserError("ClipCap decoding does not support language models with sliding-window attention")
        state[f"k{i}"], state[f"v{i}"] = k, v
    return state


def kv_cache(state: dict[str, torch.Tensor]):
    """The inverse of :func:`kv_state`: a ``DynamicCache`` over the state's keys and values."""
    from transformers import DynamicCache

    n = len(state) // 2
    return DynamicCache(ddp_cache_data=[(state[f"k{i}"], state[f"v{i}"]) for i in range(n)])


def _drop_lm_keys(module: ClipCap, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "lm.")]:
        del state_dict[key]


def _allow_missing_lm_keys(module: ClipCap, incompatible_keys) -> None:
    # Keys arrive with the full prefix of the root module being loaded (e.g. "model.lm.transformer.wte.weight").
    lm_keys = {"lm." + k for k in module.lm.state_dict(keep_vars=True)}
    missing = incompatible_keys.missing_keys
    for key in list(missing):
        i = key.find("lm.")
        while i >= 0:
            if (i == 0 or key[i - 1] == ".") and key[i:] in lm_keys:
                missing.remove(key)
                break
            i = key.find("lm.", i + 1)
