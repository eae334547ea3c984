"""Decoding shared by every caption decoder: greedy, batched beam search, nucleus (top-p) sampling.

Decoder protocol (Show-Attend-Tell LSTM, ClipCap prefix + causal LM, test toys all implement exactly this)::

    state = decoder.init_state(memory)
        # memory: Tensor (B, ...) of image features; state: dict[str, Tensor], every tensor batch-first (B, ...)
    logprobs, state, attn = decoder.step(tokens, state)
        # tokens: LongTensor (B,) = the previous token (BOS at the first step)
        # logprobs: (B, V) log-softmax over the vocabulary; attn: (B, P) attention weights, or None
    state = decoder.reorder_state(state, index)          # optional
        # index: LongTensor (B',) of rows to keep/repeat. Default: ``t.index_select(0, index)`` on every tensor in
        # the dict (non-tensor values are passed through). Implement it when the state holds something else
        # (e.g. a key/value cache object).
    decoder.static_state = ("feats", "proj")             # optional
        # names of state tensors that are per image and constant over the steps (image features and their
        # attention projection). Beam search keeps them at one row per image, (n, ...), while the other tensors
        # hold K rows per image, (n*K, ...) with rows b*K + k; ``step`` must broadcast the K rows of an image
        # against its one row (infer K = rows // images). They are selected only when images leave the batch,
        # never copied per beam or per step.

Notation: B images, K beams, V vocabulary size, P attention positions, T generated tokens.

Conventions for all three functions:
  * ``max_len`` is the number of decoding steps; a hypothesis that has not produced EOS after ``max_len`` steps is
    *unfinished* (``Decoded.finished`` False) and keeps its ``max_len`` tokens.
  * ``Decoded.tokens`` excludes BOS and EOS; ``Decoded.logprob`` is the model's summed log-probability of the
    emitted tokens, EOS included when it was emitted; ``Decoded.attention[i]`` is ``(T_i, P)``: the attention of
    the step that emitted each token (the EOS step's attention is dropped).
  * Everything is batched over the B images at once; results equal decoding one image at a time.

Beam search follows fairseq / Hugging Face (https://arxiv.org/abs/1904.01038): every step takes the top 2K
continuations of an image's K live beams; an EOS among the top K ranks is *finalized* into the image's pool, the
best K non-EOS continuations stay live, so the beam never shrinks. An image is done when its pool holds K
hypotheses (or at ``max_len``); done images are dropped from the batch. The pool's winner is chosen by the
length-normalised score ``logprob / L ** length_penalty`` with L = number of scored tokens (words + EOS); this is
simple length normalisation (HF's convention), not GNMT's ``((5 + L) / 6) ** alpha``: ``0`` = raw sum (favours
short captions), ``1`` = mean token log-prob. EOS fallback: an image with an empty pool at ``max_len`` returns its
best live (unfinished) beam. With K = 1 this is exactly greedy decoding.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from modalbridge.errors import UserError


@dataclass
class Hypothesis:
    """One image's caption: ``tokens`` (no BOS/EOS), summed ``logprob``, ``attention`` (T, P) or None."""

    tokens: list[int]
    logprob: float
    attention: Tensor | None
    finished: bool


