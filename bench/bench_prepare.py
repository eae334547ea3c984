"""Speed of ``modalbridge prepare`` for the ImageNet-1k vocabulary: WordNet load, vocabulary build, N sentences.

Prints wall and process CPU seconds of each stage (CPU time is the fairer number on a shared machine), the
sentences per CPU second, and the share of the budget "100k sentences well under a minute" that the whole run used.

    .venv/bin/python bench/bench_prepare.py [--n 100000] [--vocab imagenet1k] [--out /tmp/mb-bench-prepare]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import report  # bench/common.py


def stage(name: str, fn, clock: dict):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    clock[name] = (time.perf_counter() - w, time.process_time() - c)
    print(f"{name:<12} wall {clock[name][0]:6.2f} s   cpu {clock[name][1]:6.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--vocab", default="imagenet1k")
    ap.add_argument("--out", default="/tmp/mb-bench-prepare")
    args = ap.parse_args()
    clock: dict[str, tuple[float, float]] = {}
    from modalbridge.t2i import sentences, vocabularies, wordnet

    stage("wordnet", wordnet.reader, clock)
    vocab = stage("vocabulary", lambda: vocabularies.resolve(args.vocab), clock)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    meta = stage("sentences", lambda: sentences.prepare(vocab, out, n=args.n, seed=0), clock)
    total_wall = sum(w for w, _ in clock.values())
    total_cpu = sum(c for _, c in clock.values())
    print(f"{meta['n_total']} sentences, {meta['n_total'] / clock['sentences'][1]:.0f} per cpu second; "
          f"sentences.jsonl {(out / 'sentences.jsonl').stat().st_size / 1e6:.1f} MB")
    print(f"total        wall {total_wall:6.2f} s   cpu {total_cpu:6.2f} s   ({total_cpu / 60:.0%} of one minute, cpu)")
    report("prepare", sentences=meta["n_total"], vocab=args.vocab, wall_s=total_wall, cpu_s=total_cpu,
           stages_wall_s={k: w for k, (w, _) in clock.items()})


if __name__ == "__main__":
    main()
