"""Quality of a class-conditional Fashion-MNIST generator, judged by a panel of classifiers that never saw it.

    .venv/bin/python scripts/gan_quality.py                       # shipped gan-fashion -> docs/results/gan_fashion.json
    .venv/bin/python scripts/gan_quality.py --record              # ... and record its default truncation in it
    .venv/bin/python scripts/gan_quality.py --generator runs/gan-fashion-v2/<stamp>/model --out /tmp/q.json \
        --sheet /tmp/q.png

The panel (eval/fashion-judges, trained on real train images only by scripts/train_judges.py): ``cnn`` (the judge
that selects GAN snapshots), ``mlp`` and ``wide`` (held out from all training, tuning and selection). Per truncation
(default 1.0, 0.85, 0.7, 0.5), with ``--n-per-class`` samples per class from a fixed seed, per class and overall:

- panel accuracy: each judge's accuracy on the generated images (mean over judges and worst judge), next to the
  same judges' accuracy on the 10,000 real test images;
- Fréchet distance (Heusel et al. 2017) between Gaussians of a judge's penultimate features, generated vs. real test;
- improved precision / recall (Kynkäänniemi et al. 2019, k = 3 nearest neighbours) in each judge's feature space,
  generated vs. real test images.
Real-vs-real floors: the same FD / precision / recall with the first ``--n-per-class`` real *train* images of each
class in place of the generated ones (what a perfect generator would reach at this sample size).
The headline numbers are the held-out judge's. The default truncation is picked from its precision/recall trade-off:
the highest precision (most typical samples) among the truncations whose recall stays >= 0.5 (at least half of the
real test images covered: no collapse); if none keeps it, the highest recall.
For continuity the repo's own ``fashion-classifier`` (the old, single judge) is reported too (accuracy and FD).
Writes the JSON report and a sample sheet PNG (rows = classes, labelled; columns = samples at the chosen truncation).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modalbridge import checkpoint, files
from modalbridge.errors import read_json, script_main
from modalbridge.generators import load_generator
from modalbridge.training.gan import sample
from modalbridge.vision import fashion_mnist
from modalbridge.vision.classifier import (
    frechet_distance_features,
    load_classifier,
    load_judge,
    precision_recall,
    to_model_range,
)

ROOT = Path(__file__).resolve().parents[1]
JUDGES = ROOT / "eval" / "fashion-judges"
HELD_OUT = "wide"


def per_class(values: np.ndarray, labels: np.ndarray, k: int) -> list[float]:
    return [float(values[labels == c].mean()) for c in range(k)]


def judge_report(feats: torch.Tensor, pred: torch.Tensor, labels: np.ndarray, ref: torch.Tensor, ref_labels: np.ndarray,
                 k: int, pr_k: int, with_pr: bool = True) -> dict:
    """Accuracy, FD and precision/recall of one judge: ``feats`` (N, F) of images of class ``labels`` vs ``ref``."""
    correct = (pred.numpy() == labels).astype(float)
    out = {"accuracy": float(correct.mean()), "per_class_accuracy": per_class(correct, labels, k),
           "fd": frechet_distance_features(feats, ref),
           "per_class_fd": [frechet_distance_features(feats[labels == c], ref[ref_labels == c]) for c in range(k)]}
    if with_pr:
        out.update(precision_recall(ref, feats, pr_k))
        pcs = [precision_recall(ref[ref_labels == c], feats[labels == c], pr_k) for c in range(k)]
        out["per_class_precision"] = [p["precision"] for p in pcs]
        out["per_class_recall"] = [p["recall"] for p in pcs]
    return out


def panel_summary(per_judge: dict, panel_names: list[str]) -> dict:
    """Mean and worst (minimum) accuracy over the panel, overall and per class."""
    acc = np.array([per_judge[j]["accuracy"] for j in panel_names])
    pc = np.array([per_judge[j]["per_class_accuracy"] for j in panel_names])  # (J, K)
    return {"accuracy_mean": float(acc.mean()), "accuracy_worst": float(acc.min()),
            "per_class_accuracy_mean": pc.mean(0).tolist(), "per_class_accuracy_worst": pc.min(0).tolist()}


def choose_truncation(generated: dict, judge: str, min_recall: float = 0.5) -> tuple[float, str]:
    """The most typical truncation that does not collapse: the highest precision among the truncations whose recall
    (``judge``'s features) is at least ``min_recall``; if none reaches it, the highest recall."""
    rows = [(float(t), r["judges"][judge]["precision"], r["judges"][judge]["recall"]) for t, r in generated.items()]
    ok = [r for r in rows if r[2] >= min_recall]
    if ok:
        t = max(ok, key=lambda r: (r[1], -r[0]))[0]
        why = f"highest precision ({judge}) among the truncations with recall >= {min_recall}"
    else:
        t = max(rows, key=lambda r: (r[2], r[0]))[0]
        why = f"no truncation keeps recall >= {min_recall} ({judge}): the one with the highest recall"
    return t, why


def sample_sheet(gen, classes: list[str], truncation: float, seed: int, ncol: int, path: Path, title: str) -> None:
    """PNG: one row per class (name on the left), ``ncol`` samples at ``truncation``, 2x nearest upscaled."""
    from PIL import Image, ImageDraw, ImageFont

    k = len(classes)
    imgs = sample(gen, torch.arange(k).repeat_interleave(ncol), truncation=truncation, seed=seed)  # (k*ncol, 3, H, W)
    imgs = F.interpolate(imgs[:, :1], scale_factor=2, mode="nearest")  # (N, 1, 2H, 2W)
    arr = ((imgs.clamp(-1, 1) + 1) * 127.5).round().byte().squeeze(1).numpy()  # (N, 2H, 2W)
    s, pad, left, top = arr.shape[-1], 2, 96, 22
    sheet = Image.new("L", (left + ncol * (s + pad) + pad, top + k * (s + pad) + pad), 255)
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    draw.text((4, 4), title, fill=0, font=font)
    for c in range(k):
        y = top + pad + c * (s + pad)
        draw.text((4, y + s // 2 - 6), classes[c], fill=0, font=font)
        for q in range(ncol):
            sheet.paste(Image.fromarray(arr[c * ncol + q]), (left + pad + q * (s + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="gan-fashion")
    ap.add_argument("--judges", type=Path, default=JUDGES)
    ap.add_argument("--truncations", type=float, nargs="+", default=[1.0, 0.85, 0.7, 0.5])
    ap.add_argument("--n-per-class", type=int, default=500)
    ap.add_argument("--k", type=int, default=3, help="nearest neighbours for precision/recall")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet-truncation", type=float, default=None, help="default: the chosen truncation")
    ap.add_argument("--sheet-columns", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--record", action="store_true",
                    help="write the chosen default truncation into the generator's config.json (extra)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "gan_fashion.json")
    ap.add_argument("--sheet", type=Path, default=ROOT / "docs" / "results" / "gan_fashion_samples.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    gen = load_generator(args.generator)
    k = gen.config.num_classes
    classes = list(fashion_mnist.CLASSES)
    panel_meta = read_json(args.judges / "panel.json", "judge panel")
    names = sorted(panel_meta)
    judges = {n: load_judge(args.judges / n) for n in names}
    reference = {"fashion-classifier": load_classifier("fashion-classifier")}  # the old single judge
    all_judges = {**judges, **reference}

    xt, yt = fashion_mnist.load("test")
    xs, ys = fashion_mnist.load("train")
    x_test = to_model_range(xt)
    ref_idx = np.concatenate([np.flatnonzero(ys == c)[: args.n_per_class] for c in range(k)])
    x_floor, y_floor = to_model_range(xs[ref_idx]), ys[ref_idx]
    test = {n: j.embed(x_test) for n, j in all_judges.items()}  # name -> (feats, pred)

    def evaluate(images: torch.Tensor, labels: np.ndarray) -> dict:
        per_judge = {}
        for n, j in all_judges.items():
            feats, pred = j.embed(images)
            per_judge[n] = judge_report(feats, pred, labels, test[n][0], yt, k, args.k, with_pr=n in judges)
        return {**panel_summary(per_judge, names), "judges": per_judge}

    real_test = {}
    for n in all_judges:
        correct = (test[n][1].numpy() == yt).astype(float)
        real_test[n] = {"accuracy": float(correct.mean()), "per_class_accuracy": per_class(correct, yt, k)}
    real_test_panel = panel_summary(real_test, names)
    floor = evaluate(x_floor, y_floor)
    rp, fh = real_test_panel, floor["judges"][HELD_OUT]
    print(f"real test: panel accuracy {rp['accuracy_mean']:.4f} (worst {rp['accuracy_worst']:.4f});"
          f" floor ({HELD_OUT}): FD {fh['fd']:.3f} P {fh['precision']:.3f} R {fh['recall']:.3f}", flush=True)

    labels = torch.arange(k).repeat_interleave(args.n_per_class)  # (N,)
    generated = {}
    for t in args.truncations:
        images = sample(gen, labels, truncation=t, seed=args.seed)  # (N, 3, 32, 32)
        r = evaluate(images, labels.numpy())
        r["max_channel_deviation"] = float((images - images.mean(1, keepdim=True)).abs().max())
        generated[f"{t:g}"] = r
        h = r["judges"][HELD_OUT]
        print(f"truncation {t:g}: panel accuracy {r['accuracy_mean']:.4f} (worst {r['accuracy_worst']:.4f}, "
              f"worst class {min(r['per_class_accuracy_mean']):.3f}); {HELD_OUT}: FD {h['fd']:.3f}"
              f" P {h['precision']:.3f} R {h['recall']:.3f}  ({time.time() - t0:.0f} s)", flush=True)
    default_t, why = choose_truncation(generated, HELD_OUT)

    gen_dir = _gen_dir(args.generator)
    meta = checkpoint.read_meta(gen_dir)
    run_cfg = meta.get("extra", {}).get("run_config") or {}
    report = {
        "generator": args.generator,
        "generator_config": meta["config"],
        "generator_recipe": run_cfg.get("name"),
        "generator_steps": meta.get("extra", {}).get("generator_steps"),
        "generator_bytes": sum(f.stat().st_size for f in gen_dir.iterdir()),
        "classes": classes,
        "seed": args.seed,
        "n_generated_per_class": args.n_per_class,
        "precision_recall_k": args.k,
        "panel": {n: {**panel_meta[n]} for n in names},
        "held_out_judge": HELD_OUT,
        "selection_judge": next((n for n in names if panel_meta[n].get("role") == "selection"), None),
        "reference_judges": sorted(reference),
        "real_test": {"n": len(yt), **real_test_panel, "judges": real_test},
        "real_floor_train_vs_test": {"n_per_class": args.n_per_class, **floor},
        "generated": generated,
        "default_truncation": default_t,
        "default_truncation_rule": why,
        "seconds": None,
        "command": "python scripts/gan_quality.py --generator " + args.generator + " --truncations "
                   + " ".join(f"{t:g}" for t in args.truncations) + f" --n-per-class {args.n_per_class} --k {args.k}"
                   + f" --seed {args.seed}",
    }
    sheet_t = args.sheet_truncation if args.sheet_truncation is not None else default_t
    sample_sheet(gen, classes, sheet_t, args.seed, args.sheet_columns, args.sheet,
                 f"{args.generator} ({run_cfg.get('name', '?')}, {report['generator_steps']} G steps), "
                 f"truncation {sheet_t:g}, seed {args.seed}")
    report["sheet"] = {"path": str(args.sheet.resolve().relative_to(ROOT)) if args.sheet.resolve().is_relative_to(ROOT)
                       else str(args.sheet), "truncation": sheet_t}
    report["seconds"] = round(time.time() - t0, 1)
    files.write_json(args.out, report)
    print(f"default truncation {default_t:g} ({why})")
    if args.record:  # what draw and the web app use when no truncation is given
        meta["extra"] = {**meta.get("extra", {}), "default_truncation": default_t,
                         "default_truncation_rule": f"scripts/gan_quality.py: {why}"}
        files.write_json(gen_dir / checkpoint.CONFIG_NAME, meta)
        print(f"recorded default truncation {default_t:g} in {gen_dir / checkpoint.CONFIG_NAME}")
    print(f"wrote {args.out} and {args.sheet} ({report['seconds']} s)")


def _gen_dir(spec: str) -> Path:
    from modalbridge import assets
    from modalbridge.generators import DEFAULT_ALIAS

    return assets.resolve(DEFAULT_ALIAS.get(spec, spec))


if __name__ == "__main__":
    script_main(main)
