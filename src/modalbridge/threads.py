"""How many threads PyTorch's CPU work uses: by default, the cores that other processes leave free right now.

Why (bench/bench_threads.py, 2 cores, 5 interleaved runs): with another job busy on one core, 2 threads encoded
prompts 2-3.5x slower than when quiet and about 2x slower than 1 thread, because OpenMP's threads spin at every
barrier waiting for the one that lost its core; quiet, 2 threads are 1.6-1.8x faster than 1. OpenMP's passive
waiting only halves the collapse and costs a fifth when quiet. So a command counts the runnable processes when it
starts (``/proc/loadavg``, sampled a few times) and uses the cores they leave free, at least one.

``serve`` re-counts before every model call (:func:`adapt`). ``--threads N`` (every heavy command),
``MODALBRIDGE_THREADS`` or ``OMP_NUM_THREADS`` fix the number instead.
"""

from __future__ import annotations

import os
import statistics
import time

from modalbridge.errors import UserError

MAX_THREADS = 1024
_auto = False  # configure() chose the count from the free cores (so adapt() may change it)


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def runnable_others(samples: int = 5, interval: float = 0.002) -> int | None:
    """Other runnable tasks on the machine now (median of a few samples), or None where /proc is not readable."""
    seen = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])  # "R/T": runnable now / total
        except (OSError, ValueError, IndexError):
            return None
        seen.append(max(0, running - 1))  # this process's own thread is one of them
        if i + 1 < samples:
            time.sleep(interval)
    return int(statistics.median(seen))


def free_cores(samples: int = 5, interval: float = 0.002) -> int:
    """The cores other runnable processes leave free, at least 1 (all cores where /proc is unavailable)."""
    n, others = cores(), runnable_others(samples, interval)
    return n if others is None else max(1, n - others)


def check_threads(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise UserError(f"--threads must be an integer in 1..{MAX_THREADS}, got {n!r}")
    return n


def configure(n: int | None = None) -> int:
    """Set PyTorch's intra-op threads: ``n``, else ``MODALBRIDGE_THREADS``/``OMP_NUM_THREADS`` if set, else
    :func:`free_cores`. Returns the number in use."""
    import torch

    global _auto
    _auto = False
    if n is None:
        env = os.environ.get("MODALBRIDGE_THREADS") or os.environ.get("OMP_NUM_THREADS")
        if env:
            try:
                n = int(env)
            except ValueError:
                raise UserError(f"MODALBRIDGE_THREADS/OMP_NUM_THREADS must be an integer, got {env!r}") from None
        else:
            n, _auto = free_cores(), True
    torch.set_num_threads(check_threads(n))
    return torch.get_num_threads()


def adapt() -> int:
    """For long-lived processes (``serve``): before each model call, re-count the free cores if the count was
    chosen automatically (about 1 ms). Returns the threads in use."""
    import torch

    if _auto:
        n = free_cores(samples=3, interval=0.0005)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
    return torch.get_num_threads()
