"""ClipCap on tiny random GPT-2 and Llama LMs saved to disk and loaded by path: prefix shapes, training signal,
frozen LM left out of the model directory, decoding through the protocol."""

from __future__ import annotations

import pytest
import torch
from tiny import LM_WORDS as WORDS
from tiny import build_tiny_lm

from modalbridge import checkpoint
from modalbridge.captioning.clipcap import ClipCap, lm_location
from modalbridge.captioning.sat import IGNORE
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
    out = model(memory, ids, targets)
    assert out.logits.shape == (*ids.shape, 99) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None for p in model.lm.parameters())  # frozen LM
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.mapper.parameters())


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
