"""Tiny random models and data for the tests, one builder per thing (transformers' tiny-config testers, timm's
``tests/test_models.py``): text encoders and causal LMs saved in the published Hugging Face format, generator, mapper
and caption-data directories, and ``MODEL_BUILDERS``, a tiny instance of every registered model type with a function
that runs it (``tests/test_registry.py`` checks that every name in ``MODELS`` has one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modalbridge import checkpoint
from modalbridge.generators import load_generator
from modalbridge.t2i.mapper import MapperConfig, T2IMapper
from modalbridge.t2i.vocabulary import VocabClass, Vocabulary

# ------------------------------------------------------------------------------------------ text encoders


WORDPIECE_WORDS = (
    "the a an and with of in on red blue green black white small big dress dresses shirt shirts bag bags "
    "shoe shoes boot boots coat coats trouser trousers sneaker sandal pullover elephant bus cat dog photo "
    "picture drawing of , . ! ?"
).split()


def tiny_wordpieces() -> dict[str, int]:
    """99 word pieces: specials, letters, '##' letters and a few whole words (so words split into pieces)."""
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces += list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    pieces += [w for w in WORDPIECE_WORDS if w not in pieces]
    return {p: i for i, p in enumerate(pieces[:99])}


def make_tiny_encoder(path: Path, arch: str = "bert", seed: int = 0) -> Path:
    """Save a random hidden-32, 2-layer, vocab-99 BERT or DistilBERT + fast tokenizer in ``path``."""
    from transformers import BertConfig, BertModel, BertTokenizer, DistilBertConfig, DistilBertModel

    torch.manual_seed(seed)
    vocab = tiny_wordpieces()
    if arch == "bert":
        cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64)
        model = BertModel(cfg)
    else:
        cfg = DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                               max_position_embeddings=64)
        model = DistilBertModel(cfg)
    model.save_pretrained(path)
    BertTokenizer(vocab=vocab, model_max_length=64).save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------ causal LMs (ClipCap)


LM_WORDS = [f"w{i}" for i in range(95)]


def build_tiny_lm(path: Path, arch: str = "gpt2") -> Path:
    """A tiny random causal LM (hidden 32, 2 layers, vocab 99) with a word-level tokenizer, saved to ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + LM_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    if arch == "gpt2":
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                       unk_token="<unk>")
        lm = GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", bos_token="<s>", unk_token="<unk>")
        lm = LlamaForCausalLM(LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    lm.save_pretrained(path)
    fast.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------ text -> image


TINY_CLASSES = [("Dress", ["dress", "gown"]), ("Bag", ["bag", "handbag", "purse"]), ("Shirt", ["shirt", "blouse"]),
                ("Elephant", ["elephant"]), ("Bus", ["bus"])]


def tiny_vocab() -> Vocabulary:
    return Vocabulary([VocabClass(i, f"n{i:08d}", label, lemmas, category="clothing")
                       for i, (label, lemmas) in enumerate(TINY_CLASSES)])


def make_tiny_sentences(path: Path, n: int = 300, seed: int = 0) -> Path:
    from modalbridge.t2i import sentences

    sentences.prepare(tiny_vocab(), path, n=n, seed=seed)
    return path


def make_tiny_generator(path: Path, num_classes: int = len(TINY_CLASSES), seed: int = 0) -> Path:
    """A random 8x8 grayscale BigGAN-deep model directory (z 128, class embeddings 128)."""
    from modalbridge.generators.biggan import BigGAN, BigGANConfig

    torch.manual_seed(seed)
    model = BigGAN(BigGANConfig.small(resolution=8, channel_width=8, num_classes=num_classes, attention=False))
    with torch.no_grad():
        model.embeddings.weight.normal_()  # distinct, well-spread class embeddings
    checkpoint.save(model, path)
    return path


def make_tiny_mapper(root: Path) -> Path:
    enc, gen = make_tiny_encoder(root / "enc"), make_tiny_generator(root / "gen")
    table = load_generator(gen).class_embeddings.detach()
    torch.manual_seed(0)
    cfg = MapperConfig(kind="inspan", text_hidden=32, embed_dim=128, num_classes=len(table), hidden=32,
                       text_encoder=str(enc), generator=str(gen), max_length=64)
    return checkpoint.save(T2IMapper(cfg, table=table), root / "mapper", vocab=tiny_vocab().to_dict())


def save_published(model, path):
    path.mkdir()
    cfg = {k: v for k, v in vars(model.config).items() if k != "out_channels"}
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))  # as the reference's to_json
    # the published files date from torch 1.0: the legacy (pre-zip) serialisation, which weights_only also reads
    torch.save(model.state_dict(), path / "pytorch_model.bin", _use_new_zipfile_serialization=False)


# ------------------------------------------------------------------------------------------ image -> text data


COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210)}


SHAPES = ["square", "stripe"]


