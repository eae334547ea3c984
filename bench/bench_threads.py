"""Thread settings on a shared machine: 1 vs 2 threads vs 2 threads with OpenMP passive waiting, quiet and under load.

Two workloads of the command paths, each timed in a fresh process (OpenMP reads its settings at start-up):
``encode`` (the shipped MiniLM encodes 256 prompts, what ``classify --prompts`` does) and ``beam`` (batched beam
search, beam 5, over 32 images with a Show-Attend-Tell-sized decoder, what ``caption`` does for a folder).
Settings: ``OMP_NUM_THREADS`` 1 or 2, and 2 with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep instead of
spinning), and what the CLI does by default (``auto``: see ``modalbridge.threads``). Each is timed quiet and with a
background load that the bench starts and stops itself (one process spinning on one core: "another job on the
machine"). Repetitions interleave every setting, so a change in the machine's load hits all alike; the outputs of
every setting are asserted equal to the 1-thread ones (to 1e-4: thread counts change float summation order).

    .venv/bin/python bench/bench_threads.py [--reps 5] [--workload encode beam]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import loadavg, report, summary  # bench/common.py

CHILD = r"""
import json, sys, time, hashlib
import torch
from modalbridge import threads
threads.configure(None if sys.argv[2] == "auto" else int(sys.argv[2]))
work = sys.argv[1]
if work == "encode":
    from modalbridge.text import load_text_encoder
    enc = load_text_encoder("minilm")
    words = ["a red dress", "two boots", "a cat"] * 86
    texts = [f"a photo of {w} number {i} on a table" for i, w in enumerate(words)][:256]
    enc.encode(texts[:16])
    t0 = time.perf_counter()
    out = enc.encode(texts).hidden
    dt = time.perf_counter() - t0
    summary = out.sum(dim=(1, 2))
else:
    sys.path.insert(0, "bench")
    from bench_beam import build, BOS, EOS
    from modalbridge.captioning.decoding import beam_search
    dec = build()
    memory = torch.randn(32, 49, 512, generator=torch.Generator().manual_seed(1))
    beam_search(dec, memory[:2], BOS, EOS, beam_size=5, max_len=20)
    t0 = time.perf_counter()
    out = beam_search(dec, memory, BOS, EOS, beam_size=5, max_len=20)
    dt = time.perf_counter() - t0
    summary = torch.tensor(out.logprob)
print(json.dumps({"seconds": dt, "threads": torch.get_num_threads(), "summary": summary.tolist()}))
"""

SETTINGS = {  # name -> (threads argument, extra environment)
    "1 thread": ("1", {}),
    "2 threads": ("2", {}),
    "2 passive": ("2", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 spin 10k": ("2", {"GOMP_SPINCOUNT": "10000"}),
    "auto": ("auto", {}),
}


def child(work: str, setting: str) -> dict:
    arg, extra = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(extra)
    p = subprocess.run([sys.executable, "-c", CHILD, work, arg], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{work}/{setting} failed: {p.stderr.strip()[-1500:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workload", nargs="+", default=["encode", "beam"], choices=["encode", "beam"])
    args = ap.parse_args()
    before = loadavg()
    print(f"cpus={os.cpu_count()} reps={args.reps}; load average at start: {before}")
    summaries = {}
    for work in args.workload:
        results: dict[tuple[str, str], list[float]] = {}
        ref = child(work, "1 thread")["summary"]
        for _ in range(args.reps):
            for loaded in (False, True):
                hog = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None)
                try:
                    if hog:
                        time.sleep(0.3)
                    for setting in SETTINGS:
                        r = child(work, setting)
                        diff = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(r["summary"], ref, strict=True))
                        assert diff < 1e-4, f"{work}/{setting}: output differs from 1 thread by {diff:.2e}"
                        results.setdefault((setting, "loaded" if loaded else "quiet"), []).append(r["seconds"])
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
        print(f"\n{work}: seconds, median (min..max) of {args.reps}; outputs equal to 1 thread's within 1e-4")
        print(f"{'setting':12s} {'quiet':>22s} {'one busy core':>22s} {'slowdown':>9s}")
        for setting in SETTINGS:
            q, lo = results[(setting, "quiet")], results[(setting, "loaded")]
            print(f"{setting:12s} {statistics.median(q):9.3f} ({min(q):.3f}..{max(q):.3f}) "
                  f"{statistics.median(lo):9.3f} ({min(lo):.3f}..{max(lo):.3f}) "
                  f"{statistics.median(lo) / statistics.median(q):8.2f}x")
        summaries[work] = {f"{k[0]}, {k[1]}": summary(v) for k, v in results.items()}
    after = loadavg()
    print(f"\nload average at end: {after}")
    report("threads", reps=args.reps, seconds=summaries, load_before=before, load_after=after)


if __name__ == "__main__":
    main()