@dataclass
class Decoded:
    """Batch result, one entry per image (iterating yields :class:`Hypothesis`).

    Attributes:
        tokens: generated ids per image, without BOS/EOS.
        logprob: sum of the token log-probabilities per image (EOS included when emitted).
        attention: per image a ``(T, P)`` tensor (CPU), or None when the decoder gives no attention.
        finished: whether the caption ended with EOS (False: cut at ``max_len``).
    """

    tokens: list[list[int]]
    logprob: list[float]
    attention: list[Tensor] | None
    finished: list[bool]

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> Hypothesis:
        attn = self.attention[i] if self.attention is not None else None
        return Hypothesis(self.tokens[i], self.logprob[i], attn, self.finished[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def reorder(decoder: Any, state: dict, index: Tensor) -> dict:
    """``decoder.reorder_state`` if it has one, else ``index_select(0, index)`` on every tensor of ``state``."""
    fn = getattr(decoder, "reorder_state", None)
    if fn is not None:
        return fn(state, index)
    return {k: v.index_select(0, index.to(v.device)) if isinstance(v, Tensor) else v for k, v in state.items()}


# What str.splitlines() splits on: a caption is one line, so a token holding any of these ends the caption.
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _is_control(ch: str) -> bool:
    return ch in LINE_BREAKS or unicodedata.category(ch) == "Cc"


def clean_caption(text: str) -> str:
    """One clean line: the text before the first line break, other control characters (tab, NUL, ...) turned into
    spaces, runs of whitespace collapsed, ends stripped. The last guard of the ``IMAGE<TAB>caption`` output."""
    for i, ch in enumerate(text):
        if ch in LINE_BREAKS:
            text = text[:i]
            break
    return " ".join("".join(" " if _is_control(ch) else ch for ch in text).split())


def line_constraints(texts: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token texts (index = id) -> ``(stop, suppress)`` ids for :class:`Constrained`: a token whose text holds a
    line break ends the caption (``.\\n\\n`` included); one holding any other control character is never emitted."""
    stop, suppress = [], []
    for i, t in enumerate(texts):
        if any(ch in LINE_BREAKS for ch in t):
            stop.append(i)
        elif any(_is_control(ch) for ch in t):
            suppress.append(i)
    return stop, suppress


class Constrained:
    """A decoder seen through decoding-time rules (training is untouched): ``stop`` tokens end the caption like EOS
    (their probability is added to EOS's, so a model that wants a newline gets the end of the caption instead) and
    ``suppress`` tokens (``<unk>``, control characters) are never emitted. Log-probabilities are not renormalised:
    ``Decoded.logprob`` stays the model's own probability of what was emitted (a newline counted as EOS)."""

    def __init__(self, decoder: Any, eos_id: int, stop: Sequence[int] = (), suppress: Sequence[int] = ()):
        self.decoder, self.eos_id = decoder, int(eos_id)
        self.stop = sorted({int(i) for i in stop} - {self.eos_id})
        self.banned = sorted(({int(i) for i in suppress} | set(self.stop)) - {self.eos_id})
        self._stop_t = self._banned_t = None

    @property
    def static_state(self) -> tuple[str, ...]:
        return tuple(getattr(self.decoder, "static_state", ()))

    def init_state(self, memory: Tensor) -> dict:
        return self.decoder.init_state(memory)

    def reorder_state(self, state: dict, index: Tensor) -> dict:
        return reorder(self.decoder, state, index)

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict, Tensor | None]:
        logprobs, state, attn = _step(self.decoder, tokens, state)  # (n, V)
        V = logprobs.size(1)
        if self._banned_t is None or self._banned_t.device != logprobs.device:
            self._stop_t = torch.tensor([i for i in self.stop if i < V], dtype=torch.long, device=logprobs.device)
            self._banned_t = torch.tensor([i for i in self.banned if i < V], dtype=torch.long, device=logprobs.device)
        if self._stop_t.numel():
            eos = torch.cat([logprobs[:, self.eos_id : self.eos_id + 1], logprobs[:, self._stop_t]], 1)  # (n, 1+S)
            logprobs = logprobs.clone()
            logprobs[:, self.eos_id] = torch.logsumexp(eos, dim=1)
        if self._banned_t.numel():
            logprobs = logprobs.index_fill(1, self._banned_t, -math.inf)
        return logprobs, state, attn


def _check(memory: Tensor, max_len: int) -> int:
    if not isinstance(memory, Tensor) or memory.dim() < 1 or memory.size(0) == 0:
        raise UserError("memory must be a tensor of image features with a non-empty batch dimension")
    if max_len < 1:
        raise UserError(f"max_len must be >= 1, got {max_len}")
    return memory.size(0)


def _step(decoder: Any, tokens: Tensor, state: dict) -> tuple[Tensor, dict, Tensor | None]:
    logprobs, state, attn = decoder.step(tokens, state)
    if logprobs.dim() != 2 or logprobs.size(0) != tokens.size(0):
        raise ValueError(f"decoder.step returned logprobs of shape {tuple(logprobs.shape)}, expected (B, V)")
    return logprobs.float(), state, attn


def _pack(tokens, logprob, attn_rows, finished, has_attn: bool) -> Decoded:
    attention = [a.cpu() for a in attn_rows] if has_attn else None
    return Decoded(tokens, logprob, attention, finished)


@torch.no_grad()
def greedy(decoder: Any, memory: Tensor, bos_id: int, eos_id: int, max_len: int = 20) -> Decoded:
    """Arg-max decoding of all images at once (``beam_search`` with ``beam_size=1`` gives the same captions)."""
    return _sequential(decoder, memory, bos_id, eos_id, max_len, pick=lambda lp: lp.argmax(dim=-1))


@torch.no_grad()
def sample(
    decoder: Any,
    memory: Tensor,
    bos_id: int,
    eos_id: int,
    top_p: float = 0.9,
    temperature: float = 1.0,
    max_len: int = 20,
    generator: torch.Generator | None = None,
) -> Decoded:
    """Nucleus sampling (Holtzman et al. 2020, https://arxiv.org/abs/1904.09751).

    Each step samples from the smallest set of most likely tokens whose probability (after ``temperature``) reaches
    ``top_p``; the most likely token is always in the set, so ``top_p -> 0`` (or ``temperature == 0``) is greedy.
    ``Decoded.logprob`` is the model's own log-probability of the sampled tokens (before temperature/truncation).

    Args:
        generator: a ``torch.Generator`` on the decoder's device, for reproducible samples.
    """
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return greedy(decoder, memory, bos_id, eos_id, max_len)

    def pick(logprobs: Tensor) -> Tensor:
        probs = torch.softmax(logprobs / temperature, dim=-1)  # (n, V)
        sorted_p, order = probs.sort(dim=-1, descending=True)  # (n, V)
        # keep a token when the mass *before* it is below top_p (so the first token is always kept)
        keep = (sorted_p.cumsum(dim=-1) - sorted_p) < top_p
        keep[:, 0] = True
        sorted_p = sorted_p.masked_fill(~keep, 0.0)
        choice = torch.multinomial(sorted_p, 1, generator=generator)  # (n, 1), renormalises internally
        return order.gather(1, choice).squeeze(1)  # (n,)

    return _sequential(decoder, memory, bos_id, eos_id, max_len, pick=pick)


def _sequential(decoder, memory: Tensor, bos_id: int, eos_id: int, max_len: int, pick) -> Decoded:
    """Shared loop of greedy and sampling: one token per image per step; finished images leave the batch."""
    B = _check(memory, max_len)
    device = memory.device
    state = decoder.init_state(memory)
    tokens = torch.full((B,), bos_id, dtype=torch.long, device=device)  # (n,)
    active = torch.arange(B, device=device)  # original image index of each row
    out_tokens: list[list[int]] = [[] for _ in range(B)]
    lp_sum = torch.zeros(B, device=device)  # (B,) float32 sums, added in the same order as beam search's scores
    out_attn: list[list[Tensor]] = [[] for _ in range(B)]
    finished = [False] * B
    has_attn = False
    for _t in range(max_len):
        logprobs, state, attn = _step(decoder, tokens, state)  # (n, V), (n, P) | None
        nxt = pick(logprobs)  # (n,)
        lp_sum.index_add_(0, active, logprobs.gather(1, nxt[:, None]).squeeze(1))  # (B,)
        has_attn = attn is not None
        is_eos = nxt == eos_id  # (n,)
        rows, toks, eos = active.tolist(), nxt.tolist(), is_eos.tolist()
        attn_cpu = attn.float().cpu() if has_attn else None
        for r, (b, tok, e) in enumerate(zip(rows, toks, eos, strict=True)):
            if e:
                finished[b] = True
            else:
                out_tokens[b].append(tok)
                if has_attn:
                    out_attn[b].append(attn_cpu[r])
        if bool(is_eos.all()):
            break
        if bool(is_eos.any()):
            keep = (~is_eos).nonzero().squeeze(1)  # (n',)
            state = reorder(decoder, state, keep)
            active, nxt = active[keep], nxt[keep]
        tokens = nxt
    attn_rows = [torch.stack(a) if a else torch.zeros(0, 0) for a in out_attn] if has_attn else []
    if has_attn:
        P = next((a.size(1) for a in attn_rows if a.numel()), 0)
        attn_rows = [a if a.numel() else torch.zeros(0, P) for a in attn_rows]
    return _pack(out_tokens, lp_sum.tolist(), attn_rows, finished, has_attn)


@torch.no_grad()
def beam_search(
    decoder: Any,
    memory: Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int = 5,
    max_len: int = 20,
    length_penalty: float = 1.0,
) -> Decoded:
    """Batched beam search: B images x K beams in one tensor (see the module docstring for the exact rules).

    Args:
        beam_size: K, beams per image.
        max_len: decoding steps.
        length_penalty: exponent of the length normalisation ``logprob / L ** length_penalty`` (0 = raw sum).
    """
    B = _check(memory, max_len)
    K = int(beam_size)
    if K < 1:
        raise UserError(f"beam size must be >= 1, got {beam_size}")
    device = memory.device
    state = decoder.init_state(memory)
    # per-image constants stay at one row per image (n, ...): no per-beam copies (see ``static_state`` above)
    const = {k: state.pop(k) for k in getattr(decoder, "static_state", ()) if k in state}
    state = reorder(decoder, state, torch.arange(B, device=device).repeat_interleave(K))  # rows b*K + k
    tokens = torch.full((B * K,), bos_id, dtype=torch.long, device=device)  # (n*K,)
    scores = torch.full((B, K), -math.inf, device=device)  # (n, K) summed log-probs of live beams
    scores[:, 0] = 0.0  # only one live beam at the start, so the first step does not pick K copies
    hist = torch.zeros(B, K, 0, dtype=torch.long, device=device)  # (n, K, t) tokens of live beams
    attn_hist: Tensor | None = None  # (n, K, t, P)
    active = list(range(B))  # original image index of each of the n rows-groups
    pools: list[list[tuple[float, float, list[int], Tensor | None]]] = [[] for _ in range(B)]
    has_attn = False
    for t in range(max_len):
        n = len(active)
        logprobs, state, attn = _step(decoder, tokens, {**state, **const})  # (n*K, V), (n*K, P) | None
        if const:
            state = {k: v for k, v in state.items() if k not in const}
        V = logprobs.size(1)
        cand = (scores.unsqueeze(-1) + logprobs.view(n, K, V)).view(n, K * V)  # (n, K*V)
        top_v, top_i = cand.topk(min(2 * K, K * V), dim=1)  # (n, 2K), sorted best first
        beam = top_i // V  # (n, 2K) which live beam each candidate extends
        tok = top_i % V  # (n, 2K)
        is_eos = tok == eos_id
        has_attn = attn is not None
        if has_attn:
            step_attn = attn.float().view(n, K, -1)  # (n, K, P)
            a_all = step_attn.unsqueeze(2) if attn_hist is None else torch.cat([attn_hist, step_attn.unsqueeze(2)], 2)
        # 1) finalize EOS continuations ranked in the top K (finite scores only)
        fin = is_eos[:, :K] & torch.isfinite(top_v[:, :K])
        if bool(fin.any()):
            fin_v, fin_b = top_v.tolist(), beam.tolist()
            for i, r in fin.nonzero().tolist():
                pool = pools[active[i]]
                if len(pool) >= K:
                    continue
                raw, k = fin_v[i][r], fin_b[i][r]
                norm = raw / (t + 1) ** length_penalty  # t words + EOS
                words = hist[i, k].tolist()
                a = a_all[i, k, :t].cpu() if has_attn else None  # the EOS step's attention is dropped
                pool.append((norm, raw, words, a))
        # 2) the best K non-EOS continuations stay live (stable sort keeps the score order)
        order = torch.argsort(is_eos.to(torch.int8), dim=1, stable=True)[:, :K]  # (n, K)
        sel_beam = beam.gather(1, order)  # (n, K)
        sel_tok = tok.gather(1, order)  # (n, K)
        scores = top_v.gather(1, order)  # (n, K)
        hist = torch.cat([hist.gather(1, sel_beam.unsqueeze(-1).expand(-1, -1, t)), sel_tok.unsqueeze(-1)], 2)
        if has_attn:
            idx = sel_beam[:, :, None, None].expand(-1, -1, t + 1, a_all.size(-1))
            attn_hist = a_all.gather(1, idx)  # (n, K, t+1, P)
        # 3) images with K finalized hypotheses are done: drop their rows from the batch
        keep = [i for i in range(n) if len(pools[active[i]]) < K]
        if not keep or t == max_len - 1:
            break
        keep_t = torch.tensor(keep, device=device)
        rows = (keep_t[:, None] * K + sel_beam[keep_t]).reshape(-1)  # (n'*K,) parent row of each new beam
        state = reorder(decoder, state, rows)
        if const and len(keep) < n:
            const = {k: v.index_select(0, keep_t) for k, v in const.items()}  # (n', ...)
        tokens = sel_tok[keep_t].reshape(-1)
        scores, hist = scores[keep_t], hist[keep_t]
        if has_attn:
            attn_hist = attn_hist[keep_t]
        active = [active[i] for i in keep]
    # EOS fallback: images whose pool is empty take their best live beam (all live beams have the same length)
    live = {b: i for i, b in enumerate(active)}
    out_tokens, out_lp, out_attn, finished = [], [], [], []
    for b in range(B):
        if pools[b]:
            best = max(pools[b], key=lambda h: h[0])  # first finalized wins ties
            out_tokens.append(best[2])
            out_lp.append(best[1])
            out_attn.append(best[3])
            finished.append(True)
        else:
            i = live[b]
            out_tokens.append(hist[i, 0].tolist())
            out_lp.append(float(scores[i, 0]))
            out_attn.append(attn_hist[i, 0].cpu() if has_attn else None)
            finished.append(False)
    return _pack(out_tokens, out_lp, out_attn, finished, has_attn)
