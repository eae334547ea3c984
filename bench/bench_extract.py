"""Speed of text-feature extraction, and of the whole prepare -> extract -> train path at scale.

Part 1 (always): MiniLM states of M sentences, batched + length-sorted vs one at a time, side by side in one run;
checks both give the same states (max abs difference) and prints sentences/s and the ratio (also batched unsorted).
Part 2 (``--scale N``, N > 0): ``prepare`` N Fashion sentences, ``extract`` them with MiniLM, ``train`` the default
mapper config (configs/t2i/fashion_minilm.yaml) on them; prints wall and process-CPU seconds per stage and
the total against the goal "under 10 minutes on 2 cores". Process CPU time (all threads) is the fairer number on a
shared machine: wall time there includes waiting for other people's processes.

    .venv/bin/python bench/bench_extract.py [--sentences 1000] [--scale 100000] [--epochs 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def clock(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def part1(n: int, batch_size: int) -> None:
    from modalbridge.t2i import sentences, vocabulary
    from modalbridge.text import load_text_encoder

    tmp = Path(tempfile.mkdtemp(prefix="mb-bench-extract-"))
    sentences.prepare(vocabulary.fashion(), tmp / "s", n=n, seed=1)
    texts = [r["text"] for r in sentences.load_sentences(tmp / "s")][:n]
    enc = load_text_encoder("minilm")
    enc.encode(texts[:8])  # warm-up

    def one_at_a_time():
        return [enc.encode([t], sort=False).hidden[0] for t in texts]

    def batched(sort: bool):
        out = [None] * len(texts)
        for idx, states in enc.iter_states(texts, batch_size=batch_size, sort=sort):
            for i, s in zip(idx, states, strict=True):
                out[i] = s
        return out

    single, w1, c1 = clock(one_at_a_time)
    fast, w2, c2 = clock(lambda: batched(True))
    unsorted, w3, c3 = clock(lambda: batched(False))
    diff = max(float((a[: len(b)] - b).abs().max()) for a, b in zip(single, fast, strict=True))
    same_len = all(len(b) <= len(a) for a, b in zip(single, fast, strict=True))
    print(f"part 1: {len(texts)} Fashion sentences, MiniLM, torch threads {torch.get_num_threads()}")
    print(f"  one at a time      {len(texts) / w1:8.1f} sentences/s wall  ({len(texts) / c1:8.1f} per CPU s)")
    print(f"  batched, unsorted  {len(texts) / w3:8.1f} sentences/s wall  ({len(texts) / c3:8.1f} per CPU s)")
    print(f"  batched + sorted   {len(texts) / w2:8.1f} sentences/s wall  ({len(texts) / c2:8.1f} per CPU s)")
    print(f"  ratio sorted/one-at-a-time: {w1 / w2:.1f}x wall, {c1 / c2:.1f}x CPU; "
          f"sorted/unsorted: {w3 / w2:.2f}x wall")
    print(f"  same outputs: max |diff| = {diff:.2e} (lengths equal: {same_len})")
    shutil.rmtree(tmp, ignore_errors=True)


def generator_spec(tmp: Path) -> str:
    from modalbridge import assets

    if assets.embedded("gan-fashion") is not None:
        return "gan-fashion"
    from modalbridge import checkpoint
    from modalbridge.generators.biggan import BigGAN, BigGANConfig

    print("  (gan-fashion not shipped: a random-init 10-class generator gives the targets)")
    checkpoint.save(BigGAN(BigGANConfig.small(resolution=32, num_classes=10, out_channels=3)), tmp / "gen")
    return str(tmp / "gen")


def part2(n: int, epochs: int, batch_size: int) -> None:
    from modalbridge.registry import load_builtins
    from modalbridge.t2i import features, sentences, vocabulary
    from modalbridge.training import engine

    load_builtins()
    tmp = Path(tempfile.mkdtemp(prefix="mb-bench-scale-"))
    gen = generator_spec(tmp)
    print(f"part 2: {n} sentences, prepare -> extract (MiniLM) -> train ({epochs} epoch(s)), "
          f"torch threads {torch.get_num_threads()}")
    stages = {}
    _, *stages["prepare"] = clock(lambda: sentences.prepare(vocabulary.fashion(), tmp / "s", n=n, seed=0))
    _, *stages["extract"] = clock(lambda: features.extract(tmp / "s", "minilm", batch_size=batch_size))
    cfg = engine.resolve_config(ROOT / "configs/t2i/fashion_minilm.yaml", [
        f"data.sentences={tmp / 's'}", f"data.generator={gen}", f"trainer.max_epochs={epochs}",
        f"run_root={tmp / 'runs'}", "logger.backends=[csv]",
    ])
    run, *stages["train"] = clock(lambda: engine.train(cfg))
    for name, (w, c) in stages.items():
        print(f"  {name:<8} wall {w:8.1f} s   cpu {c:8.1f} s")
    wall, cpu = sum(w for w, _ in stages.values()), sum(c for _, c in stages.values())
    n_real = len(sentences.load_sentences(tmp / "s"))
    import json

    m = json.loads((run / "model" / "metrics.json").read_text())
    print(f"  total    wall {wall:8.1f} s   cpu {cpu:8.1f} s   ({n_real} sentences; goal < 600 s on 2 cores: "
          f"{'met' if wall < 600 else 'missed'} by wall, cpu/2 = {cpu / 2:.0f} s)")
    print(f"  held-out top1: test_template {m['final/test_template/top1']:.4f}, "
          f"test_synonym {m['final/test_synonym/top1']:.4f}")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=1000, help="part 1 size")
    ap.add_argument("--scale", type=int, default=100_000, help="part 2 size (0: skip)")
    ap.add_argument("--epochs", type=int, default=1, help="part 2 training epochs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    part1(args.sentences, args.batch_size)
    if args.scale > 0:
        part2(args.scale, args.epochs, args.batch_size)


if __name__ == "__main__":
    main()
