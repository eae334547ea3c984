"""Speed of text-feature extraction, and of the whole prepare -> extract -> train path at scale.

Part 1 (always): MiniLM states of M sentences, batched + length-sorted vs one at a time (and batched unsorted),
interleaved over R repetitions; asserts every run gives the same states (to 1e-4) and prints sentences/s (median and
spread), the ratios and the load average before and after.
Part 2 (``--scale N``, N > 0): ``prepare`` N Fashion sentences, ``extract`` them with MiniLM, ``train`` the default
mapper config (configs/t2i/fashion_minilm.yaml) on them; prints wall and process-CPU seconds per stage and
the total against the goal "under 10 minutes on 2 cores". Process CPU time (all threads) is the fairer number on a
shared machine: wall time there includes waiting for other people's processes.

    .venv/bin/python bench/bench_extract.py [--sentences 1000] [--reps 5] [--scale 100000] [--epochs 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import interleave, loadavg, report, speedups, spread, summary  # bench/common.py

ROOT = Path(__file__).resolve().parents[1]


def clock(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def part1(n: int, batch_size: int, reps: int) -> dict:
    from modalbridge.t2i import sentences, vocabularies
    from modalbridge.text import load_text_encoder

    tmp = Path(tempfile.mkdtemp(prefix="mb-bench-extract-"))
    sentences.prepare(vocabularies.fashion(), tmp / "s", n=n, seed=1)
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

    before = loadavg()
    times, outs = interleave({"one at a time": one_at_a_time, "batched, unsorted": lambda: batched(False),
                              "batched + sorted": lambda: batched(True)}, reps)
    after = loadavg()
    ref = outs["one at a time"][0]
    diff = max(float((a[: len(b)] - b).abs().max()) for side in outs.values() for run in side
               for a, b in zip(ref, run, strict=True))
    assert diff < 1e-4 and all(len(a) == len(b) for run in outs["batched + sorted"]
                               for a, b in zip(ref, run, strict=True)), diff
    rate = {k: [len(texts) / t for t in ts] for k, ts in times.items()}
    ratio = speedups(times["one at a time"], times["batched + sorted"])
    ratio_sort = speedups(times["batched, unsorted"], times["batched + sorted"])
    print(f"part 1: {len(texts)} Fashion sentences, MiniLM, torch threads {torch.get_num_threads()}, {reps} "
          f"interleaved repetitions; load average before {before}, after {after}")
    for k, v in rate.items():
        print(f"  {k:18s} {spread(v, fmt='.1f')} sentences/s")
    print(f"  ratio sorted/one-at-a-time {spread(ratio, fmt='.1f')}x; sorted/unsorted {spread(ratio_sort, fmt='.2f')}x")
    print(f"  same states in every run: max |diff| = {diff:.2e} (asserted < 1e-4)")
    shutil.rmtree(tmp, ignore_errors=True)
    return {"sentences": len(texts), "reps": reps, "rate": {k: summary(v) for k, v in rate.items()},
            "ratio": summary(ratio), "ratio_sorted_unsorted": summary(ratio_sort), "max_diff": diff,
            "load_before": before, "load_after": after}


def generator_spec(tmp: Path) -> str:
    from modalbridge import assets

    if assets.embedded("gan-fashion") is not None:
        return "gan-fashion"
    from modalbridge import checkpoint
    from modalbridge.generators.biggan import BigGAN, BigGANConfig

    print("  (gan-fashion not shipped: a random-init 10-class generator gives the targets)")
    checkpoint.save(BigGAN(BigGANConfig.small(resolution=32, num_classes=10, out_channels=3)), tmp / "gen")
    return str(tmp / "gen")


def part2(n: int, epochs: int, batch_size: int) -> dict:
    from modalbridge.registry import load_builtins
    from modalbridge.t2i import features, sentences, vocabularies
    from modalbridge.training import engine

    load_builtins()
    tmp = Path(tempfile.mkdtemp(prefix="mb-bench-scale-"))
    gen = generator_spec(tmp)
    print(f"part 2: {n} sentences, prepare -> extract (MiniLM) -> train ({epochs} epoch(s)), "
          f"torch threads {torch.get_num_threads()}")
    stages = {}
    _, *stages["prepare"] = clock(lambda: sentences.prepare(vocabularies.fashion(), tmp / "s", n=n, seed=0))
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
    return {"sentences": n_real, "epochs": epochs, "wall_s": wall, "cpu_s": cpu,
            "stages_wall_s": {k: w for k, (w, _) in stages.items()},
            "top1": {k: m[f"final/{k}/top1"] for k in ("test_template", "test_synonym")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=1000, help="part 1 size")
    ap.add_argument("--reps", type=int, default=5, help="part 1 interleaved repetitions")
    ap.add_argument("--scale", type=int, default=100_000, help="part 2 size (0: skip)")
    ap.add_argument("--epochs", type=int, default=1, help="part 2 training epochs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    one = part1(args.sentences, args.batch_size, args.reps)
    scale = part2(args.scale, args.epochs, args.batch_size) if args.scale > 0 else None
    report("extract", threads=torch.get_num_threads(), part1=one, part2=scale)


if __name__ == "__main__":
    main()
