"""Unicode tokenizer and caption Vocab: thresholds, specials, encode/decode, JSON, pretrained embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modalbridge.captioning.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocab
from modalbridge.errors import UserError
from modalbridge.words import detokenize, tokenize


def test_tokenize_any_script():
    assert tokenize("A man's T-shirt, 3.5 kg!") == ["a", "man's", "t-shirt", ",", "3.5", "kg", "!"]
    assert tokenize("Кот сидит на окне, по-русски «Ёлка»") == [
        "кот",
        "сидит",
        "на",
        "окне",
        ",",
        "по-русски",
        "«",
        "ёлка",
        "»",
    ]
    assert tokenize("Ελληνικά ΚΕΙΜΕΝΑ") == ["ελληνικά", "κειμενα"]
    assert tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # combining vowel signs stay inside the word
    assert tokenize("猫が好き") == ["猫", "が", "好", "き"]  # no spaces in CJK: one token per character
    assert tokenize("ＦＵＬＬ width") == ["full", "width"]  # NFKC
    assert tokenize("dog 😀 cat") == ["dog", "😀", "cat"]
    assert tokenize("A dog, running!", punct=False) == ["a", "dog", "running"]
    assert tokenize("Keep Case", lower=False) == ["Keep", "Case"]
    assert detokenize(["a", "dog", ",", "(", "red", ")", "."]) == "a dog, (red)."


def test_vocab_threshold_order_and_specials():
    caps = ["a dog runs", "a dog sits", "a cat sits", "the dog"]
    v = Vocab.build(caps, min_freq=2)
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert v.itos[4:] == ["a", "dog", "sits"]  # by count (3, 3, 2), ties alphabetical; cat/runs/the dropped
    assert Vocab.build(caps, min_freq=1, max_size=2).itos[4:] == ["a", "dog"]
    ids = v.encode("A dog jumps")
    assert ids == [BOS_ID, v.stoi["a"], v.stoi["dog"], UNK_ID, EOS_ID]
    assert v.encode("a dog sits", bos=False, eos=True, max_len=2) == [v.stoi["a"], v.stoi["dog"], EOS_ID]
    assert v.decode(ids) == "a dog <unk>"
    assert v.decode([v.stoi["dog"], EOS_ID, v.stoi["a"]]) == "dog"  # stops at EOS
    assert v.decode([PAD_ID, v.stoi["dog"], PAD_ID]) == "dog"
    with pytest.raises(UserError):
        Vocab.build(caps, min_freq=0)


def test_vocab_json_roundtrip_unicode(tmp_path):
    v = Vocab.build(["Кот сидит", "кот спит", "Кот ест"], min_freq=2)
    assert "кот" in v and len(v) == 5
    path = v.save(tmp_path / "vocab.json")
    assert "кот" in path.read_text(encoding="utf-8")  # stored readable, not \\u-escaped
    w = Vocab.load(path)
    assert w == v and w.encode("КОТ") == v.encode("кот")
    assert Vocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    with pytest.raises(UserError, match="special tokens"):
        Vocab.from_dict({"itos": ["a", "b"]})
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(UserError, match="not valid"):
        Vocab.load(bad)
    with pytest.raises(UserError, match="not found"):
        Vocab.load(tmp_path / "none.json")


def test_embedding_matrix_from_pretrained_vectors():
    v = Vocab(["dog", "cat", "Zebra", "unseen"])
    vecs = {"dog": np.ones(3), "cat": np.full(3, 2.0), "zebra": np.full(3, -1.0)}
    m, found = v.embedding_matrix(vecs, std=0.01, seed=0)
    assert m.shape == (8, 3) and m.dtype == torch.float32 and found == 3
    assert torch.equal(m[v.stoi["dog"]], torch.ones(3))
    assert torch.equal(m[v.stoi["Zebra"]], torch.full((3,), -1.0))  # lower-case fallback
    assert torch.equal(m[PAD_ID], torch.zeros(3))
    assert m[v.stoi["unseen"]].abs().max() < 0.1  # random init at the given std
    m2, found2 = v.embedding_matrix((["dog", "cat"], np.eye(2, 3)))
    assert found2 == 2 and torch.equal(m2[v.stoi["cat"]], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(v.embedding_matrix(vecs, seed=1)[0][UNK_ID], v.embedding_matrix(vecs, seed=1)[0][UNK_ID])
    with pytest.raises(UserError, match="none of the vocabulary words"):
        v.embedding_matrix({"horse": np.ones(3)})
    with pytest.raises(UserError, match="mixed sizes"):
        v.embedding_matrix({"dog": np.ones(3), "cat": np.ones(4)})


def test_embedding_matrix_from_a_spacy_like_vocab():
    class Lexeme:
        def __init__(self, vec):
            self.vector = vec if vec is not None else np.zeros(2)
            self.has_vector = vec is not None

    class SpacyVocab:  # nlp.vocab: vocab[word] -> Lexeme, never a KeyError
        vectors = object()

        def __getitem__(self, word):
            return Lexeme(np.array([1.0, 2.0]) if word == "dog" else None)

    m, found = Vocab(["dog", "cat"]).embedding_matrix(SpacyVocab())
    assert found == 1 and m[4].tolist() == [1.0, 2.0]


def test_subword_vocab_spells_rare_words_from_pieces_and_round_trips():
    from modalbridge.captioning.vocab import SubwordVocab

    caps = ["a brown beagle dog", "the stegosaurus dinosaur", "a red rose", "Copper the Beagle", "a dog and a cat"]
    v = SubwordVocab.build(caps * 3, min_freq=2, max_size=60)
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and len(v) <= 64
    ids = v.encode("A brown dinosaur and a beagle cat")
    assert ids[0] == v.bos_id and ids[-1] == v.eos_id and v.unk_id not in ids
    assert v.decode(ids) == "a brown dinosaur and a beagle cat"
    assert len(v.encode("a brown dinosaur", max_len=2)) == 4  # max_len counts pieces, EOS kept
    # "cart" was never a training word: spelled from known pieces instead of <unk>.
    assert v.unk_id not in v.encode("cart") and v.decode(v.encode("cart")) == "cart"
    back = Vocab.from_dict(v.to_dict())  # what load_captioner reads from vocab.json
    assert isinstance(back, SubwordVocab) and back == v and back.encode("a red dog") == v.encode("a red dog")
    with pytest.raises(UserError):
        Vocab.from_dict({"format": SubwordVocab.FORMAT, "tokenizer": "{not json"})
