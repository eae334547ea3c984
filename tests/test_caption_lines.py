"""One clean line per caption (issue 13): decoding stops at the first line break or EOS, never emits a control
character, never emits a word vocabulary's ``<unk>``; for ClipCap over an LM tokenizer and for Show-Attend-Tell."""

from __future__ import annotations

import unicodedata
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from modalbridge.captioning import decoding
from modalbridge.captioning.clipcap import ClipCap, ClipCapConfig
from modalbridge.captioning.decoding import clean_caption, line_constraints
from modalbridge.captioning.pipeline import Captioner, decode_features

SPECIALS = ["<|endoftext|>", "<unk>"]
TOKENS = ["w1", "w2", "w3", "w4", "This", "\n", ".\n\n", "\t", "\x07", "\u2028"]


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in text)


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + TOKENS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<unk>")


ID = {w: i for i, w in enumerate(SPECIALS + TOKENS)}
V = len(ID)


def _config(**kw) -> ClipCapConfig:
    return ClipCapConfig(lm="tiny", lm_dim=32, vocab_size=V, feature_dim=8, prefix_length=2, bos_id=0, eos_id=0,
                         pad_id=0, max_len=8, **kw)


class ScriptedLM(nn.Module):
    """A causal 'LM' whose next-token scores depend only on how many caption tokens it has seen: a document-trained
    LM's habit of following a short caption with a tab, then ".\\n\\n" and a new paragraph."""

    def __init__(self, script: list[dict[str, float]], prefix_length: int):
        super().__init__()
        self.emb = nn.Embedding(V, 32)
        self.script, self.L = script, prefix_length

    def get_input_embeddings(self):
        return self.emb

    def forward(self, inputs_embeds, use_cache=False):
        B, S, _ = inputs_embeds.shape
        logits = torch.zeros(B, S, V)
        for word, score in self.script[min(S - self.L - 1, len(self.script) - 1)].items():
            logits[:, -1, ID[word]] = score
        return SimpleNamespace(logits=logits)


SCRIPT = [{"w1": 8.0, "\t": 7.0}, {"\t": 9.0, "w2": 8.0}, {".\n\n": 9.0, "w3": 5.0}, {"This": 9.0}, {"w4": 9.0}]


def test_clipcap_stops_at_the_first_line_break_and_skips_control_tokens():
    model = ClipCap(_config(), lm=ScriptedLM(SCRIPT, 2), tokenizer=_tokenizer()).eval()
    memory = torch.randn(3, 8)
    raw = decoding.greedy(model, memory, bos_id=0, eos_id=0, max_len=6)  # the model unconstrained
    assert raw.tokens[0][:4] == [ID["w1"], ID["\t"], ID[".\n\n"], ID["This"]]
    assert model.decode_text(raw.tokens[0]) == "w1 ."  # even then the text is cut at the newline, tab gone
    stop, suppress = model.line_constraints()
    assert set(stop) == {ID["\n"], ID[".\n\n"], ID["\u2028"]} and set(suppress) == {ID["\t"], ID["\x07"], ID["<unk>"]}
    for beam in (1, 3):
        out = decode_features(model, memory, beam=beam)
        assert [o["tokens"] for o in out] == [[ID["w1"], ID["w2"]]] * 3
        assert all(model.decode_text(o["tokens"]) == "w1 w2" for o in out)
    # The newline's probability is the caption's end: logprob of "w1 w2 <eos>" includes P(line break) at step 3.
    def logp(scores: dict[str, float]) -> torch.Tensor:
        logits = torch.zeros(V)
        for word, score in scores.items():
            logits[ID[word]] = score
        return torch.log_softmax(logits, 0)

    step3 = logp(SCRIPT[2])[[ID["<|endoftext|>"], ID["\n"], ID[".\n\n"], ID["\u2028"]]].logsumexp(0)
    want = logp(SCRIPT[0])[ID["w1"]] + logp(SCRIPT[1])[ID["w2"]] + step3
    assert out[0]["logprob"] == pytest.approx(float(want), abs=1e-4)


