"""Caption-metric speed: 5,000 images x 5 references, COCO-like synthetic captions.

Prints, interleaved over R repetitions (wall seconds, median and spread; load average before and after):
  * ``score(meteor=False)`` end to end with the PTB (Java) tokenizer and with the Unicode tokenizer;
  * CIDEr-D: our port vs pycocoevalcap's ``Cider`` on the same tokens (asserted bit-identical, every repetition);
then, once: the two tokenizers alone on the same 30,000 captions and how often they agree, and with ``--meteor``
METEOR too (a JVM loading a 60 MB paraphrase table).

    .venv/bin/python bench/bench_metrics.py [--images 5000] [--refs 5] [--reps 5] [--meteor]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time

import numpy as np
from common import interleave, loadavg, report, speedups, spread, summary  # bench/common.py

from modalbridge.metrics import caption as cap

SUBJECTS = [
    "A man",
    "A woman",
    "Two dogs",
    "A young boy",
    "A group of people",
    "A cat",
    "The girl",
    "An elderly man",
    "Several kids",
    "A brown horse",
    "A skateboarder",
    "Three zebras",
    "A little girl's dog",
    "A chef",
]
VERBS = [
    "is riding",
    "sitting on",
    "standing next to",
    "holding",
    "walking down",
    "looking at",
    "playing with",
    "eating",
    "jumping over",
    "lying on",
    "carrying",
    "cutting",
]
OBJECTS = [
    "a red bike",
    "a wooden bench",
    "the street",
    "a frisbee",
    "a large pizza",
    "a white cake",
    "the beach",
    "a computer monitor",
    "a kite",
    "an umbrella",
    "a T-shirt",
    "two surfboards",
    "a plate of food",
]
PLACES = [
    "in a park",
    "on a sunny day",
    "near the ocean",
    "in the kitchen",
    "at night",
    "in front of a building",
    "",
    "",
    "on a dirt road",
    "next to a tree",
]
ENDS = [".", "", " .", "!", "..."]


def caption(rng: random.Random) -> str:
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(PLACES)]
    text = " ".join(p for p in parts if p)
    if rng.random() < 0.2:
        text = text.replace(" a ", " a very ", 1)
    if rng.random() < 0.1:
        text += ", smiling"
    return text + rng.choice(ENDS)


def cpu_seconds() -> float:
    """User+system CPU of this process and its finished children (the Java tokenizer)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


CPU: dict[str, float] = {}


def timed(fn, *args, **kwargs):
    """Wall seconds of one call; its CPU seconds go to CPU[fn name] (less sensitive to other jobs' load)."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn(*args, **kwargs)
    CPU[getattr(fn, "__name__", "?")] = cpu_seconds() - c0
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--meteor", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(0)
    refs = {str(i): [caption(rng) for _ in range(args.refs)] for i in range(args.images)}
    hyps = {k: caption(rng) for k in refs}
    flat = [c for v in refs.values() for c in v] + list(hyps.values())
    print(f"{args.images} images x {args.refs} refs ({len(flat)} captions)")

    from pycocoevalcap.cider.cider import Cider

    before = loadavg()
    # Pair 1: score() end to end with either tokenizer; pair 2: CIDEr-D, our port vs pycocoevalcap, on PTB tokens.
    ptb_tok = cap.ptb_tokenize(flat)
    n = args.refs * args.images
    gts = {k: ptb_tok[i * args.refs : (i + 1) * args.refs] for i, k in enumerate(refs)}
    res = {k: ptb_tok[n + i] for i, k in enumerate(refs)}
    times, outs = interleave({
        "score, PTB tokenizer": lambda: cap.score(refs, hyps, meteor=False),
        "score, Unicode tokenizer": lambda: cap.score(refs, hyps, meteor=False, tokenizer="unicode"),
        "CIDEr-D ours": lambda: cap.cider_d(gts, res),
        "CIDEr-D pycocoevalcap": lambda: Cider().compute_score(gts, {k: [v] for k, v in res.items()}),
    }, args.reps)
    for k, runs in outs.items():  # every repetition gives the same scores
        assert all(_same(r, runs[0]) for r in runs), f"{k}: scores changed between repetitions"
    (c_ours, per_ours), (c_ref, per_ref) = outs["CIDEr-D ours"][0], outs["CIDEr-D pycocoevalcap"][0]
    assert c_ours == c_ref and np.array_equal(per_ours, per_ref), "CIDEr port differs from pycocoevalcap"
    ptb_tok, t_ptb = timed(cap.ptb_tokenize, flat)
    uni_tok, t_uni = timed(cap.unicode_tokenize, flat)
    agree = sum(a == b for a, b in zip(ptb_tok, uni_tok, strict=True)) / len(flat)
    after = loadavg()
    print(f"{args.reps} interleaved repetitions, {os.cpu_count()} CPUs; load average before {before}, after {after}")
    for k, ts in times.items():
        extra = _fmt(outs[k][0]) if k.startswith("score") else ""
        print(f"  {k:26s} {spread(ts, fmt='.2f')} s  {extra}")
    cider_ratio = speedups(times["CIDEr-D pycocoevalcap"], times["CIDEr-D ours"])
    print(f"  CIDEr-D port / pycocoevalcap speed {spread(cider_ratio, fmt='.1f')}x; identical ({c_ours:.6f})")
    print(f"  tokenize only (once): PTB (one JVM call) {t_ptb:.2f} s | Unicode (Python regex) {t_uni:.2f} s "
          f"| identical output on {100 * agree:.1f}% of captions")
    t_full = None
    if args.meteor:
        full, t_full = timed(cap.score, refs, hyps, meteor=True)
        print(f"  score(meteor=True) end to end (once): {t_full:.2f} s   METEOR {full['METEOR']:.4f}")
    report("metrics", images=args.images, refs=args.refs, reps=args.reps,
           seconds={k: summary(v) for k, v in times.items()}, cider_ratio=summary(cider_ratio),
           tokenizer_agreement=agree, meteor_s=t_full, load_before=before, load_after=after)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def _fmt(s: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in s.items() if isinstance(v, float))


if __name__ == "__main__":
    main()
