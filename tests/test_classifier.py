"""Fashion-MNIST classifier (the GAN's judge) and the Fréchet distance on its features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modalbridge import assets, checkpoint
from modalbridge.vision import fashion_mnist
from modalbridge.vision.classifier import (
    FashionClassifier,
    FashionClassifierConfig,
    FashionMLP,
    FashionMLPConfig,
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
    load_classifier,
    precision_recall,
    to_model_range,
)


def tiny() -> FashionClassifier:
    torch.manual_seed(0)
    return FashionClassifier(FashionClassifierConfig(widths=[4, 8], feature_dim=16, num_classes=10)).eval()


def test_to_model_range_pads_black_and_scales():
    img = np.full((2, 28, 28), 255, dtype=np.uint8)
    img[1] = 0
    x = to_model_range(img)
    assert x.shape == (2, 1, 32, 32)
    assert torch.all(x[0, 0, 2:30, 2:30] == 1.0) and torch.all(x[1] == -1.0)
    assert torch.all(x[0, 0, :2] == -1.0) and torch.all(x[0, 0, :, 30:] == -1.0)  # padding is black


def test_outputs_loss_and_gray_rgb_equivalence():
    model = tiny()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    out = model(x)
    assert out.logits.shape == (3, 10) and out.features.shape == (3, 16) and out.loss is None
    rgb = model(x.expand(-1, 3, -1, -1))  # the GAN's replicated-gray RGB is classified as the gray image
    torch.testing.assert_close(rgb.logits, out.logits)
    labels = torch.tensor([1, 2, 3])
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    torch.testing.assert_close(model(x, labels).loss, expected)
    feats, preds = model.embed(x, batch_size=2)
    torch.testing.assert_close(feats, out.features)
    assert torch.equal(preds, out.logits.argmax(-1))
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(1, 2, 32, 32))


def test_frechet_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(400, 12)) @ np.random.default_rng(1).normal(size=(12, 12))
    assert frechet_distance_features(feats, feats) < 1e-6
    assert frechet_distance_features(feats, feats + 1.0) == pytest.approx(12.0, rel=1e-6)  # a pure mean shift


def test_frechet_closed_forms():
    d = 5
    m = np.arange(d, dtype=float)
    # N(0, I) vs N(m, 4I): |m|^2 + tr(I + 4I - 2 * 2I) = |m|^2 + d
    assert frechet_distance(np.zeros(d), np.eye(d), m, 4 * np.eye(d)) == pytest.approx(float(m @ m) + d)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
    assert frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(3.0)


def test_frechet_matches_scipy_sqrtm_on_full_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


def test_frechet_of_samples_estimates_the_gaussians():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 3))
    y = rng.normal(size=(20000, 3)) * 2.0 + np.array([1.0, 0.0, 0.0])
    assert frechet_distance_features(x, y) == pytest.approx(1.0 + 3.0, abs=0.1)  # |m|^2 + d, as above
    mu, cov = gaussian_stats(y)
    assert mu.shape == (3,) and cov.shape == (3, 3)


@pytest.fixture(scope="module")
def shipped():
    return load_classifier()


def test_shipped_classifier_reaches_its_recorded_accuracy(shipped):
    path = assets.resolve("fashion-classifier")
    metrics = json.loads((path / checkpoint.METRICS_NAME).read_text())
    assert shipped.model_type == "fashion_cnn" and shipped.config.classes == fashion_mnist.CLASSES
    x, y = fashion_mnist.load("test")
    _, pred = shipped.embed(to_model_range(x[:1000]))
    acc = float((pred == torch.as_tensor(y[:1000])).float().mean())
    assert acc == pytest.approx(metrics["test_accuracy_first1000"], abs=0.005)
    assert acc >= 0.88 and metrics["test_accuracy"] >= 0.88
    assert sum(f.stat().st_size for f in path.iterdir()) < 2_000_000


def test_precision_recall_extremes_and_one_sided_coverage():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=g)
    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, real + 100.0)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # fakes on one half of the real cloud: realistic (precision high), half the data uncovered (recall low)
    half = real[real[:, 0] > 0]
    pr = precision_recall(real, half + 0.01 * torch.randn(half.shape, generator=g))
    assert pr["precision"] > 0.9 and pr["recall"] < 0.75


def test_mlp_judge_round_trips_and_averages_rgb(tmp_path):
    torch.manual_seed(0)
    m = FashionMLP(FashionMLPConfig(hidden=16, feature_dim=8)).eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    feats, pred = m.embed(x)
    assert feats.shape == (3, 8) and pred.shape == (3,)
    torch.testing.assert_close(m(x.expand(-1, 3, -1, -1)).logits, m(x).logits)
    checkpoint.save(m, tmp_path / "mlp")
    from modalbridge.vision.classifier import load_judge

    torch.testing.assert_close(load_judge(tmp_path / "mlp").embed(x)[0], feats)
