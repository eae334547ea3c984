"""A small Fashion-MNIST CNN classifier and the Fréchet distance on its penultimate features.

It is the judge of the GAN we train (``training/gan.py``): accuracy on generated samples says whether the
class is recognisable, and the Fréchet distance between feature Gaussians (Heusel et al. 2017, "FID",
https://arxiv.org/abs/1706.08500) says how close the generated distribution is to real images. Inception
features are not available offline and are a poor fit for 28x28 grayscale, so the features come from this
classifier (the "FID with a domain classifier" variant used for MNIST-like data).

Notation: B batch, C channels (1 or 3; 3 are averaged to gray), H = W = 32 (28x28 digits padded by 2),
F feature dim (penultimate layer), K classes.
Images enter in [-1, 1], the range the generator produces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalbridge.registry import MODELS


def to_model_range(images: np.ndarray | torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 images ``(N, 28, 28)`` -> float ``(N, 1, size, size)`` in [-1, 1], zero-padded (black) to ``size``."""
    x = torch.as_tensor(np.array(images)).float().div(127.5).sub(1.0).unsqueeze(1)  # (N, 1, 28, 28)
    pad = size - x.shape[-1]
    if pad < 0:
        raise ValueError(f"cannot pad {x.shape[-1]}x{x.shape[-1]} images to {size}")
    lo, hi = pad // 2, pad - pad // 2
    return F.pad(x, (lo, hi, lo, hi), value=-1.0)  # (N, 1, size, size)


@dataclass
class FashionClassifierConfig:
    in_channels: int = 1
    resolution: int = 32
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])  # per stage; each halves the resolution
    feature_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.3
    classes: list[str] = field(default_factory=list)  # class names in index order (empty: unnamed)
    stage_convs: int = 2  # convs in each stage after the first (which has one)

    def __post_init__(self):
        if self.classes and len(self.classes) != self.num_classes:
            raise ValueError(f"{len(self.classes)} class names for num_classes={self.num_classes}")


@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, K)
    features: torch.Tensor  # (B, F) penultimate activations, the Fréchet-distance space
    loss: torch.Tensor | None = None


@MODELS.register("fashion_cnn")
class FashionClassifier(nn.Module):
    """conv-BN-ReLU stages (two convs each, max-pool between) -> global average -> F features -> K logits."""

    model_type = "fashion_cnn"
    config_class = FashionClassifierConfig

    def __init__(self, config: FashionClassifierConfig):
        super().__init__()
        self.config = config
        layers, c_in = [], config.in_channels
        for i, c in enumerate(config.widths):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            for _ in range(config.stage_convs - 1 if i > 0 else 0):  # the first stage is one conv: cheap at full res.
                layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            c_in = c
        self.body = nn.Sequential(*layers)
        self.feature = nn.Sequential(nn.Linear(c_in, config.feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ClassifierOutput:
        """Classify ``images`` (B, C, H, W) in [-1, 1]; 3-channel input is averaged to gray when in_channels=1."""
        if images.shape[1] != self.config.in_channels:
            if self.config.in_channels == 1 and images.shape[1] == 3:
                images = images.mean(1, keepdim=True)  # (B, 1, H, W); the GAN replicates gray to RGB
            else:
                raise ValueError(f"expected {self.config.in_channels} channels, got {images.shape[1]}")
        h = self.body(images).mean((2, 3))  # (B, widths[-1])
        features = self.feature(h)  # (B, F)
        logits = self.head(self.dropout(features))  # (B, K)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(logits=logits, features=features, loss=loss)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, F)`` and predicted classes ``(N,)`` of ``images`` in batches (eval mode)."""
        was_training = self.training
        self.eval()
        feats, preds = [], []
        for i in range(0, len(images), batch_size):
            out = self(images[i : i + batch_size])
            feats.append(out.features)
            preds.append(out.logits.argmax(-1))
        self.train(was_training)
        return torch.cat(feats), torch.cat(preds)


@dataclass
class FashionMLPConfig:
    """A pixel MLP judge: flattened (resolution^2) gray pixels -> hidden -> F features -> K logits."""

    resolution: int = 32
    hidden: int = 512
    feature_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.2
    classes: list[str] = field(default_factory=list)


@MODELS.register("fashion_mlp")
class FashionMLP(nn.Module):
    """Fully connected classifier on raw pixels: a judge with other inductive biases than the CNNs."""

    model_type = "fashion_mlp"
    config_class = FashionMLPConfig

    def __init__(self, config: FashionMLPConfig):
        super().__init__()
        self.config = config
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(config.resolution**2, config.hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(config.dropout), nn.Linear(config.hidden, config.feature_dim),
                                  nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ClassifierOutput:
        """Classify ``images`` (B, 1 or 3, H, W) in [-1, 1] (3 channels are averaged to gray)."""
        if images.shape[1] == 3:
            images = images.mean(1, keepdim=True)
        features = self.body(images)  # (B, F)
        logits = self.head(self.dropout(features))  # (B, K)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(logits=logits, features=features, loss=loss)

    embed = FashionClassifier.embed


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int = 1000) -> torch.Tensor:
    """Distance from each row of ``x`` (N, F) to its k-th nearest other row: (N,)."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)  # (n, N); the row itself is at distance 0, the first of k + 1
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _inside_any_ball(query: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1000):
    """For each row of ``query`` (M, F): is it within ``radii`` (N,) of some row of ``centres`` (N, F)? (M,) bool."""
    out = []
    for i in range(0, len(query), chunk):
        out.append((torch.cdist(query[i : i + chunk], centres) <= radii[None, :]).any(1))
    return torch.cat(out)


def precision_recall(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, k: int = 3) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019, https://arxiv.org/abs/1904.06991).

    Each set's manifold is the union of balls around its points with radius the distance to the k-th nearest
    neighbour in the same set. Precision: the fraction of ``fake`` (M, F) inside the real manifold (how many samples
    look real); recall: the fraction of ``real`` (N, F) inside the fake manifold (how much of the data is covered).
    """
    real = torch.as_tensor(np.asarray(real), dtype=torch.float32)
    fake = torch.as_tensor(np.asarray(fake), dtype=torch.float32)
    precision = _inside_any_ball(fake, real, _kth_neighbour_radii(real, k)).float().mean()
    recall = _inside_any_ball(real, fake, _kth_neighbour_radii(fake, k)).float().mean()
    return {"precision": float(precision), "recall": float(recall)}


def gaussian_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` of ``features`` (N, F), in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need a (N >= 2, F) feature matrix, got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2). The middle matrix is symmetric PSD, so its
    square-root trace is the sum of square roots of its eigenvalues: symmetric eigendecompositions only, which
    are stable where a general ``sqrtm`` of S1 S2 can return complex noise.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^1/2
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_cross = np.sqrt(np.clip(eig, 0, None)).sum()
    d2 = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross)
    return max(d2, 0.0)


def frechet_distance_features(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, F) and ``b`` (M, F)."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def load_classifier(spec: str = "fashion-classifier") -> FashionClassifier:
    """The shipped classifier (``modalbridge/weights/fashion-classifier``) or any ``fashion_cnn`` model directory."""
    from modalbridge import assets, checkpoint

    return checkpoint.load(assets.resolve(spec), expected="fashion_cnn")


def load_judge(path) -> nn.Module:
    """A judge of the evaluation panel (scripts/train_judges.py): a ``fashion_cnn`` or ``fashion_mlp`` model dir."""
    from modalbridge import checkpoint

    return checkpoint.load(path, expected=("fashion_cnn", "fashion_mlp"))
