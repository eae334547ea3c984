"""Show and Tell / Show, Attend and Tell: shapes, loss terms, the decoder protocol (every registered decoder
also goes through the battery in test_registry.py)."""

from __future__ import annotations

import pytest
import torch

from modalbridge import checkpoint
from modalbridge.captioning.decoder import IGNORE
from modalbridge.captioning.sat import SATConfig, ShowAttendTell, ShowTell

B, T, P, C, V = 3, 6, 4, 16, 99


def tiny(**kw) -> SATConfig:
    base = dict(vocab_size=V, feature_dim=C, num_positions=P, embed_dim=32, hidden_dim=32, attention_dim=32,
                dropout=0.0, max_len=8)
    return SATConfig(**{**base, **kw})


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, P, C, generator=g)
    ids = torch.randint(4, V, (B, T), generator=g)
    ids[:, 0] = 1  # <bos>
    targets = torch.cat([ids[:, 1:], torch.full((B, 1), 2)], 1)  # w_1 .. <eos>
    targets[0, 3:] = IGNORE  # a shorter caption
    return feats, ids, targets


def test_show_attend_tell_attention_and_regulariser():
    torch.manual_seed(0)
    model = ShowAttendTell(tiny(alpha_c=1.0))
    feats, ids, targets = batch()
    out = model(feats, ids, targets)
    assert out.attention.shape == (B, T, P)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(B, T))
    ce = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    mask = (targets != IGNORE).float()
    reg = ((1 - (out.attention * mask[..., None]).sum(1)) ** 2).sum(-1).mean()
    torch.testing.assert_close(out.loss, ce + reg)
    model.config.alpha_c = 0.0
    torch.testing.assert_close(model(feats, ids, targets).loss, ce)
    # The gate β scales the context: with f_β forced to -inf the image vanishes from the LSTM input.
    with torch.no_grad():
        model.gate.bias.fill_(-1e4)
    z, alpha = model.attend(model.init_state(feats))
    assert z.abs().max() < 1e-6 and alpha.shape == (B, P)


def test_show_tell_sees_the_image_only_first():
    torch.manual_seed(0)
    model = ShowTell(tiny()).eval()
    feats, ids, _ = batch()
    a, b = model(feats, ids).logits, model(feats * 2 + 1, ids).logits
    assert not torch.allclose(a, b)  # the image matters through the initial state
    assert model.step(ids[:, 0], model.init_state(feats))[2] is None  # no attention


@pytest.mark.parametrize("cls", [ShowTell, ShowAttendTell])
def test_teacher_forcing_equals_stepping(cls):
    """forward applies the output layer to all steps at once; decoding steps one at a time: same log-probs."""
    torch.manual_seed(0)
    model = cls(tiny()).eval()
    feats, ids, _ = batch()
    out = model(feats, ids)
    state, steps, attns = model.init_state(feats), [], []
    for t in range(T):
        logprobs, state, attn = model.step(ids[:, t], state)
        steps.append(logprobs)
        attns.append(attn)
    torch.testing.assert_close(out.logits.log_softmax(-1), torch.stack(steps, 1))
    if cls is ShowAttendTell:
        torch.testing.assert_close(out.attention, torch.stack(attns, 1))


def test_padding_does_not_change_earlier_positions():
    torch.manual_seed(0)
    model = ShowAttendTell(tiny()).eval()
    feats, ids, _ = batch()
    longer = torch.cat([ids, torch.zeros(B, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(model(feats, ids).logits, model(feats, longer).logits[:, :T])


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = ShowAttendTell(tiny(encoder="efficientnet-lite0")).eval()
    checkpoint.save(model, tmp_path / "m", vocab={"itos": []}, metrics={"CIDEr": 1.0})
    loaded = checkpoint.load(tmp_path / "m", expected=("show_attend_tell",))
    feats, ids, _ = batch()
    torch.testing.assert_close(loaded(feats, ids).logits, model(feats, ids).logits)
    assert loaded.config == model.config


@pytest.mark.parametrize("cls", [ShowTell, ShowAttendTell])
def test_beam_one_equals_greedy(cls):
    from modalbridge.captioning import decoding

    torch.manual_seed(1)
    model = cls(tiny(vocab_size=12)).eval()
    with torch.no_grad():  # a less flat random output layer gives varied captions
        torch.nn.init.normal_(model.out.weight, std=1.0)
    feats = torch.randn(6, P, C) * 3
    memory = feats if model.feature == "grid" else feats.mean(1)
    kw = dict(bos_id=1, eos_id=2, max_len=8)
    greedy = decoding.greedy(model, memory, **kw)
    beam1 = decoding.beam_search(model, memory, beam_size=1, **kw)
    assert greedy.tokens == beam1.tokens and greedy.finished == beam1.finished
    assert len({tuple(t) for t in greedy.tokens}) >= 2  # not one degenerate caption for every image
    torch.testing.assert_close(torch.tensor(greedy.logprob), torch.tensor(beam1.logprob))
    if cls is ShowAttendTell:
        for a, b, toks in zip(greedy.attention, beam1.attention, greedy.tokens, strict=True):
            assert a.shape == (len(toks), P)
            torch.testing.assert_close(a, b)
    else:
        assert greedy.attention is None
