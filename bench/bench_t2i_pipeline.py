"""Warm ``draw`` latency of the default pipeline (MiniLM + t2i-fashion mapper + gan-fashion generator), quiet and
beside another job.

A warm pipeline (as in ``serve``) draws 4 images for a prompt R times with the machine quiet, then R times while a
background process that the bench starts and stops itself keeps one core busy. Threads are what ``serve`` uses: the
free cores, re-counted before every call (``modalbridge.threads.adapt``, its cost included); ``--threads N`` fixes
them instead. Prints median and p90 of each phase (goal: p90 <= 50 ms beside one busy job) with the time split into
encoder, mapper and generator, the load average before and after, and asserts that the images of a prompt are the
same in both phases (to one 8-bit step: the thread count changes float summation order).

    .venv/bin/python bench/bench_t2i_pipeline.py [--model t2i-fashion] [--repeats 40] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from common import background_load, loadavg, report, summary  # bench/common.py

TEXTS = ["a red dress", "a photo of an ankle boot", "two handbags on a table", "a man wearing a warm coat"]


def p90(xs: list[float]) -> float:
    ys = sorted(xs)
    return ys[int(0.9 * (len(ys) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="mapper model (default: embedded t2i-fashion)")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None, help="fixed threads (default: free cores, per call)")
    args = ap.parse_args()
    from modalbridge import threads
    from modalbridge.generators.biggan import truncated_noise
    from modalbridge.t2i.pipeline import load_drawer

    threads.configure(args.threads)
    t0 = time.perf_counter()
    pipe = load_drawer(args.model)
    load_s = time.perf_counter() - t0
    for t in TEXTS:
        pipe.draw(t, n=4, seed=0, split_objects=False)  # warm-up

    def phase() -> tuple[list[float], dict[str, list[float]], dict[str, torch.Tensor], list[int]]:
        totals, parts, images, used = [], {"encoder": [], "mapper": [], "generator": []}, {}, []
        for r in range(args.repeats):
            text = TEXTS[r % len(TEXTS)]
            t = time.perf_counter()
            used.append(threads.adapt())
            d = pipe.draw(text, n=4, seed=r % len(TEXTS), split_objects=False)
            totals.append(time.perf_counter() - t)
            images.setdefault(text, torch.stack([torch.tensor(np.asarray(im), dtype=torch.float32) for im in d.images]))
            with torch.no_grad():  # the same work again, stage by stage
                a = time.perf_counter()
                enc = pipe.encoder.encode([text])
                b = time.perf_counter()
                out = pipe.classifier.model(enc.hidden, enc.mask)
                c = time.perf_counter()
                z = truncated_noise(4, pipe.z_dim, 0.5, r)
                pipe.generator(z, out.embedding.expand(4, -1), 0.5)
                e = time.perf_counter()
            parts["encoder"].append(b - a)
            parts["mapper"].append(c - b)
            parts["generator"].append(e - c)
        return totals, parts, images, used

    before = loadavg()
    quiet = phase()
    with background_load(1):
        busy = phase()
    after = loadavg()
    diff = max((quiet[2][t].float() - busy[2][t].float()).abs().max().item() for t in quiet[2])
    assert diff <= 1, f"images differ between phases by {diff} (of 255)"  # one 8-bit step of rounding at most
    print(f"default pipeline ({pipe.source}), load {load_s:.2f} s in this process, {args.repeats} draws of 4 images "
          f"per phase; load average before {before}, after {after}")
    res = {}
    for name, (totals, parts, _, used) in (("quiet", quiet), ("one busy core", busy)):
        ms = [1000 * x for x in totals]
        print(f"  {name:14s} median {statistics.median(ms):6.1f} ms  p90 {p90(ms):6.1f} ms  max {max(ms):6.1f} ms  "
              f"threads {sorted(set(used))};  " + ", ".join(f"{k} {1000 * statistics.median(v):.1f}"
                                                             for k, v in parts.items()) + " ms")
        res[name] = {"ms": summary(ms), "p90_ms": p90(ms), "threads": sorted(set(used)),
                     "parts_ms": {k: 1000 * statistics.median(v) for k, v in parts.items()}}
    goal = res["one busy core"]["p90_ms"] <= 50
    print(f"  goal p90 <= 50 ms beside one busy job: {'met' if goal else 'NOT met'}; same images in both phases "
          f"(max difference {diff:.2g})")
    report("t2i_pipeline", repeats=args.repeats, load_s=load_s, phases=res, load_before=before, load_after=after)


if __name__ == "__main__":
    main()
