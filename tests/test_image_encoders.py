"""Image encoders: tiny random HF ResNet/ViT/CLIP checkpoints loaded by path, preprocessing against the HF
processors, frozen batch norm, partial fine-tuning, and the real EfficientNet-Lite0 weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modalbridge.errors import UserError
from modalbridge.vision import encoders as E
from modalbridge.vision.preprocess import Preprocess


def _image(w: int = 53, h: int = 41, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _save_resnet(path):
    from transformers import ResNetConfig, ResNetModel
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    torch.manual_seed(0)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic")
    ResNetModel(cfg).save_pretrained(path)
    proc = ConvNextImageProcessorPil(size={"shortest_edge": 64}, crop_pct=0.875)
    proc.save_pretrained(path)
    return proc


def _save_vit(path):
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
                    patch_size=8)
    ViTModel(cfg).save_pretrained(path)
    proc = ViTImageProcessorPil(size={"height": 32, "width": 32})
    proc.save_pretrained(path)
    return proc


def _save_clip(path, full: bool = False):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(0)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
                  patch_size=8)
    if full:
        text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=99)
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    else:
        CLIPVisionModel(CLIPVisionConfig(**vision)).save_pretrained(path)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(path)
    return proc


TINY = {"resnet": (_save_resnet, 4, 32), "vit": (_save_vit, 16, 32), "clip": (_save_clip, 16, 32)}


def test_registry_is_covered_by_these_tests():
    assert set(E.ENCODERS) == set(TINY) | {"efficientnet-lite0"}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_tiny_hf_encoder_by_path(kind, tmp_path):
    save, positions, dim = TINY[kind]
    proc = save(tmp_path)
    enc = E.build_encoder(str(tmp_path))
    assert enc.kind == kind and enc.dim == dim and enc.num_positions == positions
    images = [_image(53, 41, 0), _image(30, 70, 1)]
    # Preprocessing in torch/PIL equals the HF image processor on the same images.
    ours = enc.preprocess(images)
    ref = proc(images=images, return_tensors="pt")["pixel_values"]
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    out = enc.encode(images)
    assert out.grid.shape == (2, positions, dim) and out.pooled.shape == (2, dim)
    assert torch.isfinite(out.grid).all() and torch.isfinite(out.pooled).all()
    # Frozen: nothing needs a gradient and the forward builds no graph.
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc(ours).grid.requires_grad
    assert enc.describe()["feature_dim"] == dim


def test_full_clip_checkpoint_loads_its_vision_tower(tmp_path):
    _save_clip(tmp_path, full=True)
    enc = E.build_encoder(str(tmp_path))
    assert enc.kind == "clip" and enc.encode([_image()]).pooled.shape == (1, 32)


def test_frozen_batchnorm_stays_in_eval_and_last_blocks_finetune(tmp_path):
    _save_resnet(tmp_path)
    enc = E.build_encoder(str(tmp_path)).train()
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and enc.training and not any(bn.training for bn in bns)
    x = enc.preprocess([_image(), _image(seed=1)])
    before = [bn.running_mean.clone() for bn in bns]
    enc(x)
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(before, bns, strict=True))

    ft = E.build_encoder(str(tmp_path), trainable_blocks=1).train()
    last = ft.blocks()[-1]
    first = ft.blocks()[0]
    assert all(p.requires_grad for p in last.parameters())
    assert not any(p.requires_grad for p in first.parameters())
    assert all(m.training for m in last.modules()) and not any(m.training for m in first.modules())
    out = ft(ft.preprocess([_image(), _image(seed=1)]))
    out.pooled.sum().backward()
    assert next(iter(last.parameters())).grad is not None
    with pytest.raises(UserError, match="trainable_blocks"):
        E.build_encoder(str(tmp_path), trainable_blocks=99)


def test_unknown_encoders_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        E.build_encoder(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UserError, match="model_type 'bert'"):
        E.build_encoder(str(tmp_path))


def test_preprocess_shortest_edge_and_crop():
    p = Preprocess(resize=20, crop=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    white = Image.new("RGB", (80, 40), (255, 255, 255))
    x = p([white])
    assert x.shape == (1, 3, 16, 16) and p.size == (16, 16)
    torch.testing.assert_close(x, torch.ones_like(x))
    assert Preprocess(resize=(24, 12), crop=None, mean=(0, 0, 0), std=(1, 1, 1))([white]).shape == (1, 3, 24, 12)


def test_efficientnet_lite0_real_weights_deterministic():
    enc = E.build_encoder("efficientnet-lite0")
    assert enc.dim == 1280 and enc.num_positions == 49
    # A simple synthetic scene: a red disc on a blue background.
    yy, xx = np.mgrid[:256, :256]
    arr = np.zeros((256, 256, 3), np.uint8)
    arr[...] = (30, 60, 200)
    arr[(yy - 128) ** 2 + (xx - 128) ** 2 < 70**2] = (220, 30, 30)
    img = Image.fromarray(arr)
    x1 = enc.preprocess([img])
    assert x1.shape == (1, 3, 224, 224)
    a = enc(x1)
    b = enc(x1)
    assert a.grid.shape == (1, 49, 1280) and a.pooled.shape == (1, 1280)
    assert torch.equal(a.grid, b.grid)
    batch = enc(enc.preprocess([_image(300, 200), img, _image(224, 224, 3)]))
    torch.testing.assert_close(batch.grid[1:2], a.grid, atol=1e-4, rtol=1e-4)
    # The pretrained head gives the same, confident-enough class at batch size 1 and 3.
    logits = enc.logits(x1)
    assert logits.shape == (1, 1000)
    assert enc.logits(enc.preprocess([_image(), img]))[1].argmax() == logits[0].argmax()
    assert torch.softmax(logits, -1).max() > 0.05  # real weights: far above the 0.001 of a random head
    assert (a.grid >= 0).all() and (a.grid <= 6).all()  # ReLU6 head activation


@pytest.mark.parametrize("kind", ["resnet", "vit", "clip", "efficientnet-lite0"])
def test_stem_then_top_equals_the_library_forward(kind, tmp_path):
    """Fine-tuning caches stem(pixels, n) and trains top(., n) on it: for every cut n the two halves must give the
    library's own forward (HF ``backbone(pixel_values=...)``, efficientnet's ``extract_features``)."""
    if kind == "efficientnet-lite0":
        enc = E.EfficientNetLite0Encoder(pretrained=False).eval()
    else:
        TINY[kind][0](tmp_path)
        enc = E.build_encoder(str(tmp_path))
    x = enc.preprocess([_image(), _image(seed=1)])
    with torch.no_grad():
        ref = enc.features(x)
        for n in range(len(enc.blocks()) + 1):
            out = enc.top(enc.stem(x, n), n)
            torch.testing.assert_close(out.grid, ref.grid, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.pooled, ref.pooled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_split_encoder_rows_and_top_state_round_trip(kind, tmp_path):
    TINY[kind][0](tmp_path)
    enc = E.build_encoder(str(tmp_path), trainable_blocks=1)
    stem, top = E.split_encoder(enc)
    assert stem.frozen and stem.cache_key() != E.build_encoder(str(tmp_path)).cache_key()
    x = enc.preprocess([_image(), _image(seed=1)])
    rows = stem.features(x).grid  # what the feature cache stores: (B, P', C')
    assert rows.dim() == 3
    out = top(rows)
    torch.testing.assert_close(out.grid, enc.features(x).grid, atol=1e-5, rtol=1e-5)
    out.pooled.sum().backward()  # gradients reach the trainable blocks only
    assert all(p.grad is not None for p in enc.blocks()[-1].parameters())
    assert all(p.grad is None for p in enc.blocks()[0].parameters())
    state = enc.top_state()
    assert state and all(k.startswith(tuple(p + "." for p in enc._trainable_prefixes())) for k in state)
    fresh = E.build_encoder(str(tmp_path), trainable_blocks=1)
    changed = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
    fresh.load_top_state(changed, "test")
    assert all(torch.equal(fresh.top_state()[k], v) for k, v in changed.items())
    with pytest.raises(UserError, match="do not fit"):
        E.build_encoder(str(tmp_path), trainable_blocks=2).load_top_state(state, "test")
    with pytest.raises(UserError, match="trainable_blocks > 0"):
        E.split_encoder(E.build_encoder(str(tmp_path)))
