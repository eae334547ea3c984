"""Text encoders: tiny random BERT/DistilBERT saved to tmp_path and loaded by path; the offline MiniLM."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from tiny import make_tiny_encoder

from modalbridge.errors import UserError
from modalbridge.text import TEXT_ENCODERS, load_text_encoder


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    return {arch: make_tiny_encoder(root / arch, arch) for arch in ("bert", "distilbert")}


TEXTS = ["a red dress", "the big black boots and a small bag with green shoes", "shirt", "an elephant , a bus !"]


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_batched_sorted_equals_one_at_a_time(tiny_dirs, arch):
    enc = load_text_encoder(str(tiny_dirs[arch]))
    assert enc.hidden_size == 32 and enc.num_layers == 2
    batched = enc.encode(TEXTS, batch_size=3, sort=True)
    assert batched.hidden.shape[:2] == batched.mask.shape
    for i, text in enumerate(TEXTS):
        single = enc.encode([text], sort=False)
        n = int(single.lengths[0])
        assert int(batched.lengths[i]) == n
        torch.testing.assert_close(batched.hidden[i, :n], single.hidden[0, :n], atol=1e-5, rtol=1e-4)
        assert torch.all(batched.hidden[i, n:] == 0)
    # Sorting really reorders: the longest text goes first through the model.
    first_idx, _ = next(iter(enc.iter_states(TEXTS, batch_size=2, sort=True)))
    assert first_idx[0] == 1


def test_layer_choice(tiny_dirs):
    last = load_text_encoder(str(tiny_dirs["bert"]))
    emb = load_text_encoder(str(tiny_dirs["bert"]), layer=0)
    top = load_text_encoder(str(tiny_dirs["bert"]), layer=2)
    a, b, c = (e.encode(TEXTS[:2]).hidden for e in (last, emb, top))
    torch.testing.assert_close(a, c)
    assert not torch.allclose(a, b)
    with pytest.raises(UserError, match="layer 5 out of range"):
        load_text_encoder(str(tiny_dirs["bert"]), layer=5)


def test_word_offsets_align_words_to_pieces(tiny_dirs):
    enc = load_text_encoder(str(tiny_dirs["bert"]))
    text = "the xyz dresses , a bag"
    out = enc.encode(text)
    words = out.words(0, text)
    assert [w for w, _ in words] == ["the", "xyz", "dresses", ",", "a", "bag"]
    pieces = dict(words)
    assert len(pieces["xyz"]) == 3  # x ##y ##z
    assert pieces["the"] == [1]  # position 0 is [CLS]
    assert out.word_ids[0][0] is None


def test_long_text_is_truncated_with_warning(tiny_dirs):
    enc = load_text_encoder(str(tiny_dirs["bert"]))
    text = "red dress " * 10_000  # 100k characters
    with pytest.warns(UserWarning, match="truncated"):
        out = enc.encode([text, "a bag"])
    assert out.truncated == [True, False]
    assert int(out.lengths[0]) == enc.max_length == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enc.encode("a red dress   ").truncated == [False]  # trailing spaces are not truncation


def test_bad_specs(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_text_encoder(str(tmp_path / "nope") + "/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot load a text encoder"):
        load_text_encoder(str(tmp_path / "empty"))
    assert {"minilm", "distilbert-base-uncased"} <= set(TEXT_ENCODERS)


def test_minilm_offline_gives_384_dim_states():
    enc = load_text_encoder("minilm")
    out = enc.encode(["a photo of a sneaker", "boots"])
    assert out.hidden.shape[0] == 2 and out.hidden.shape[2] == 384
    assert enc.num_layers == 6
    assert torch.isfinite(out.hidden).all()
    # Contextual states differ between two sentences sharing the word.
    assert not torch.allclose(out.hidden[0, 1], out.hidden[1, 1])


def _both_backends(path: str, monkeypatch, **kw):
    """The encoder loaded through text/bert.py and through transformers (the env switch forces the latter)."""
    from modalbridge.text import encoders

    encoders._load_cached.cache_clear()
    fast = load_text_encoder(path, **kw)
    monkeypatch.setenv("MODALBRIDGE_TEXT_BACKEND", "transformers")
    encoders._load_cached.cache_clear()
    hf = load_text_encoder(path, **kw)
    monkeypatch.delenv("MODALBRIDGE_TEXT_BACKEND")
    encoders._load_cached.cache_clear()
    return fast, hf


@pytest.mark.parametrize("layer", [-1, 0, 1])
def test_own_bert_equals_transformers_bit_for_bit(tiny_dirs, monkeypatch, layer):
    from modalbridge.text.bert import Bert

    fast, hf = _both_backends(str(tiny_dirs["bert"]), monkeypatch, layer=layer)
    assert isinstance(fast.model, Bert) and not isinstance(hf.model, Bert)
    texts = TEXTS + ["", "xyz " * 100, "Ünïcödé dress, 東京 🐱"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long text's truncation warning, from both sides
        a, b = fast.encode(texts, batch_size=3), hf.encode(texts, batch_size=3)
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.mask, b.mask) and torch.equal(a.offsets, b.offsets)
    assert a.word_ids == b.word_ids and a.truncated == b.truncated == [False] * 5 + [True, False]
    assert fast.max_length == hf.max_length == 64


def test_minilm_without_transformers_equals_transformers(monkeypatch):
    """The shipped default: the dev prompts' states are identical whichever way the model is loaded."""
    from modalbridge.text.bert import Bert

    rows = (Path(__file__).parent / "data" / "imagenet_dev_prompts.tsv").read_text().splitlines()[1:]
    texts = [r.split("\t")[0] for r in rows[::4]]
    fast, hf = _both_backends("minilm", monkeypatch)
    assert isinstance(fast.model, Bert)
    a, b = fast.encode(texts), hf.encode(texts)
    assert torch.equal(a.hidden, b.hidden) and a.word_ids == b.word_ids


def test_non_bert_and_damaged_directories(tiny_dirs, tmp_path):
    import shutil

    from modalbridge.text.bert import Bert

    assert not isinstance(load_text_encoder(str(tiny_dirs["distilbert"])).model, Bert)  # via transformers
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["bert"], broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="cannot load a text encoder") as e:
        load_text_encoder(str(broken))
    assert "\n" not in str(e.value)


def test_bert_checkpoint_with_heads_loads_the_encoder(tmp_path, monkeypatch):
    """A BertForMaskedLM directory ("bert." prefix, "cls.*" head) gives the same encoder states both ways."""
    from tiny import tiny_wordpieces
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    from modalbridge.text.bert import Bert

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=64)
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "mlm")
    BertTokenizer(vocab=tiny_wordpieces(), model_max_length=64).save_pretrained(tmp_path / "mlm")
    fast, hf = _both_backends(str(tmp_path / "mlm"), monkeypatch)
    assert isinstance(fast.model, Bert)
    assert torch.equal(fast.encode(TEXTS).hidden, hf.encode(TEXTS).hidden)