def make_fixture(root: Path, n_train: int = 18, n_val: int = 6, n_test: int = 4, seed: int = 0) -> Path:
    """Images of a coloured shape on noise, captions naming both, in the ``folder:`` jsonl format."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):
            colour = list(COLOURS)[i % 3]
            shape = SHAPES[(i // 3) % 2]
            arr = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
            if shape == "square":
                arr[12:36, 20:44] = COLOURS[colour]
            else:
                arr[:, 26:38] = COLOURS[colour]
            name = f"{split}_{i:03d}.png"
            Image.fromarray(arr).save(root / name)
            caps = [f"a {colour} {shape}", f"the {shape} is {colour}", f"one {colour} {shape} on noise"]
            lines.append(json.dumps({"image": name, "captions": caps, "split": split}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def tiny_resnet(path: Path) -> Path:
    from transformers import ResNetConfig, ResNetModel
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    torch.manual_seed(0)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic")
    ResNetModel(cfg).save_pretrained(path)
    ConvNextImageProcessorPil(size={"shortest_edge": 64}, crop_pct=0.875).save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------ every registered model
# name -> builder(tmp_dir) -> (model, run, save_kwargs): ``run(model)`` gives the model's main output tensor for fixed
# random inputs; ``save_kwargs`` go to ``checkpoint.save`` (e.g. the vocabulary a model directory needs).
B, T, P, C = 3, 6, 4, 16  # batch, caption steps / text tokens, image regions, feature channels
Built = tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor], dict]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def caption_batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid features (B, P, C), inputs ``<bos> w..`` and targets ``w.. <eos>`` (one shorter caption, padded)."""
    g = _gen(seed)
    feats = torch.randn(B, P, C, generator=g)
    ids = torch.randint(4, vocab, (B, T), generator=g)
    ids[:, 0] = 1
    targets = torch.cat([ids[:, 1:], torch.full((B, 1), 2)], 1)
    targets[0, 3:] = -100
    return feats, ids, targets


def text_batch(hidden: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    mask = torch.arange(T)[None] < torch.tensor([T, 3, 5])[:, None]  # (B, T)
    return torch.randn(B, T, hidden, generator=g) * mask[..., None], mask


def sat_config(**kw):
    from modalbridge.captioning.sat import SATConfig

    base = dict(vocab_size=99, feature_dim=C, num_positions=P, embed_dim=32, hidden_dim=32, attention_dim=32,
                dropout=0.0, max_len=8)
    return SATConfig(**{**base, **kw})


def _caption_run(model) -> torch.Tensor:
    feats, ids, _ = caption_batch(model.config.vocab_size)
    return model(feats if model.feature == "grid" else feats.mean(1), ids).logits


def build_toy_mlp(tmp: Path) -> Built:
    from modalbridge.training.toy import ToyMLP, ToyModelConfig

    x = torch.randn(B, 4, generator=_gen())
    return ToyMLP(ToyModelConfig(dim=4, hidden=8, dropout=0.0)), lambda m: m(x), {}


def build_biggan_deep(tmp: Path) -> Built:
    from modalbridge.generators.biggan import BigGAN, BigGANConfig, truncated_noise

    model = BigGAN(BigGANConfig.small(resolution=8, channel_width=8, num_classes=5, z_dim=16, class_embed_dim=16))
    z, labels = truncated_noise(B, 16, 1.0, seed=0), torch.tensor([0, 3, 4])
    return model, lambda m: m(z, m.embed(labels), 1.0), {}


def build_fashion_cnn(tmp: Path) -> Built:
    from modalbridge.vision.classifier import FashionClassifier, FashionClassifierConfig

    x = torch.randn(B, 1, 32, 32, generator=_gen())
    model = FashionClassifier(FashionClassifierConfig(widths=[4, 8], feature_dim=16, num_classes=10, dropout=0.0))
    return model, lambda m: m(x).logits, {}


def build_fashion_mlp(tmp: Path) -> Built:
    from modalbridge.vision.classifier import FashionMLP, FashionMLPConfig

    x = torch.randn(B, 1, 32, 32, generator=_gen())
    return FashionMLP(FashionMLPConfig(hidden=16, feature_dim=8, dropout=0.0)), lambda m: m(x).logits, {}


def build_t2i_mapper(tmp: Path, kind: str = "attention") -> Built:
    states, mask = text_batch(8)
    table = torch.randn(5, 16, generator=_gen(1))
    cfg = MapperConfig(kind=kind, text_hidden=8, embed_dim=16, num_classes=5, hidden=16, dropout=0.0)
    return T2IMapper(cfg, table=table), lambda m: m(states, mask).embedding, {"vocab": tiny_vocab().to_dict()}


def build_t2i_resolver(tmp: Path) -> Built:
    from modalbridge.t2i.resolver import ClassResolver, ResolverConfig

    states, mask = text_batch(8)
    model = ClassResolver(ResolverConfig(text_hidden=8, num_classes=5, num_prototypes=7, pool_hidden=8))
    return model, lambda m: m(states, mask).logits, {"vocab": tiny_vocab().to_dict()}


def build_show_tell(tmp: Path) -> Built:
    from modalbridge.captioning.sat import ShowTell

    return ShowTell(sat_config()), _caption_run, {"vocab": {"itos": []}}


def build_show_attend_tell(tmp: Path) -> Built:
    from modalbridge.captioning.sat import ShowAttendTell

    return ShowAttendTell(sat_config()), _caption_run, {"vocab": {"itos": []}}


def build_clipcap(tmp: Path) -> Built:
    from modalbridge.captioning.clipcap import ClipCap

    lm_dir = build_tiny_lm(tmp / "lm", "gpt2")
    model = ClipCap.from_lm(str(lm_dir), feature_dim=C, num_positions=P, prefix_length=3, mapper="mlp")
    return model, _caption_run, {"vocab": {"format": "modalbridge.lm-tokenizer/1", "lm": model.config.lm}}


MODEL_BUILDERS: dict[str, Callable[[Path], Built]] = {
    "toy_mlp": build_toy_mlp,
    "biggan_deep": build_biggan_deep,
    "fashion_cnn": build_fashion_cnn,
    "fashion_mlp": build_fashion_mlp,
    "t2i_mapper": build_t2i_mapper,
    "t2i_resolver": build_t2i_resolver,
    "show_tell": build_show_tell,
    "show_attend_tell": build_show_attend_tell,
    "clipcap": build_clipcap,
}
