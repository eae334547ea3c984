"""Quality of a class-conditional Fashion-MNIST generator, judged by the shipped Fashion-MNIST classifier.

    .venv/bin/python scripts/gan_quality.py                       # shipped gan-fashion, truncations 1.0 and 0.5
    .venv/bin/python scripts/gan_quality.py --generator runs/gan-fashion/<stamp>/model --n-per-class 200

Measures, with a fixed seed per truncation:
(a) the classifier's accuracy on generated samples of each class vs. on the real test images of that class;
(b) the Fréchet distance between Gaussians fitted to the classifier's penultimate features, generated vs. real test
    images, per class and overall; the same distance for real *train* images (as many per class as generated) vs.
    the test images is the floor a perfect generator would reach at this sample size.
Writes docs/results/gan_fashion.json and docs/images/fashion_grid.png (one row per class).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modalbridge import checkpoint
from modalbridge.generators import load_generator
from modalbridge.generators.gan import sample, save_grid
from modalbridge.vision import fashion_mnist
from modalbridge.vision.classifier import frechet_distance_features, load_classifier, to_model_range

ROOT = Path(__file__).resolve().parents[1]


def per_class(values: np.ndarray, labels: np.ndarray, k: int) -> list[float]:
    return [float(values[labels == c].mean()) for c in range(k)]


def fd_report(feats: torch.Tensor, labels: np.ndarray, ref: torch.Tensor, ref_labels: np.ndarray, k: int) -> dict:
    return {
        "overall": frechet_distance_features(feats, ref),
        "per_class": [frechet_distance_features(feats[labels == c], ref[ref_labels == c]) for c in range(k)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="gan-fashion")
    ap.add_argument("--classifier", default="fashion-classifier")
    ap.add_argument("--truncations", type=float, nargs="+", default=[1.0, 0.5])
    ap.add_argument("--n-per-class", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid-truncation", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "gan_fashion.json")
    ap.add_argument("--grid", type=Path, default=ROOT / "docs" / "images" / "fashion_grid.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    gen, clf = load_generator(args.generator), load_classifier(args.classifier)
    k = gen.config.num_classes
    classes = list(fashion_mnist.CLASSES)
    xt, yt = fashion_mnist.load("test")
    xs, ys = fashion_mnist.load("train")
    test_feats, test_pred = clf.embed(to_model_range(xt))
    test_correct = (test_pred.numpy() == yt).astype(float)
    # real train images, n per class (the first ones of each class): same sample size as the generated sets
    ref_idx = np.concatenate([np.flatnonzero(ys == c)[: args.n_per_class] for c in range(k)])
    train_feats, _ = clf.embed(to_model_range(xs[ref_idx]))
    train_labels = ys[ref_idx]

    labels = torch.arange(k).repeat_interleave(args.n_per_class)  # (N,)
    results = {}
    for t in args.truncations:
        images = sample(gen, labels, truncation=t, seed=args.seed)  # (N, 3, 32, 32)
        feats, pred = clf.embed(images)
        correct = (pred == labels).float().numpy()
        results[f"{t:g}"] = {
            "accuracy": float(correct.mean()),
            "per_class_accuracy": per_class(correct, labels.numpy(), k),
            "frechet": fd_report(feats, labels.numpy(), test_feats, yt, k),
            "max_channel_deviation": float((images - images.mean(1, keepdim=True)).abs().max()),
        }
        fd = results[f"{t:g}"]["frechet"]["overall"]
        print(f"truncation {t:g}: generated accuracy {correct.mean():.4f}  FD {fd:.3f}", flush=True)

    gen_meta = checkpoint.read_meta(_gen_dir(args.generator))
    clf_metrics = checkpoint.read_json_file(_dir(args.classifier) / checkpoint.METRICS_NAME) or {}
    report = {
        "generator": args.generator,
        "generator_config": gen_meta["config"],
        "generator_steps": gen_meta.get("extra", {}).get("generator_steps"),
        "generator_metrics": checkpoint.read_json_file(_gen_dir(args.generator) / checkpoint.METRICS_NAME),
        "classifier": args.classifier,
        "classifier_test_accuracy": clf_metrics.get("test_accuracy"),
        "classes": classes,
        "seed": args.seed,
        "n_generated_per_class": args.n_per_class,
        "real_test": {"n": len(yt), "accuracy": float(test_correct.mean()),
                      "per_class_accuracy": per_class(test_correct, yt, k)},
        "reference_real_train_vs_test": fd_report(train_feats, train_labels, test_feats, yt, k),
        "generated": results,
        "seconds": round(time.time() - t0, 1),
        "command": "python scripts/gan_quality.py " + " ".join(
            f"--{a.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for a, v in vars(args).items() if a not in ("out", "grid", "threads")),
    }
    checkpoint.write_json(args.out, report)

    grid_labels = torch.arange(k).repeat_interleave(10)
    grid = sample(gen, grid_labels, truncation=args.grid_truncation, seed=args.seed)
    save_grid(F.interpolate(grid, scale_factor=2, mode="nearest"), ncol=10, path=args.grid)
    print(f"wrote {args.out} and {args.grid} ({report['seconds']} s)")


def _dir(spec: str) -> Path:
    from modalbridge import assets

    return assets.resolve(spec)


def _gen_dir(spec: str) -> Path:
    from modalbridge.generators import DEFAULT_ALIAS

    return _dir(DEFAULT_ALIAS.get(spec, spec))


if __name__ == "__main__":
    main()
