"""Latency of ``draw`` with the default pipeline (MiniLM + t2i-fashion mapper + gan-fashion generator).

Cold start: a fresh Python process that imports modalbridge, loads the pipeline and draws 4 images (wall seconds,
measured from outside the process, so interpreter and torch import are included). Warm: median and p90 of
``Pipeline.draw(text, n=4)`` over R repeats in this process, with the time split into encoder, mapper and generator.
Goal: warm 4 images <= 100 ms on 2 cores.

    .venv/bin/python bench/bench_t2i_pipeline.py [--model t2i-fashion] [--repeats 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

TEXTS = ["a red dress", "a photo of an ankle boot", "two handbags on a table", "a man wearing a warm coat"]


def cold_start(model: str | None, threads: int) -> float:
    code = (
        f"import torch; torch.set_num_threads({threads})\n"
        "from modalbridge.t2i.pipeline import load_pipeline\n"
        f"load_pipeline({model!r}).draw('a red dress', n=4)\n"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="mapper model (default: embedded t2i-fashion)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from modalbridge.generators.biggan import truncated_noise
    from modalbridge.t2i.pipeline import load_pipeline

    cold = cold_start(args.model, args.threads)
    t0 = time.perf_counter()
    pipe = load_pipeline(args.model)
    load_s = time.perf_counter() - t0
    pipe.draw("warm up", n=4)
    totals, parts = [], {"encoder": [], "mapper": [], "generator": []}
    for r in range(args.repeats):
        text = TEXTS[r % len(TEXTS)]
        t = time.perf_counter()
        pipe.draw(text, n=4, seed=r, split_objects=False)
        totals.append(time.perf_counter() - t)
        with torch.no_grad():
            a = time.perf_counter()
            enc = pipe.encoder.encode([text])
            b = time.perf_counter()
            out = pipe.classifier.model(enc.hidden, enc.mask)
            c = time.perf_counter()
            z = truncated_noise(4, pipe.z_dim, 0.5, r)
            pipe.generator(z, out.embedding.expand(4, -1), 0.5)
            d = time.perf_counter()
        parts["encoder"].append(b - a)
        parts["mapper"].append(c - b)
        parts["generator"].append(d - c)
    ms = sorted(1000 * x for x in totals)
    print(f"default pipeline ({pipe.source}), torch threads {torch.get_num_threads()}")
    print(f"cold start (new process: import + load + draw 4): {cold:.2f} s;  load in a warm process: {load_s:.2f} s")
    print(f"warm draw, 4 images: median {statistics.median(ms):.1f} ms, p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms, "
          f"min {ms[0]:.1f} ms over {len(ms)} runs (goal <= 100 ms)")
    print("  split: " + ", ".join(f"{k} {1000 * statistics.median(v):.1f} ms" for k, v in parts.items()))


if __name__ == "__main__":
    main()
