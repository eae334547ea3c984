"""Throughput of ``classify`` (text -> top-5 ImageNet classes, no generator) with the embedded ``t2i-imagenet``.

Warm: 1,000 prompts (the hand-written dev prompts, cycled) through ``TextClassifier.classify_many`` in batches of 256,
interleaved over R repetitions with the zero-shot baseline on the same prompts (mean-pooled MiniLM, cosine to every
class lemma): median and spread of each, their ratio, the load average before and after. Outputs are checked, not
just timed: every record has 5 classes. Goal: 1,000 prompts warm <= 5 s on 2 cores.

    .venv/bin/python bench/bench_classify.py [--model t2i-imagenet] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import report, summary  # bench/common.py

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="t2i-imagenet")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from modalbridge.t2i import resolver_train as R
    from modalbridge.t2i.classify import load_classifier

    prompts = [r["prompt"] for r in R.read_labelled_prompts(ROOT / "tests/data/imagenet_dev_prompts.tsv")]
    texts = [prompts[i % len(prompts)] for i in range(args.n)]
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    clf = load_classifier(args.model)
    load_s = time.perf_counter() - t
    lemma_texts = [lemma for c in clf.vocab for lemma in c.lemmas]
    lemma_cls = torch.tensor([c.index for c in clf.vocab for _ in c.lemmas])
    protos = R.pooled(clf.encoder, lemma_texts)
    clf.classify_many(texts[:64])  # warm-up

    def ours():
        out = []
        for i in range(0, len(texts), 256):
            out += clf.classify_many(texts[i : i + 256])
        assert len(out) == len(texts) and all(len(r["classes"]) == 5 for r in out)

    def baseline():
        s = R.zero_shot_scores(R.pooled(clf.encoder, texts, batch_size=256), protos, lemma_cls, len(clf.vocab))
        assert s.shape == (len(texts), len(clf.vocab))

    times = {"resolver": [], "zero-shot baseline": []}
    for _ in range(args.repeats):
        for name, fn in (("resolver", ours), ("zero-shot baseline", baseline)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    load1 = os.getloadavg()[0]
    print(f"classify {args.n} prompts, {args.threads} threads, {args.repeats} interleaved repetitions; "
          f"model load {load_s:.2f} s; load average {load0:.2f} -> {load1:.2f}")
    for name, ts in times.items():
        print(f"  {name:20s} median {statistics.median(ts):.2f} s  (min {min(ts):.2f}, max {max(ts):.2f})")
    ratio = statistics.median(times["resolver"]) / statistics.median(times["zero-shot baseline"])
    goal = statistics.median(times["resolver"]) <= 5.0
    print(f"  resolver / baseline time: {ratio:.2f}x; goal 1,000 prompts <= 5 s: {'met' if goal else 'NOT met'}")
    report("classify", model=args.model, prompts=args.n, threads=args.threads, reps=args.repeats, load_s=load_s,
           seconds={k: summary(v) for k, v in times.items()}, ratio=ratio, load_before=load0, load_after=load1)


if __name__ == "__main__":
    main()
