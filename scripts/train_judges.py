"""Train the evaluation panel that judges the Fashion-MNIST GAN (issue 12): three classifiers of different
architectures and seeds, trained on the real train split only.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_judges.py          # a few minutes of one CPU core
    .venv/bin/python scripts/train_judges.py --only mlp --out /tmp/judges

Judges (model dirs under eval/fashion-judges/<name>, plus panel.json with their roles and real-test accuracy):
- ``cnn``  - fashion_cnn widths 16/32/64, seed 1. The *selection* judge: GAN snapshots are picked by the Fréchet
  distance on its features (scripts/select_gan_snapshot.py). Nothing else in GAN training sees any judge.
- ``mlp``  - fashion_mlp on raw pixels (1024 -> 512 -> 128), seed 2: other inductive biases than the CNNs.
- ``wide`` - fashion_cnn widths 32/64/128 with one conv per stage, 256 features, seed 3. *Held out*: never used
  for training, tuning or selection; FD and precision/recall are reported on its features.
They are evaluation tools only (not shipped in the package). Trained with +-2 px random shifts (CNNs), AdamW and a
one-cycle schedule, as scripts/train_fashion_classifier.py.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from modalbridge import checkpoint, files
from modalbridge.errors import script_main
from modalbridge.vision import fashion_mnist
from modalbridge.vision.classifier import (
    FashionClassifier,
    FashionClassifierConfig,
    FashionMLP,
    FashionMLPConfig,
    to_model_range,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fashion_classifier import accuracy, random_shift  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "eval" / "fashion-judges"
CLASSES = list(fashion_mnist.CLASSES)
# name: (builder, seed, epochs, lr, max shift, role)
PANEL = {
    "cnn": (lambda: FashionClassifier(FashionClassifierConfig(classes=CLASSES)), 1, 2, 3e-3, 2, "selection"),
    "mlp": (lambda: FashionMLP(FashionMLPConfig(classes=CLASSES)), 2, 4, 1e-3, 1, "panel"),
    "wide": (lambda: FashionClassifier(FashionClassifierConfig(
        widths=[32, 64, 128], stage_convs=1, feature_dim=256, dropout=0.4, classes=CLASSES)),
        3, 1, 3e-3, 2, "held_out"),
}


def train_one(name: str, x_train, y_train, x_test, y_test, batch_size: int, out: Path) -> dict:
    build, seed, epochs, lr, shift, role = PANEL[name]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            out_ = model(random_shift(x_train[idx], shift, g), y_train[idx])
            opt.zero_grad(set_to_none=True)
            out_.loss.backward()
            opt.step()
            sched.step()
        print(f"{name}: epoch {epoch + 1}/{epochs} test acc {accuracy(model, x_test, y_test):.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    metrics = {"test_accuracy": accuracy(model, x_test, y_test), "epochs": epochs, "seed": seed,
               "train_seconds": round(time.time() - t0, 1), "n_params": sum(p.numel() for p in model.parameters())}
    extra = {"role": role, "script": "scripts/train_judges.py",
             "data": "Fashion-MNIST train 60k (Debian dataset-fashion-mnist), padded to 32x32, [-1, 1]"}
    checkpoint.save(model, out / name, metrics=metrics, extra=extra)
    return {"role": role, **metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(PANEL), default=sorted(PANEL))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    xs, ys = fashion_mnist.load("train")
    xt, yt = fashion_mnist.load("test")
    x_train, y_train = to_model_range(xs), torch.as_tensor(ys)
    x_test, y_test = to_model_range(xt), torch.as_tensor(yt)
    for name in args.only:
        print(name, train_one(name, x_train, y_train, x_test, y_test, args.batch_size, args.out), flush=True)
    panel = {}  # every judge saved under --out (also those of earlier runs with --only)
    for name in PANEL:
        if (args.out / name / checkpoint.CONFIG_NAME).is_file():
            meta = checkpoint.read_meta(args.out / name)
            panel[name] = {"role": meta["extra"]["role"], "model_type": meta["model_type"],
                           **checkpoint.read_json_file(args.out / name / checkpoint.METRICS_NAME)}
    files.write_json(args.out / "panel.json", panel)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    script_main(main)