def _biased_gpt2() -> nn.Module:
    """A tiny random GPT-2 whose most likely next tokens are control characters and line breaks."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                    tie_word_embeddings=False))
    head = nn.Linear(32, V, bias=True)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, 32) * 0.5)
        head.bias.zero_()
        for word, b in {"\t": 3.0, "\x07": 3.0, "\n": 2.5, ".\n\n": 2.5, "\u2028": 2.0, "<unk>": 3.0, "w1": 2.0,
                        "w2": 2.0, "<|endoftext|>": -2.0}.items():
            head.bias[ID[word]] = b
    lm.lm_head = head
    return lm.eval()


def test_clipcap_on_an_lm_that_loves_newlines_never_writes_a_control_character():
    torch.manual_seed(0)
    model = ClipCap(_config(mapper="mlp"), lm=_biased_gpt2(), tokenizer=_tokenizer()).eval()
    memory = torch.randn(32, 8) * 3
    raw = decoding.sample(model, memory, bos_id=0, eos_id=0, max_len=8, top_p=1.0, temperature=1.5,
                          generator=torch.Generator().manual_seed(0))
    controls = {ID[w] for w in ("\t", "\x07", "\n", ".\n\n", "\u2028")}
    assert sum(any(t in controls for t in seq) for seq in raw.tokens) > 16  # unconstrained, most have some
    captions = []
    for kw in ({"beam": 1}, {"beam": 4}, {"beam": 2, "length_penalty": 0.0}, {"top_p": 1.0, "temperature": 1.5},
               {"top_p": 0.9}):
        for o in decode_features(model, memory, **kw):
            assert not controls & set(o["tokens"]) and ID["<unk>"] not in o["tokens"]
            captions.append(model.decode_text(o["tokens"]))
    assert all(not _has_control(c) and c == c.strip() for c in captions)
    assert any(captions)  # not all empty: words are still written


def test_word_vocab_decoding_never_emits_unk_or_control_words():
    from modalbridge.captioning.sat import SATConfig, ShowAttendTell, ShowTell
    from modalbridge.captioning.vocab import Vocab

    vocab = Vocab(["a", "red", "\x07", "square", "bad\x00word"])
    bell, nul = vocab.stoi["\x07"], vocab.stoi["bad\x00word"]
    torch.manual_seed(0)
    for cls in (ShowAttendTell, ShowTell):
        cfg = SATConfig(vocab_size=len(vocab), feature_dim=8, num_positions=4, embed_dim=8, hidden_dim=8,
                        attention_dim=8, dropout=0.0, max_len=5)
        model = cls(cfg).eval()
        with torch.no_grad():
            model.out.bias.zero_()
            model.out.bias[vocab.unk_id] = 9.0  # the model's favourite word is <unk>, then the control words
            model.out.bias[bell] = 8.0
            model.out.bias[nul] = 8.0
            model.out.bias[vocab.stoi["red"]] = 6.0
        memory = torch.randn(4, 4, 8) if cls is ShowAttendTell else torch.randn(4, 8)
        raw = decoding.greedy(model, memory, bos_id=1, eos_id=2, max_len=5)
        assert all(seq[0] == vocab.unk_id for seq in raw.tokens)  # what decoding used to emit
        for kw in ({"beam": 1}, {"beam": 3}, {"temperature": 1.0}):
            for o in decode_features(model, memory, vocab=vocab, **kw):
                assert o["tokens"] and not {vocab.unk_id, bell, nul} & set(o["tokens"])
                assert set(vocab.decode(o["tokens"]).split()) == {"red"}
            # without the vocabulary the fixed <unk> id is still masked
            assert all(vocab.unk_id not in o["tokens"] for o in decode_features(model, memory, **kw))


class _StubEncoder(nn.Module):
    dim = 8

    def encode(self, images):
        n = len(images)
        return SimpleNamespace(grid=torch.randn(n, 4, 8), pooled=torch.randn(n, 8))


def test_captioner_text_is_one_clean_line_for_both_families():
    from PIL import Image

    from modalbridge.captioning.sat import SATConfig, ShowAttendTell
    from modalbridge.captioning.vocab import Vocab

    images = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    vocab = Vocab(["a", "red", "square"])
    sat = ShowAttendTell(SATConfig(vocab_size=len(vocab), feature_dim=8, num_positions=4, embed_dim=8, hidden_dim=8,
                                   attention_dim=8, max_len=4))
    with torch.no_grad():
        sat.out.bias[vocab.unk_id] = 20.0
    for res in Captioner(sat, _StubEncoder(), vocab).caption(images, beam=2):
        assert "<unk>" not in res["caption"] and "<unk>" not in res["words"]
    clip = ClipCap(_config(), lm=ScriptedLM(SCRIPT, 2), tokenizer=_tokenizer())
    out = Captioner(clip, _StubEncoder()).caption(images, top_p=0.5)
    assert [r["caption"] for r in out] == ["w1 w2"] * 3


@pytest.mark.parametrize("text,want", [
    ("a red umbrella.\n\nThis is a classic", "a red umbrella."),
    ("  tab\tseparated\x00 words  ", "tab separated words"),
    ("one\r\ntwo", "one"),
    ("line\u2028sep", "line"),
    ("\nleading newline", ""),
    ("emoji 👩‍👩‍👧 kept", "emoji 👩‍👩‍👧 kept"),
])
def test_clean_caption(text, want):
    assert clean_caption(text) == want


def test_line_constraints():
    assert line_constraints(["a", "\n", "b\tc", "x\r", "ok", "\x1f"]) == ([1, 3], [2, 5])
