"""Pick the best EMA snapshot of a GAN run by the *selection* judge's Fréchet distance, optionally install it.

    .venv/bin/python scripts/select_gan_snapshot.py runs/gan-fashion-v2/<stamp>
    .venv/bin/python scripts/select_gan_snapshot.py runs/gan-fashion-v2/<stamp> \
        --install src/modalbridge/weights/gan-fashion

Candidates: run_dir/snapshots/step* (``model.snapshot_every``) and run_dir/model (the final EMA generator).
Each draws ``--n-per-class`` samples per class at truncation 1 (seed 0); the score is the FD between Gaussians
of the ``cnn`` judge's features (eval/fashion-judges/cnn, role "selection"), generated vs. the first
``--n-real-per-class`` real *train* images of each class (the test split is left to scripts/gan_quality.py).
The held-out judges play no part. ``--install`` copies the winner, with the run's resolved config and the
selection scores in ``config.json``'s ``extra`` (as an export). ``--final`` takes run_dir/model, the end of the
run's schedule, instead of the lowest FD (every candidate is still scored and recorded): for a stage that trades FD
for something else on purpose, such as v6's class-fidelity fine-tune.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from modalbridge import checkpoint, files
from modalbridge.errors import script_main
from modalbridge.generators import biggan  # noqa: F401 - registers biggan_deep
from modalbridge.training import engine
from modalbridge.training.gan import sample
from modalbridge.vision import fashion_mnist
from modalbridge.vision.classifier import frechet_distance_features, load_judge, to_model_range

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--judge", type=Path, default=ROOT / "eval" / "fashion-judges" / "cnn")
    ap.add_argument("--n-per-class", type=int, default=300)
    ap.add_argument("--n-real-per-class", type=int, default=1000)
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="more candidate model dirs (e.g. the warm start)")
    ap.add_argument("--install", type=Path, default=None)
    ap.add_argument("--final", action="store_true", help="choose run_dir/model (the schedule's end), not the min FD")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="where to sample and judge (cuda on a GPU machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    judge = load_judge(args.judge).to(dev)
    if checkpoint.read_meta(args.judge).get("extra", {}).get("role") != "selection":
        raise SystemExit(f"{args.judge} is not the panel's selection judge")
    xs, ys = fashion_mnist.load("train")
    idx = np.concatenate([np.flatnonzero(ys == c)[: args.n_real_per_class] for c in range(int(ys.max()) + 1)])
    with torch.no_grad():
        real_feats = judge.embed(to_model_range(xs[idx]).to(dev))[0].cpu()  # the first n of each class
    cands = sorted((args.run_dir / "snapshots").glob("step*")) + [args.run_dir / "model"] + list(args.also)
    scores = {}
    for d in cands:
        if not (d / checkpoint.CONFIG_NAME).is_file():
            continue
        g = checkpoint.load(d, expected="biggan_deep").to(dev)
        k = g.config.num_classes
        labels = torch.arange(k).repeat_interleave(args.n_per_class)
        with torch.no_grad():
            feats, pred = (t.cpu() for t in judge.embed(sample(g, labels.to(dev), truncation=1.0, seed=0)))
        scores[str(d) if d in args.also else d.name] = {"fd": frechet_distance_features(feats, real_feats),
                          "accuracy": float((pred == labels).float().mean()),
                          "steps": checkpoint.read_meta(d).get("extra", {}).get("generator_steps")}
        name = str(d) if d in args.also else d.name
        print(f"{name}: steps {scores[name]['steps']}  FD {scores[name]['fd']:.3f}  "
              f"acc {scores[name]['accuracy']:.3f}", flush=True)
    if not scores:
        ap.error(f"no generator in {args.run_dir}/snapshots or {args.run_dir}/model yet")
    if args.final and "model" not in scores:
        raise SystemExit(f"--final: {args.run_dir}/model is not a generator (the run has not finished)")
    best = "model" if args.final else min(scores, key=lambda n: scores[n]["fd"])
    print(f"{'final' if args.final else 'best'}: {best} {scores[best]}")
    if args.install:
        if Path(best) in args.also:
            raise SystemExit(f"the best candidate is {best}, not a snapshot of this run: nothing installed")
        src = args.run_dir / ("model" if best == "model" else f"snapshots/{best}")
        with files.atomic_dir(args.install) as tmp:  # the old install stays whole until the new one is
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            meta = checkpoint.read_meta(tmp)
            meta["extra"]["run_config"] = yaml.safe_load((args.run_dir / "config.yaml").read_text())
            stages = engine.earlier_configs(args.run_dir)
            if stages:  # a multi-stage run (engine.keep_earlier_config): the earlier stages' configs, in order
                meta["extra"]["earlier_run_configs"] = [yaml.safe_load(p.read_text()) for p in stages]
            criterion = ("the run's end (run_dir/model), not selected; FD at truncation 1 vs real train recorded"
                         if args.final else "FD at truncation 1 vs real train (min)")
            meta["extra"]["selection"] = {"judge": "cnn", "criterion": criterion,
                                          "n_per_class": args.n_per_class, "chosen": best, "scores": scores}
            files.write_json(tmp / checkpoint.CONFIG_NAME, meta)
            if not (tmp / checkpoint.METRICS_NAME).is_file():
                files.write_json(tmp / checkpoint.METRICS_NAME, {"selection_fd_cnn": scores[best]["fd"]})
        print(f"installed {src} -> {args.install}")


if __name__ == "__main__":
    script_main(main)
