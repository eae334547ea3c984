"""Shared bench helpers: interleaved repetitions, median and spread, load average, a background load, result lines.

Every bench prints a last line ``RESULT {json}`` with its key figures; ``bench/run_all.py`` (``make bench``)
collects them into docs/results/bench.json and regenerates the table in docs/benchmarks.md from that file.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def spread(xs: list[float], scale: float = 1.0, fmt: str = ".3f") -> str:
    """``median (min..max)`` of ``xs`` times ``scale``."""
    ys = [x * scale for x in xs]
    return f"{statistics.median(ys):{fmt}} ({min(ys):{fmt}}..{max(ys):{fmt}})"


def speedups(num: list[float], den: list[float]) -> list[float]:
    """Per-repetition ratios of two interleaved sides' times (the speed-up of ``den`` over ``num``)."""
    return [a / b for a, b in zip(num, den, strict=True)]


def summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def interleave(sides: dict[str, Callable[[], object]], reps: int) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Run every side once per repetition, in an order that rotates each repetition (so a change in the machine's
    load hits all sides alike). Returns wall seconds and outputs per side."""
    names = list(sides)
    times: dict[str, list[float]] = {k: [] for k in names}
    outs: dict[str, list] = {k: [] for k in names}
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            out = sides[k]()
            times[k].append(time.perf_counter() - t0)
            outs[k].append(out)
    return times, outs


@contextlib.contextmanager
def background_load(busy_cores: int = 1) -> Iterator[None]:
    """``busy_cores`` processes spinning for the duration ("another job on the machine"), stopped afterwards."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy_cores)]
    try:
        time.sleep(0.3)
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def report(bench: str, **figures) -> None:
    """The machine-readable last line of a bench."""
    print("RESULT " + json.dumps({"bench": bench, **figures}, sort_keys=True))
