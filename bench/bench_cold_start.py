"""Cold start of the real commands as processes, next to ``python -c "import torch"`` on the same machine.

Each repetition runs, in turn: ``python -c "import torch"``, ``modalbridge draw "a dress"``, ``modalbridge caption
one.png`` (a generated 64x64 PNG) and ``modalbridge classify "a dress"`` (default embedded models, offline), each
as a fresh ``python -m modalbridge`` process. Interleaving the sides means a change in the machine's load hits all
of them alike. Prints per command the median wall time, its spread (min..max) and the ratio of the medians to the
torch import, plus the load average before and after; also checks that no command imported transformers or a
heavy training/UI module (gradio, lightning, mlflow, wandb, tensorboard).

    .venv/bin/python bench/bench_cold_start.py [--reps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import loadavg, report, summary  # bench/common.py

HEAVY = ("transformers", "gradio", "lightning", "pytorch_lightning", "lightning_fabric", "mlflow", "wandb",
         "tensorboard", "tensorboardX", "torch.utils.tensorboard")
# Runs the CLI in-process, then reports (on exit) which heavy modules were imported on stderr.
PROBE = (
    "import atexit, runpy, sys\n"
    f"HEAVY = {HEAVY!r}\n"
    "atexit.register(lambda: print('HEAVY:' + ','.join(h for h in HEAVY if h in sys.modules), file=sys.stderr))\n"
    "sys.argv = ['modalbridge'] + sys.argv[1:]\n"
    "runpy.run_module('modalbridge', run_name='__main__')\n"
)


def run(argv: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    heavy = [line[6:] for line in p.stderr.splitlines() if line.startswith("HEAVY:")]
    return dt, heavy[-1] if heavy else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every process (default: unset)")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="mb-cold-"))
    from PIL import Image  # only the bench itself; the measured processes start fresh

    png = tmp / "one.png"
    Image.new("RGB", (64, 64), (120, 40, 160)).save(png)
    py = sys.executable
    cmds = {
        "import torch": [py, "-c", "import torch"],
        "draw": [py, "-c", PROBE, "draw", "a dress", "--out", str(tmp / "draw")],
        "caption": [py, "-c", PROBE, "caption", str(png)],
        "classify": [py, "-c", PROBE, "classify", "a dress"],
    }
    for argv in cmds.values():  # warm the page cache once; not timed
        run(argv, env)
    before = loadavg()
    times: dict[str, list[float]] = {k: [] for k in cmds}
    heavy: dict[str, set[str]] = {k: set() for k in cmds}
    for _ in range(args.reps):
        for name, argv in cmds.items():
            dt, h = run(argv, env)
            times[name].append(dt)
            heavy[name].update(x for x in h.split(",") if x)
    after = loadavg()
    base = statistics.median(times["import torch"])
    print(f"cpus={os.cpu_count()} reps={args.reps} OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')} "
          f"python={sys.version.split()[0]}")
    print(f"load average before: {before}   after: {after}")
    print(f"{'command':14s} {'median s':>9s} {'min..max s':>14s} {'x torch':>8s}  heavy modules")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:14s} {med:9.2f} {min(ts):6.2f}..{max(ts):<6.2f} {med / base:8.2f}  "
              f"{','.join(sorted(heavy[name])) or '-'}")
    report("cold_start", reps=args.reps, seconds={k: summary(v) for k, v in times.items()},
           ratio={k: statistics.median(v) / base for k, v in times.items()}, load_before=before, load_after=after)
    bad = {k: v for k, v in heavy.items() if v}
    assert not bad, f"heavy modules imported on a command path: {bad}"


if __name__ == "__main__":
    main()
