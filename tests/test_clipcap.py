"""ClipCap on tiny random GPT-2 and Llama LMs saved to disk and loaded by path: prefix shapes, training signal,
frozen LM left out of the model directory, decoding through the protocol."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny import LM_WORDS as WORDS
from tiny import build_tiny_lm

from modalbridge import checkpoint
from modalbridge.captioning.clipcap import ClipCap, RecomputingClipCap
from modalbridge.captioning.decoder import IGNORE
from modalbridge.captioning.lm import lm_location
from modalbridge.errors import UserError


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("lms")
    return {arch: build_tiny_lm(root / arch, arch) for arch in ("gpt2", "llama")}


def _data(model: ClipCap, B: int = 4, C: int = 16, P: int = 5):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(B, P, C, generator=g)
    caps = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9", "w10"]
    seqs = [model.encode_text(c) for c in caps[:B]]
    T = max(len(s) for s in seqs) - 1
    ids = torch.full((B, T), model.config.pad_id)
    targets = torch.full((B, T), IGNORE)
    for i, s in enumerate(seqs):
        ids[i, : len(s) - 1] = torch.tensor(s[:-1])
        targets[i, : len(s) - 1] = torch.tensor(s[1:])
    return feats, ids, targets


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("mapper,feature", [("mlp", "pooled"), ("transformer", "pooled"), ("transformer", "grid")])
def test_prefix_shapes_forward_backward(lms, arch, mapper, feature):
    torch.manual_seed(0)
    model = ClipCap.from_lm(str(lms[arch]), feature_dim=16, num_positions=5, prefix_length=3, clip_length=2,
                            mapper=mapper, feature=feature, mapper_layers=2, mapper_heads=4)
    assert model.config.lm_dim == 32 and model.config.vocab_size == 99
    if arch == "llama":
        assert (model.config.bos_id, model.config.eos_id) == (2, 3)
    feats, ids, targets = _data(model)
    memory = feats if feature == "grid" else feats.mean(1)
    assert model.prefix(memory).shape == (4, 3, 32)  # (B, L, D)
    full = model(memory, ids)  # no targets: logits at every caption position
    assert full.logits.shape == (*ids.shape, 99) and full.loss is None
    assert model._body_and_head() is not None  # GPT-2 and Llama take the fast training path
    out = model(memory, ids, targets)  # training: the frozen LM head only where a target is scored, fused with the loss
    assert out.logits is None and torch.isfinite(out.loss)
    reference = F.cross_entropy(full.logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    torch.testing.assert_close(out.loss, reference, atol=1e-5, rtol=1e-5)
    head = model.lm.get_output_embeddings().weight
    head.requires_grad_(True)  # a trainable head takes the unfused path: logits of the scored positions only
    unfused = model(memory, ids, targets)
    head.requires_grad_(False)
    keep = targets != IGNORE
    assert unfused.logits.shape == (int(keep.sum()), 99)
    torch.testing.assert_close(unfused.logits, full.logits[keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unfused.loss, reference, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    assert all(p.grad is None for p in model.lm.parameters())  # frozen LM
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.mapper.parameters())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bf16_autocast_training_step_matches_float32(lms, arch):
    """``trainer.precision=bf16-mixed`` on a CPU: the forward under bfloat16 autocast gives float32's loss to within
    bf16 rounding, and the mapper gets finite float32 gradients (the frozen LM none)."""
    torch.manual_seed(0)
    model = ClipCap.from_lm(str(lms[arch]), feature_dim=16, prefix_length=3, clip_length=2, mapper="transformer",
                            feature="pooled", mapper_layers=2, mapper_heads=4)
    feats, ids, targets = _data(model)
    memory = feats.mean(1)
    ref = model(memory, ids, targets).loss
    with torch.profiler.profile() as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(memory, ids, targets)
        out.loss.backward()
    assert out.loss.dtype == torch.float32 and abs(float(out.loss) - float(ref)) < 0.03 * float(ref)
    ops = {e.key for e in prof.key_averages()}
    assert "aten::bmm" in ops  # the mapper's (and the LM's) attention: plain products, never the fused CPU kernel
    assert not any("flash_attention" in op or "efficient_attention" in op for op in ops), sorted(ops)
    grads = [p.grad for p in model.mapper.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in model.lm.parameters())


def test_linear_cross_entropy_equals_the_unfused_loss_and_gradient():
    """The fused head + loss (chunked, gradient computed in the forward) gives F.cross_entropy's loss and input
    gradient, with banned ids at -inf, a bias, chunks that do not divide N, and a frozen weight only."""
    from modalbridge.captioning import decoder

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50)
    head.requires_grad_(False)
    h = torch.randn(37, 8, dtype=torch.float64).float().requires_grad_()
    targets = torch.randint(2, 50, (37,))
    h_ref = h.detach().clone().requires_grad_()
    ref = F.cross_entropy(head(h_ref).index_fill(1, torch.tensor([0, 1]), float("-inf")), targets)
    ref.backward()
    with pytest.MonkeyPatch.context() as mp:  # 4 rows a chunk: 37 rows are 10 chunks, the last one short
        mp.setattr(decoder, "_chunk_rows", lambda V: 4)
        loss = decoder.linear_cross_entropy(h, head, targets, banned=[0, 1])
    (2.5 * loss).backward()
    torch.testing.assert_close(loss, ref.detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h.grad, 2.5 * h_ref.grad, atol=1e-6, rtol=1e-6)
    with torch.no_grad():  # a validation loss: the same value, no gradient work
        torch.testing.assert_close(decoder.linear_cross_entropy(h, head, targets, banned=[0, 1]), ref.detach())
    with pytest.raises(ValueError, match="frozen"):
        decoder.linear_cross_entropy(h, torch.nn.Linear(8, 50), targets)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bf16_lm_trains_and_decodes_like_float32(lms, arch, tmp_path):
    """``lm_dtype=bfloat16``: the frozen LM's matrices are stored in bfloat16 (norms and rotary tables stay float32),
    its loss matches float32's to bf16 rounding, the mapper gets finite float32 gradients, training reaches
    float32's loss, the setting survives save/load, cached decoding still equals recomputing, and a fine-tuned LM is
    refused."""
    from modalbridge.captioning import decoding

    kw = dict(feature_dim=16, prefix_length=3, clip_length=2, mapper="transformer", feature="pooled", mapper_layers=2,
              mapper_heads=4)
    torch.manual_seed(0)
    ref = ClipCap.from_lm(str(lms[arch]), **kw)
    torch.manual_seed(0)
    model = ClipCap.from_lm(str(lms[arch]), lm_dtype="bfloat16", **kw)
    head = model.lm.get_output_embeddings().weight
    norms = [p for n, p in model.lm.named_parameters() if "norm" in n or "ln_" in n]
    assert head.dtype == torch.bfloat16 and norms and all(p.dtype == torch.float32 for p in norms)
    feats, ids, targets = _data(model)
    memory = feats.mean(1)
    first = model(memory, ids, targets).loss
    assert first.dtype == torch.float32
    assert abs(float(first) - float(ref(memory, ids, targets).loss)) < 0.03 * float(first)
    final = {}
    for name, m in (("float32", ref), ("bfloat16", model)):  # the same 30 steps from the same start
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(30):
            opt.zero_grad()
            loss = m(memory, ids, targets).loss
            loss.backward()
            grads = [p.grad for p in m.mapper.parameters()]
            assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
            opt.step()
        final[name] = loss.item()
    assert all(p.grad is None for p in model.lm.parameters())
    # Both reach the floor a prefix can reach through this tiny frozen LM (1-3 % below the start), and the same one.
    assert final["float32"] < 0.99 * float(first), (float(first), final)
    assert abs(final["bfloat16"] - final["float32"]) < 0.01 * final["float32"], (float(first), final)
    checkpoint.save(model, tmp_path / "m")
    again = checkpoint.load(tmp_path / "m", expected="clipcap").eval()
    assert again.config.lm_dtype == "bfloat16" and again.lm.get_output_embeddings().weight.dtype == torch.bfloat16
    model.eval()
    recompute = RecomputingClipCap(model.config, lm=model.lm, tokenizer=model.tokenizer).eval()
    recompute.mapper.load_state_dict(model.mapper.state_dict())
    c = model.config
    a, b = (decoding.beam_search(m, memory, c.bos_id, c.eos_id, beam_size=2, max_len=5) for m in (model, recompute))
    assert a.tokens == b.tokens and a.logprob == pytest.approx(b.logprob, abs=0.05)
    with pytest.raises(UserError, match="freeze_lm"):
        ClipCap.from_lm(str(lms[arch]), lm_dtype="bfloat16", freeze_lm=False, **kw)


def test_training_lowers_the_loss_and_decoding_follows(lms):
    from modalbridge.captioning import decoding

    torch.manual_seed(0)
    # The paper's MLP-mapper setting fine-tunes the LM too; a tiny random LM needs that to memorise captions.
    model = ClipCap.from_lm(str(lms["gpt2"]), feature_dim=16, num_positions=5, prefix_length=2, mapper="mlp",
                            max_len=6, freeze_lm=False)
    feats, ids, targets = _data(model)
    memory = feats.mean(1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = model(memory, ids, targets).loss.item()
    for _ in range(30):
        opt.zero_grad()
        loss = model(memory, ids, targets).loss
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    model.eval()
    with torch.no_grad():
        greedy = decoding.greedy(model, memory, bos_id=model.config.bos_id, eos_id=model.config.eos_id, max_len=6)
    texts = [model.decode_text(seq) for seq in _sequences(greedy)]
    assert texts[0] == "w1 w2 w3" and texts[1] == "w4 w5"  # memorised training captions


def _sequences(result):
    seqs = getattr(result, "tokens", result)
    if isinstance(seqs, torch.Tensor):
        return seqs.tolist()
    return [list(s) for s in seqs]


def test_frozen_lm_is_not_saved_and_reloads_from_its_source(lms, tmp_path):
    torch.manual_seed(0)
    model = ClipCap.from_lm(str(lms["gpt2"]), feature_dim=16, num_positions=5, prefix_length=3).eval()
    keys = list(model.state_dict())
    assert keys and all(k.startswith("mapper.") for k in keys)
    checkpoint.save(model, tmp_path / "m")
    meta = checkpoint.read_meta(tmp_path / "m")
    assert meta["config"]["lm"] == str(lms["gpt2"]) and meta["config"]["lm_dim"] == 32
    loaded = checkpoint.load(tmp_path / "m", expected="clipcap")
    feats, ids, _ = _data(model)
    torch.testing.assert_close(loaded(feats.mean(1), ids).logits, model(feats.mean(1), ids).logits)
    # A Lightning-style wrapper round trip (nested prefix) also accepts the missing LM keys.
    wrapper = torch.nn.Module()
    wrapper.model = model
    wrapper.load_state_dict(wrapper.state_dict())
    # Fine-tuned LM: its weights are part of the model.
    tuned = ClipCap.from_lm(str(lms["gpt2"]), feature_dim=16, prefix_length=3, freeze_lm=False)
    assert any(k.startswith("lm.") for k in tuned.state_dict())
    assert any(p.requires_grad for p in tuned.lm.parameters())


def test_lm_location_and_errors(lms, tmp_path):
    assert lm_location(str(lms["gpt2"])) == (lms["gpt2"], None)
    gguf = tmp_path / "only" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert lm_location(str(gguf.parent)) == (gguf.parent, "model.gguf")
    assert lm_location(str(gguf)) == (gguf.parent, "model.gguf")
    with pytest.raises(UserError):
        ClipCap.from_lm(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="lm_dim"):
        from modalbridge.captioning.clipcap import ClipCapConfig

        ClipCap(ClipCapConfig(lm=str(lms["gpt2"]), lm_dim=64))


def test_clipcap_model_dir_captions_through_the_pipeline(lms, tmp_path):
    from tiny import tiny_resnet

    from modalbridge.captioning.pipeline import load_captioner

    enc = tiny_resnet(tmp_path / "encoder")
    torch.manual_seed(0)
    model = ClipCap.from_lm(str(lms["llama"]), feature_dim=32, num_positions=4, prefix_length=2, max_len=5,
                            encoder=str(enc), encoder_kind="resnet")
    checkpoint.save(model, tmp_path / "m", vocab={"format": "modalbridge.lm-tokenizer/1", "lm": model.config.lm})
    cap = load_captioner(tmp_path / "m")
    assert cap.vocab is None and not cap.has_attention
    from PIL import Image

    out = cap.caption([Image.new("RGB", (40, 30), (200, 10, 10))], beam=2)[0]
    assert out["attention"] is None and len(out["words"]) <= 5
    assert out["caption"] == " ".join(out["words"])  # word-level test tokenizer: tokens joined by spaces
    assert all(w in WORDS for w in out["words"]) and out["logprob"] <= 0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_kv_cached_decoding_equals_recomputing_the_lm(lms, arch):
    """Decoding reads the LM's key/value cache (one token per step); rerunning the LM over prefix + all tokens at
    every step must give the same log-probabilities, and beam search the same captions, also after reordering."""
    from modalbridge.captioning import decoding

    torch.manual_seed(0)
    model = ClipCap.from_lm(str(lms[arch]), feature_dim=16, prefix_length=3, mapper="mlp").eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.lm.get_output_embeddings().weight, std=0.5)  # varied, peaky captions
    memory = torch.randn(3, 16)
    ids = torch.randint(4, 99, (3, 5))
    with torch.no_grad():
        reference = model(memory, ids).logits.float().log_softmax(-1)  # one pass over [prefix; ids]
        state = model.init_state(memory)
        assert set(state) == {f"{kv}{i}" for i in range(len(model.lm.model.layers if arch == "llama"
                                                                 else model.lm.transformer.h)) for kv in "kv"}
        for t in range(ids.size(1)):
            logprobs, state, _ = model.step(ids[:, t], state)
            torch.testing.assert_close(logprobs, reference[:, t], atol=1e-4, rtol=1e-4)
        index = torch.tensor([2, 2, 0])  # beams swap and duplicate: the cache follows its rows
        moved = model.reorder_state(state, index)
        nxt = torch.tensor([5, 6, 7])
        again = model.step(nxt, moved)[0]
        full = model(memory[index], torch.cat([ids[index], nxt[:, None]], 1)).logits.float().log_softmax(-1)[:, -1]
        torch.testing.assert_close(again, full, atol=1e-4, rtol=1e-4)
        # Beam search over the cache = beam search that reruns the LM over prefix + tokens at every step.
        recompute = RecomputingClipCap(model.config, lm=model.lm, tokenizer=model.tokenizer).eval()
        recompute.mapper.load_state_dict(model.mapper.state_dict())
        c = model.config
        a, b = (decoding.beam_search(m, memory * 3, c.bos_id, 99, beam_size=3, max_len=6) for m in (model, recompute))
        assert a.tokens == b.tokens and all(len(t) == 6 for t in a.tokens)  # no EOS id in the vocab: full length
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)



def test_gguf_is_dequantized_once_into_the_cache(lms, tmp_path, monkeypatch, capsys):
    """A GGUF LM goes through transformers' GGUF reader once; the float copy (safetensors) is reused afterwards and
    rebuilt when the file changes. The reader is replaced by the tiny LM here (no tiny GGUF writer offline)."""
    import transformers

    from modalbridge.captioning import lm as lm_loader

    monkeypatch.setenv("MODALBRIDGE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "lm"
    src.mkdir()
    (src / "tiny.Q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    calls = []
    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained

    def fake(real):
        def load(path, gguf_file=None, **kw):
            if gguf_file is not None:
                calls.append(gguf_file)
                return real(str(lms["llama"]), **kw)
            return real(path, **kw)
        return load

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake(real_model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake(real_tok))
    lm, tok = lm_loader.load_lm(str(src))
    cached = lm_loader.dequantized_dir(src / "tiny.Q4_1.gguf")
    assert (cached / "model.safetensors").is_file() and (cached / "config.json").is_file()
    assert "dequantizing tiny.Q4_1.gguf once" in capsys.readouterr().err
    lm2, _ = lm_loader.load_lm(str(src))
    assert len(calls) == 2  # model + tokenizer, the first time only
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(lm2(ids).logits, lm(ids).logits)
    (src / "tiny.Q4_1.gguf").write_bytes(b"GGUF" + b"\1" * 70)  # a new file: a new copy
    assert lm_loader.dequantized_dir(src / "tiny.Q4_1.gguf") != cached
