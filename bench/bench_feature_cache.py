"""One training epoch of Show, Attend and Tell on cached image features vs encoding the images on the fly.

Both runs train the same decoder (default paper-sized dims: E = H = A = 512) on the same (image, caption) pairs
(5 captions per image, as in COCO) in the same order with the frozen EfficientNet-Lite0 encoder; the on-the-fly run
reads, decodes, preprocesses and encodes every image of every batch, the cached run indexes a feature tensor built
once by ``captioning.features.extract`` (its one-time cost is printed too). The two epochs are interleaved over R
repetitions (median and spread, load average before and after) and their per-step losses asserted equal.
Goal: cached >= 20x faster.

    python bench/bench_feature_cache.py [--images 64] [--batch 32] [--reps 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import interleave, loadavg, report, speedups, spread, summary  # bench/common.py
from PIL import Image

from modalbridge.captioning import features
from modalbridge.captioning.pairs import PairSet, make_collate
from modalbridge.captioning.sat import SATConfig, ShowAttendTell
from modalbridge.captioning.vocab import Vocab
from modalbridge.vision.encoders import build_encoder

COLOURS = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 200, 30)}
SHAPES = ["square", "disc", "stripe"]


def make_images(root: Path, n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """n 320x240 JPEGs of a coloured shape on noise, and 5 captions each."""
    rng = np.random.default_rng(seed)
    paths, caps = [], []
    for i in range(n):
        colour, shape = random.Random(i).choice(list(COLOURS)), random.Random(-i).choice(SHAPES)
        arr = rng.integers(0, 80, (240, 320, 3), dtype=np.uint8)
        yy, xx = np.mgrid[:240, :320]
        mask = {"square": (abs(yy - 120) < 60) & (abs(xx - 160) < 60),
                "disc": (yy - 120) ** 2 + (xx - 160) ** 2 < 70**2,
                "stripe": abs(xx - 160) < 25}[shape]
        arr[mask] = COLOURS[colour]
        path = root / f"{i:04d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(str(path))
        caps.append([f"a {colour} {shape} on a dark background", f"one {shape} that is {colour}",
                     f"a picture of a {colour} {shape}", f"the {shape} in the middle is {colour}",
                     f"{colour} {shape}"])
    return paths, caps


def _encoder_spec(name: str, tmp: Path) -> str:
    if name != "resnet-101":
        return name
    from transformers import ResNetConfig, ResNetModel

    # microsoft/resnet-101's architecture (bottleneck, depths 3-4-23-3); the timing does not depend on the weights.
    cfg = ResNetConfig(depths=[3, 4, 23, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck")
    model = ResNetModel(cfg)
    with torch.no_grad():  # zero-init residuals (Goyal et al. 2017): 33 random blocks in a row would overflow to NaN
        for name, module in model.named_modules():
            if name.endswith("layer.2.normalization"):  # the last BatchNorm of each bottleneck's residual branch
                module.weight.zero_()
    model.save_pretrained(tmp / "resnet-101")
    return str(tmp / "resnet-101")


def train_epoch(model, opt, loader, encode=None) -> list[float]:
    """One epoch; ``encode`` maps a batch of image rows to grid features when encoding on the fly. Returns the
    losses of every step."""
    model.train()
    losses = []
    for feats, input_ids, targets in loader:
        if encode is not None:
            feats = encode(feats)
        opt.zero_grad(set_to_none=True)
        loss = model(feats, input_ids, targets).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions of the two epochs")
    ap.add_argument("--encoder", default="efficientnet-lite0",
                    help="efficientnet-lite0 (offline default), resnet-101 (sat_coco's architecture with random "
                         "weights: same cost, no download), or any encoder name/path")
    args = ap.parse_args()
    torch.manual_seed(0)
    from modalbridge.vision.io import load_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        paths, caps = make_images(tmp / "images", args.images)
        vocab = Vocab.build([c for cs in caps for c in cs], min_freq=1)
        pairs = [(i, vocab.encode(c)) for i, cs in enumerate(caps) for c in cs]
        encoder = build_encoder(_encoder_spec(args.encoder, tmp)).to(args.device)

        t0 = time.perf_counter()
        cache = features.extract(encoder, paths, tmp / "cache", batch_size=args.batch, device=args.device,
                                 progress=False)
        t_extract = time.perf_counter() - t0
        t0 = time.perf_counter()
        cache = features.extract(encoder, paths, tmp / "cache", batch_size=args.batch, device=args.device,
                                 progress=False)
        t_reload = time.perf_counter() - t0

        cfg = SATConfig(vocab_size=len(vocab), feature_dim=encoder.dim, num_positions=encoder.num_positions)
        collate = make_collate(vocab.pad_id)

        def run(on_the_fly: bool) -> list[float]:
            torch.manual_seed(0)
            model = ShowAttendTell(cfg).to(args.device)
            opt = torch.optim.Adam(model.parameters(), lr=4e-4)
            g = torch.Generator().manual_seed(0)
            if on_the_fly:
                rows = torch.arange(len(paths)).float()[:, None]  # the "features" are image indices

                def encode(idx):
                    imgs = [load_image(paths[int(i)]) for i in idx[:, 0]]
                    return encoder.encode(imgs).grid.float()

                data = PairSet(rows, pairs)
            else:
                encode, data = None, PairSet(cache.grid, pairs)
            loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, generator=g,
                                                 collate_fn=collate)
            if args.device != "cpu":
                loader = [(f.to(args.device), i.to(args.device), t.to(args.device)) for f, i, t in loader]
            return train_epoch(model, opt, loader, encode)

        run(False)  # warm-up (allocator, kernels)
        before = loadavg()
        times, losses = interleave({"cached": lambda: run(False), "on the fly": lambda: run(True)}, args.reps)
        after = loadavg()
    # Same decoder, same batches, same features (the cache holds what the encoder returns): the same losses.
    diff = max(abs(a - b) / max(abs(b), 1e-6) for x, y in zip(losses["cached"], losses["on the fly"], strict=True)
               for a, b in zip(x, y, strict=True))
    assert diff < 1e-3, f"cached and on-the-fly losses differ by {diff:.2e} (relative)"
    n_pairs = len(pairs)
    ratio = speedups(times["on the fly"], times["cached"])
    print(f"encoder {args.encoder}, images {args.images}, pairs {n_pairs}, batch {args.batch}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, {args.reps} interleaved repetitions; "
          f"load average before {before}, after {after}")
    print(f"feature extraction (once): {t_extract:.2f} s; reloading the cache: {t_reload * 1000:.0f} ms")
    print(f"epoch on cached features : {spread(times['cached'], fmt='.2f')} s")
    print(f"epoch encoding on the fly: {spread(times['on the fly'], fmt='.2f')} s")
    print(f"speed-up: {spread(ratio, fmt='.1f')}x (goal >= 20x); losses of every step equal within {diff:.1e} "
          "(relative, asserted < 1e-3)")
    report("feature_cache", encoder=args.encoder, images=args.images, pairs=n_pairs, reps=args.reps,
           threads=torch.get_num_threads(), cached_s=summary(times["cached"]),
           on_the_fly_s=summary(times["on the fly"]), ratio=summary(ratio), extract_s=t_extract,
           reload_s=t_reload, loss_rel_diff=diff, load_before=before, load_after=after)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
