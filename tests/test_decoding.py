"""Greedy / batched beam / top-p decoding on tiny deterministic toy decoders."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from modalbridge.captioning.decoding import Decoded, Hypothesis, beam_search, greedy, sample
from modalbridge.errors import UserError

BOS, EOS = 0, 1


class MarkovDecoder:
    """log p(next | prev, image) = log_softmax(table[prev] + bias[image]); memory is the bias (B, V)."""

    def __init__(self, table: torch.Tensor):
        self.table = table  # (V, V) logits

    def init_state(self, memory):
        return {"bias": memory.float()}

    def step(self, tokens, state):
        return torch.log_softmax(self.table[tokens] + state["bias"], dim=-1), state, None

    def logprob(self, seq: list[int], bias: torch.Tensor) -> float:
        """Exact log-prob of emitting ``seq`` after BOS (float64 reference for brute force)."""
        total, prev = 0.0, BOS
        for tok in seq:
            lp = torch.log_softmax(self.table[prev].double() + bias.double(), dim=-1)
            total += float(lp[tok])
            prev = tok
        return total


class ToyAttnLSTM(nn.Module):
    """A tiny Show-Attend-Tell style decoder: additive attention over P regions + LSTM cell (float64)."""

    def __init__(self, vocab=11, feat=6, hidden=16, seed=0, eos_bias=0.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(vocab, 8)
        self.init_h, self.init_c = nn.Linear(feat, hidden), nn.Linear(feat, hidden)
        self.att_m, self.att_h, self.att_v = nn.Linear(feat, 12), nn.Linear(hidden, 12), nn.Linear(12, 1)
        self.cell = nn.LSTMCell(8 + feat, hidden)
        self.out = nn.Linear(hidden, vocab)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.8)
            self.out.bias[EOS] += eos_bias
        self.double()

    def init_state(self, memory):  # memory (B, P, F)
        mean = memory.mean(1)
        return {"h": torch.tanh(self.init_h(mean)), "c": torch.tanh(self.init_c(mean)), "memory": memory}

    def step(self, tokens, state):
        mem, h, c = state["memory"], state["h"], state["c"]
        e = self.att_v(torch.tanh(self.att_m(mem) + self.att_h(h)[:, None])).squeeze(-1)  # (B, P)
        alpha = torch.softmax(e, dim=-1)
        ctx = (alpha[..., None] * mem).sum(1)  # (B, F)
        h, c = self.cell(torch.cat([self.embed(tokens), ctx], -1), (h, c))
        return torch.log_softmax(self.out(h), -1), {"h": h, "c": c, "memory": mem}, alpha


def _memory(b=6, p=5, f=6, seed=1):
    return torch.randn(b, p, f, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_beam_one_equals_greedy():
    dec = ToyAttnLSTM(eos_bias=1.5)
    mem = _memory(8)
    g = greedy(dec, mem, BOS, EOS, max_len=12)
    b = beam_search(dec, mem, BOS, EOS, beam_size=1, max_len=12)
    assert g.tokens == b.tokens and g.finished == b.finished
    assert g.logprob == b.logprob  # same float32 additions in the same order
    assert any(g.finished) and len({len(t) for t in g.tokens}) > 1  # the fixture exercises EOS at varied lengths
    for a1, a2 in zip(g.attention, b.attention, strict=True):
        assert a1.shape == (len(a1), 5) and torch.allclose(a1, a2)
        assert torch.allclose(a1.sum(-1), torch.ones(len(a1), dtype=a1.dtype))


def test_batched_beam_equals_one_image_at_a_time():
    dec = ToyAttnLSTM(seed=3, eos_bias=1.0)
    mem = _memory(7, seed=4)
    batched = beam_search(dec, mem, BOS, EOS, beam_size=4, max_len=10, length_penalty=0.7)
    for i in range(len(mem)):
        single = beam_search(dec, mem[i : i + 1], BOS, EOS, beam_size=4, max_len=10, length_penalty=0.7)
        assert single.tokens[0] == batched.tokens[i]
        assert single.logprob[0] == pytest.approx(batched.logprob[i], abs=1e-5)
        assert torch.allclose(single.attention[0], batched.attention[i], atol=1e-6)
    # beam search never returns a worse (length-normalised) caption than greedy on this fixture
    g = greedy(dec, mem, BOS, EOS, max_len=10)
    for i in range(len(mem)):
        if g.finished[i] and batched.finished[i]:
            norm_g = g.logprob[i] / (len(g.tokens[i]) + 1) ** 0.7
            norm_b = batched.logprob[i] / (len(batched.tokens[i]) + 1) ** 0.7
            assert norm_b >= norm_g - 1e-6


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_beam_finds_brute_force_optimum(alpha):
    V, max_len = 5, 4
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(7)) * 2
    table[:, BOS] = -math.inf  # never emitted (else BOS-as-a-word makes exact ties between sequences)
    dec = MarkovDecoder(table)
    bias = torch.randn(3, V, generator=torch.Generator().manual_seed(8))
    # a beam wide enough to hold every prefix is exhaustive: compare with enumerating all finished sequences
    res = beam_search(dec, bias, BOS, EOS, beam_size=128, max_len=max_len, length_penalty=alpha)
    words = [t for t in range(V) if t not in (BOS, EOS)]
    for i in range(3):
        best = max(
            (seq for n in range(max_len) for seq in itertools.product(words, repeat=n)),
            key=lambda s: dec.logprob([*s, EOS], bias[i]) / (len(s) + 1) ** alpha,
        )
        assert res.tokens[i] == list(best) and res.finished[i]
        assert res.logprob[i] == pytest.approx(dec.logprob([*best, EOS], bias[i]), abs=1e-5)


def test_eos_fallback_returns_best_unfinished():
    V, max_len = 5, 3
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(2))
    table[:, EOS] = table[:, BOS] = -math.inf  # the decoder never emits EOS
    dec = MarkovDecoder(table)
    bias = torch.zeros(2, V)
    res = beam_search(dec, bias, BOS, EOS, beam_size=16, max_len=max_len)
    words = [t for t in range(V) if t not in (BOS, EOS)]
    best = max(itertools.product(words, repeat=max_len), key=lambda s: dec.logprob(list(s), bias[0]))
    assert res.finished == [False, False]
    assert res.tokens[0] == list(best) and len(res.tokens[1]) == max_len
    assert res.logprob[0] == pytest.approx(dec.logprob(list(best), bias[0]), abs=1e-5)
    g = greedy(dec, bias, BOS, EOS, max_len=max_len)
    assert g.finished == [False, False] and all(len(t) == max_len for t in g.tokens)


def test_length_penalty_changes_choice_as_designed():
    # BOS -> EOS (p .55) | "a"=2 (p .45); "a" -> "b"=3 (p .9) | EOS (p .1); "b" -> EOS (p .99).
    # raw sums: [EOS] -0.598 > [a b EOS] -0.914 > [a EOS] -3.10; per token: -0.305 > -0.598 > -1.55.
    # K=3 finalizes all three (the pool is full after the third), then the penalty picks.
    V = 4
    p = torch.zeros(V, V)  # impossible transitions are log 0 = -inf
    p[EOS] = 0.25  # (never used: EOS is not fed back)
    p[BOS, EOS], p[BOS, 2] = 0.55, 0.45
    p[2, 3], p[2, EOS] = 0.9, 0.1
    p[3, EOS], p[3, 2] = 0.99, 0.01
    dec = MarkovDecoder(p.log())
    bias = torch.zeros(1, V)
    assert beam_search(dec, bias, BOS, EOS, beam_size=3, max_len=5, length_penalty=0.0).tokens == [[]]
    res = beam_search(dec, bias, BOS, EOS, beam_size=3, max_len=5, length_penalty=1.0)
    assert res.tokens == [[2, 3]]
    assert res.logprob[0] == pytest.approx(math.log(0.45) + math.log(0.9) + math.log(0.99), abs=1e-4)
    assert greedy(dec, bias, BOS, EOS).tokens == [[]]


def test_top_p_to_zero_equals_greedy_and_sampling_is_reproducible():
    dec = ToyAttnLSTM(seed=5, eos_bias=1.0)
    mem = _memory(6, seed=6)
    g = greedy(dec, mem, BOS, EOS, max_len=10)
    s = sample(dec, mem, BOS, EOS, top_p=1e-9, max_len=10, generator=torch.Generator().manual_seed(0))
    assert s.tokens == g.tokens and s.logprob == pytest.approx(g.logprob, abs=1e-6)
    assert sample(dec, mem, BOS, EOS, temperature=0, max_len=10).tokens == g.tokens
    a = sample(dec, mem, BOS, EOS, top_p=1.0, max_len=10, generator=torch.Generator().manual_seed(1))
    b = sample(dec, mem, BOS, EOS, top_p=1.0, max_len=10, generator=torch.Generator().manual_seed(1))
    assert a.tokens == b.tokens and a.tokens != g.tokens


def test_top_p_samples_only_from_the_nucleus():
    # every step: p(2)=.5, p(3)=.3, p(4)=.15, p(EOS)=.05; top_p=.7 keeps {2, 3} (mass before 4 is .8 >= .7)
    V = 5
    row = torch.tensor([1e-9, 0.05, 0.5, 0.3, 0.15]).log()
    dec = MarkovDecoder(row.expand(V, V).clone())
    res = sample(dec, torch.zeros(400, V), BOS, EOS, top_p=0.7, max_len=3, generator=torch.Generator().manual_seed(0))
    flat = [t for seq in res.tokens for t in seq]
    assert set(flat) == {2, 3} and not any(res.finished)
    share = flat.count(2) / len(flat)
    assert 0.55 < share < 0.70  # renormalised nucleus: .5 / .8 = .625
    # logprob is the model's own log-probability of the sampled tokens
    expect = sum(math.log(0.5) if t == 2 else math.log(0.3) for t in res.tokens[0])
    assert res.logprob[0] == pytest.approx(expect, abs=1e-4)


class ListCacheDecoder(MarkovDecoder):
    """State holds a Python list (a growing cache) that only its own reorder_state can reorder."""

    def init_state(self, memory):
        return {"bias": memory.float(), "cache": [[] for _ in range(len(memory))]}

    def step(self, tokens, state):
        for row, tok in zip(state["cache"], tokens.tolist(), strict=True):
            row.append(tok)
        lengths = torch.tensor([len(r) for r in state["cache"]], dtype=torch.float32)
        logits = self.table[tokens] + state["bias"]
        logits[:, EOS] += 0.5 * lengths  # EOS grows likelier with the (cached) length
        return torch.log_softmax(logits, -1), state, None

    def reorder_state(self, state, index):
        idx = index.tolist()
        return {"bias": state["bias"][index], "cache": [list(state["cache"][i]) for i in idx]}


def test_custom_reorder_state_is_used():
    V = 6
    dec = ListCacheDecoder(torch.randn(V, V, generator=torch.Generator().manual_seed(9)))
    bias = torch.randn(4, V, generator=torch.Generator().manual_seed(10))
    batched = beam_search(dec, bias, BOS, EOS, beam_size=3, max_len=8)
    for i in range(4):
        assert beam_search(dec, bias[i : i + 1], BOS, EOS, beam_size=3, max_len=8).tokens[0] == batched.tokens[i]
    assert all(batched.finished)


def test_decoded_iterates_hypotheses_and_bad_arguments():
    dec = ToyAttnLSTM()
    res = greedy(dec, _memory(2), BOS, EOS, max_len=4)
    assert isinstance(res, Decoded) and len(res) == 2
    hyp = list(res)[1]
    assert isinstance(hyp, Hypothesis) and hyp.tokens == res.tokens[1] and hyp.attention.shape[0] == len(hyp.tokens)
    assert MarkovDecoder(torch.zeros(3, 3)).step(torch.tensor([0]), {"bias": torch.zeros(1, 3)})[2] is None
    assert greedy(MarkovDecoder(torch.zeros(3, 3)), torch.zeros(2, 3), BOS, EOS, max_len=2).attention is None
    with pytest.raises(UserError):
        beam_search(dec, _memory(2), BOS, EOS, beam_size=0)
    with pytest.raises(UserError):
        sample(dec, _memory(2), BOS, EOS, top_p=0.0)
    with pytest.raises(UserError):
        greedy(dec, _memory(2), BOS, EOS, max_len=0)
