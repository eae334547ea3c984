"""One battery over the registries (timm's tests/test_models.py over ``list_models()``): every registered model type
gets forward, backward without NaN and save -> load with equal outputs from its tiny builder in tests/tiny.py; every
caption decoder also gets teacher forcing == stepping, beam 1 == greedy and state reordering; every mapper kind
gets forward/backward and a round trip. A new registered name without a builder fails the first test."""

from __future__ import annotations

import pytest
import torch
from tiny import MODEL_BUILDERS, build_t2i_mapper, caption_batch

from modalbridge import checkpoint
from modalbridge.captioning import decoding
from modalbridge.captioning.decoder import DECODERS
from modalbridge.registry import MODELS, load_builtins
from modalbridge.t2i.mapper import MAPPERS

load_builtins()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_registered_model_type_has_a_tiny_builder():
    assert set(MODEL_BUILDERS) == set(MODELS), set(MODELS) ^ set(MODEL_BUILDERS)
    assert set(DECODERS) <= set(MODELS)


def _backward_is_finite(model: torch.nn.Module, out: torch.Tensor) -> None:
    assert not torch.isnan(out).any()  # -inf is allowed: decoders mask tokens they never generate (<pad>, <bos>)
    out[torch.isfinite(out)].float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_forward_backward_no_nan(name, tmp_path):
    torch.manual_seed(0)
    model, run, _ = MODEL_BUILDERS[name](tmp_path)
    assert isinstance(model, MODELS[name])
    model.train()
    _backward_is_finite(model, run(model))


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_save_load_gives_equal_outputs(name, tmp_path):
    torch.manual_seed(0)
    model, run, save_kwargs = MODEL_BUILDERS[name](tmp_path)
    model.eval()
    checkpoint.save(model, tmp_path / "saved", **save_kwargs)
    loaded = checkpoint.load(tmp_path / "saved", expected=name)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(run(loaded), run(model), rtol=0, atol=0)


@pytest.mark.parametrize("kind", sorted(MAPPERS))
def test_every_mapper_kind(kind, tmp_path):
    torch.manual_seed(0)
    model, run, save_kwargs = build_t2i_mapper(tmp_path, kind)
    model.train()
    _backward_is_finite(model, run(model))
    model.eval()
    checkpoint.save(model, tmp_path / "m", **save_kwargs)
    with torch.no_grad():
        torch.testing.assert_close(run(checkpoint.load(tmp_path / "m")), run(model), rtol=0, atol=0)


def _decoder(name, tmp_path):
    torch.manual_seed(0)
    model = MODEL_BUILDERS[name](tmp_path)[0].eval()
    feats, ids, _ = caption_batch(model.config.vocab_size)
    return model, (feats if model.feature == "grid" else feats.mean(1)), ids


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_teacher_forcing_equals_stepping(name, tmp_path):
    """``forward`` scores all steps at once; decoding steps one at a time through the protocol: same log-probs."""
    model, memory, ids = _decoder(name, tmp_path)
    with torch.no_grad():
        out = model(memory, ids)
        state, steps = model.init_state(memory), []
        for t in range(ids.size(1)):
            logprobs, state, attn = model.step(ids[:, t], state)
            steps.append(logprobs)
        torch.testing.assert_close(torch.stack(steps, 1), out.logits.float().log_softmax(-1), atol=1e-4, rtol=1e-4)
        index = torch.tensor([2, 0, 0])
        reordered = model.reorder_state(state, index)
        assert all(torch.equal(reordered[k], v.index_select(0, index)) for k, v in state.items())


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_beam_one_equals_greedy(name, tmp_path):
    model, memory, _ = _decoder(name, tmp_path)
    with torch.no_grad():  # a less flat output layer than the random init gives varied captions
        for p in model.parameters():
            if p.dim() == 2 and p.size(0) == model.config.vocab_size:
                torch.nn.init.normal_(p, std=1.0)
    kw = dict(bos_id=1, eos_id=2, max_len=6)
    greedy = decoding.greedy(model, memory, **kw)
    beam = decoding.beam_search(model, memory, beam_size=1, **kw)
    assert beam.tokens == greedy.tokens
    for a, b in zip(beam.logprob, greedy.logprob, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
