"""Caption-metric speed: 5,000 images x 5 references, COCO-like synthetic captions.

Prints, measured side by side in one run (wall-clock seconds):
  * ``score(meteor=False)`` end to end with the PTB (Java) tokenizer and with the Unicode tokenizer;
  * the two tokenizers alone on the same 30,000 captions, and how often they agree;
  * CIDEr-D: our port vs pycocoevalcap's ``Cider`` on the same tokens (asserted bit-identical);
  * with ``--meteor``: METEOR too (a JVM loading a 60 MB paraphrase table).

    .venv/bin/python bench/bench_metrics.py [--images 5000] [--refs 5] [--meteor]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time

import numpy as np

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
    args = ap.parse_args()
    rng = random.Random(0)
    refs = {str(i): [caption(rng) for _ in range(args.refs)] for i in range(args.images)}
    hyps = {k: caption(rng) for k in refs}
    flat = [c for v in refs.values() for c in v] + list(hyps.values())
    print(f"{args.images} images x {args.refs} refs ({len(flat)} captions)")

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    ptb_scores, t_ptb_total = timed(cap.score, refs, hyps, meteor=False)
    cpu_ptb_total = CPU["score"]
    uni_scores, t_uni_total = timed(cap.score, refs, hyps, meteor=False, tokenizer="unicode")
    cpu_uni_total = CPU["score"]
    ptb_tok, t_ptb = timed(cap.ptb_tokenize, flat)
    uni_tok, t_uni = timed(cap.unicode_tokenize, flat)
    agree = sum(a == b for a, b in zip(ptb_tok, uni_tok, strict=True)) / len(flat)

    from pycocoevalcap.cider.cider import Cider

    n = args.refs * args.images
    gts = {k: ptb_tok[i * args.refs : (i + 1) * args.refs] for i, k in enumerate(refs)}
    res = {k: ptb_tok[n + i] for i, k in enumerate(refs)}
    (c_ours, per_ours), t_cider = timed(cap.cider_d, gts, res)
    (c_ref, per_ref), t_cider_ref = timed(Cider().compute_score, gts, {k: [v] for k, v in res.items()})
    assert c_ours == c_ref and np.array_equal(per_ours, per_ref), "CIDEr port differs from pycocoevalcap"

    print(
        f"score(meteor=False), PTB tokenizer (Java)   : {t_ptb_total:6.2f} s wall, {cpu_ptb_total:6.2f} s CPU   "
        f"{_fmt(ptb_scores)}"
    )
    print(
        f"score(meteor=False), Unicode tokenizer      : {t_uni_total:6.2f} s wall, {cpu_uni_total:6.2f} s CPU   "
        f"{_fmt(uni_scores)}"
    )
    print(
        f"tokenize only: PTB (one JVM call) {t_ptb:6.2f} s | Unicode (Python regex) {t_uni:6.2f} s "
        f"| ratio {t_ptb / t_uni:4.1f}x | identical output on {100 * agree:.1f}% of captions"
    )
    print(
        f"CIDEr-D only: ours {t_cider:6.2f} s | pycocoevalcap {t_cider_ref:6.2f} s "
        f"| ratio {t_cider_ref / t_cider:4.1f}x | identical: yes ({c_ours:.6f})"
    )
    if args.meteor:
        full, t_full = timed(cap.score, refs, hyps, meteor=True)
        print(f"score(meteor=True) end to end              : {t_full:6.2f} s wall   METEOR {full['METEOR']:.4f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def _fmt(s: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in s.items() if isinstance(v, float))


if __name__ == "__main__":
    main()
