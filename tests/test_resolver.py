"""Class resolver (t2i/resolver.py), text classifier (t2i/classify.py) and ``classify`` / ``draw --generator``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import make_tiny_encoder, make_tiny_generator, save_published, tiny_vocab
from typer.testing import CliRunner

from modalbridge import checkpoint
from modalbridge.cli import app
from modalbridge.errors import UserError
from modalbridge.generators import load_generator
from modalbridge.t2i import pipeline as P
from modalbridge.t2i import resolver_train as R
from modalbridge.t2i.classify import TextClassifier, load_classifier, related_classes
from modalbridge.t2i.resolver import ClassResolver, ResolverConfig, class_embedding, keep_classes
from modalbridge.t2i.vocabularies import fashion, imagenet1k
from modalbridge.text.encoders import load_text_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("resolver")
    enc = make_tiny_encoder(root / "enc")
    vocab = tiny_vocab()
    model = R.build_resolver(vocab, load_text_encoder(str(enc)), str(enc))
    checkpoint.save(model, root / "resolver", vocab=vocab.to_dict())
    make_tiny_generator(root / "gen-a", seed=1)
    make_tiny_generator(root / "gen-b", seed=2)
    return root


def run(*args: str, **env):
    r = CliRunner().invoke(app, list(args), env=env or None)
    return r.exit_code, r.stdout, r.stderr


def test_init_is_the_zero_shot_baseline_and_it_trains(root):
    model = checkpoint.load(root / "resolver", expected="t2i_resolver")
    enc = load_text_encoder(model.config.text_encoder)
    texts, classes = R.prototype_texts(tiny_vocab())
    x = R.pooled(enc, ["a red dress", "two bags"])
    zs = R.zero_shot_scores(x, R.pooled(enc, texts), torch.tensor(classes), len(tiny_vocab()))
    e = enc.encode(["a red dress", "two bags"])
    out = model(e.hidden, e.mask)
    torch.testing.assert_close(out.logits, model.config.init_scale * zs, atol=1e-4, rtol=1e-4)
    assert out.loss is None
    weights = torch.zeros(2, len(tiny_vocab()))
    weights[0, 0], weights[1, 1], weights[1, 2] = 1.0, 0.5, 0.5  # a two-class sentence keeps both halves
    model.train()
    loss = model(e.hidden, e.mask, mention=torch.ones(2, len(tiny_vocab())), weights=weights).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.prototypes.grad.abs().sum() > 0 and model.attention_pool.query.weight.grad.abs().sum() > 0


def test_save_load_round_trip(root, tmp_path):
    model = checkpoint.load(root / "resolver")
    with torch.no_grad():
        model.class_bias.normal_()
    checkpoint.save(model, tmp_path / "m", vocab=tiny_vocab().to_dict())
    again = checkpoint.load(tmp_path / "m")
    states, mask = torch.randn(3, 5, 32), torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(again(states, mask).logits, model(states, mask).logits, atol=0, rtol=0)


def test_keep_classes_never_blends_unrelated_classes():
    related = torch.eye(4, dtype=torch.bool)
    related[0, 1] = related[1, 0] = True  # 0 and 1 are siblings (two dog breeds); 2 is unrelated (a bus)
    probs = torch.tensor([[0.40, 0.35, 0.25, 0.0], [0.40, 0.10, 0.38, 0.12], [0.1, 0.1, 0.1, 0.7]])
    kept = keep_classes(probs, related, keep_ratio=0.5, max_keep=3)
    torch.testing.assert_close(kept[0], torch.tensor([0.40, 0.35, 0.0, 0.0]) / 0.75)  # siblings blend, bus dropped
    torch.testing.assert_close(kept[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))  # sibling under half of the top: dropped
    torch.testing.assert_close(kept[2], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    table = torch.randn(4, 128)
    torch.testing.assert_close(class_embedding(kept, table), kept @ table)


def test_same_probabilities_weight_each_generators_own_table(root):
    a = P.load_drawer(str(root / "resolver"), str(root / "gen-a"))
    b = P.load_drawer(str(root / "resolver"), str(root / "gen-b"))
    assert a.classifier is b.classifier  # one resolver, two generators
    texts = ["a red dress", "two bags on a table"]
    emb_a, probs_a, _ = a.embed(texts)
    emb_b, probs_b, _ = b.embed(texts)
    torch.testing.assert_close(probs_a, probs_b, atol=0, rtol=0)
    kept = a.classifier.sharpen(probs_a)
    for emb, gen in ((emb_a, "gen-a"), (emb_b, "gen-b")):
        table = load_generator(str(root / gen)).class_embeddings.detach().float()
        torch.testing.assert_close(emb, kept @ table)
    assert not torch.allclose(emb_a, emb_b)
    d = a.draw("a red dress", n=2, seed=3)
    assert len(d.images) == 2 and len(d.classes) == 5


def test_classify_json_contract(root):
    code, out, err = run("classify", "a red dress and a bag", "--model", str(root / "resolver"), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert set(record) == {"text", "classes", "objects"} and record["text"] == "a red dress and a bag"
    assert len(record["classes"]) == 5 and set(record["classes"][0]) == {"label", "wnid", "score"}
    assert [o["text"] for o in record["objects"]] == ["a red dress", "a bag"]
    assert all(len(o["classes"]) == 5 for o in record["objects"])
    prompts = root / "prompts.txt"
    prompts.write_text("a dress\n\x01\x02\n\na bag\n", encoding="utf-8")
    code, out, err = run("classify", "--prompts", str(prompts), "--model", str(root / "resolver"))
    assert code == 0 and len(out.splitlines()) == 2 and out.startswith("a dress\t")
    assert "warning:" in err and "prompts.txt:2 skipped" in err  # a bad line is reported, the rest kept
    code, _, err = run("classify", "", "--model", str(root / "resolver"))
    assert code == 2 and err.startswith("error:") and "empty" in err


def test_classify_defaults_to_draws_model():
    assert load_classifier(None).source == load_classifier("t2i-fashion").source
    record = load_classifier(None).classify("a red dress")
    assert record["classes"][0]["label"] == "Dress" and record["objects"] == []


def test_draw_resolver_needs_a_generator_and_fails_offline_in_one_line(root, tmp_path):
    code, _, err = run("draw", "a dress", "--model", str(root / "resolver"), "--out", str(tmp_path))
    assert code == 2 and err.startswith("error:") and "--generator" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("draw", "a dress", "--model", str(root / "resolver"), "--generator", "biggan-deep-128",
                       "--out", str(tmp_path), HF_HUB_OFFLINE="1")
    assert code == 2 and "huggingface/biggan-deep-128" in err and "--generator DIR" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run("draw", "a dress", "--model", str(root / "resolver"), "--generator", str(root / "gen-a"),
                         "--n", "2", "--out", str(tmp_path), "--json")
    assert code == 0, err
    assert len(json.loads(out)["images"]) == 2 and all(Path(p).is_file() for p in json.loads(out)["images"])


def test_generator_with_another_class_count_is_refused(root, tmp_path):
    make_tiny_generator(tmp_path / "gen3", num_classes=3)
    with pytest.raises(UserError, match="3 classes"):
        P.load_drawer(str(root / "resolver"), str(tmp_path / "gen3"))


def test_objects_split_on_generic_words():
    def objects(vocab, text):
        model = ClassResolver(ResolverConfig(text_hidden=8, num_classes=len(vocab), num_prototypes=len(vocab)))
        return TextClassifier(model, None, vocab).objects(text)

    inet = imagenet1k()
    assert objects(inet, "a dog and a cat on a sofa") == ["a dog", "a cat on a sofa"]
    assert objects(inet, "an elephant and a bus") == ["an elephant", "a bus"]
    assert objects(inet, "a man walking his dog in the park") == ["a man walking his dog in the park"]
    assert objects(fashion(), "a dress and a shoe") == ["a dress", "a shoe"]


def test_related_classes_follow_wordnet_parents():
    inet = imagenet1k()
    rel = related_classes(inet)
    golden, labrador, bus = inet.index("golden retriever"), inet.index("Labrador retriever"), inet.index("school bus")
    assert rel[golden, labrador] and rel[labrador, golden] and not rel[golden, bus]
    assert rel.diagonal().all()


def test_everyday_names_reach_their_classes():
    inet = imagenet1k()
    for word, label in [("fridge", "refrigerator"), ("orca", "killer whale"), ("chimp", "chimpanzee"),
                        ("popsicle", "ice lolly"), ("smartphone", "cellular telephone"), ("blimp", "airship")]:
        assert inet.labels[inet.index(word)] == label
    m = inet.mentions(["a fridge full of food", "a crane by the lake"])
    assert m[0, inet.index("refrigerator")] == 1 and m[0].sum() == 1
    assert m[1, inet.index("n02012849")] == 1 and m[1, inet.index("n03126707")] == 1  # ambiguous: both cranes


@pytest.mark.slow
def test_draw_with_a_full_size_published_biggan_deep_128(root, tmp_path):
    """The flagship path: an ImageNet resolver + a random full-size BigGAN-deep-128 in the published format."""
    from modalbridge.generators.biggan import BigGAN, BigGANConfig

    enc = root / "enc"
    inet = imagenet1k()
    model = R.build_resolver(inet, load_text_encoder(str(enc)), str(enc))
    checkpoint.save(model, tmp_path / "inet", vocab=inet.to_dict())
    torch.manual_seed(0)
    save_published(BigGAN(BigGANConfig.published(128)).eval(), tmp_path / "biggan")
    code, out, err = run("draw", "I love my cat", "--model", str(tmp_path / "inet"), "--generator",
                         str(tmp_path / "biggan"), "--n", "1", "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    record = json.loads(out)
    from PIL import Image

    assert Image.open(record["images"][0]).size == (128, 128)
    assert {c["wnid"] for c in record["classes"]} <= set(inet.wnids) and len(record["classes"]) == 5


@pytest.mark.slow
def test_shipped_imagenet_resolver_reads_hand_written_prompts():
    """The embedded t2i-imagenet on the committed dev prompts (the selection set, so this is a floor, not a claim)."""
    clf = load_classifier("t2i-imagenet")
    rows = R.read_labelled_prompts(Path(__file__).parent / "data" / "imagenet_dev_prompts.tsv")
    probs = clf.score([r["prompt"] for r in rows])[0]
    hits = R.topk_hits(probs, [R.accepted_classes(clf.vocab, r["targets"]) for r in rows])
    assert hits["n"] >= 200 and hits["top1"] >= 0.94 and hits["top5"] >= 0.985, hits
    record = clf.classify("a dog and a cat on a sofa")
    assert [o["text"] for o in record["objects"]] == ["a dog", "a cat on a sofa"]
    dog, cat = (clf.vocab.index(o["classes"][0]["wnid"]) for o in record["objects"])
    assert "dog" in clf.vocab[dog].hypernyms and "cat" in clf.vocab[cat].hypernyms + clf.vocab[cat].lemmas
