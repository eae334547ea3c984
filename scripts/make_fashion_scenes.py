"""Generate the fashion scenes captioning dataset (PNG scenes + captions.jsonl) from Fashion-MNIST.

    python scripts/make_fashion_scenes.py [--out data/fashion_scenes] [--train 10000] [--val 1000] [--test 1000]

Deterministic: the same arguments give the same bytes. An existing complete directory is reused.
"""

from __future__ import annotations

import argparse
import time

from modalbridge.captioning import fashion_scenes
from modalbridge.errors import script_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/fashion_scenes")
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out = fashion_scenes.generate(args.out, args.train, args.val, args.test, args.seed, progress=True)
    print(f"fashion scenes in {out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    script_main(main)
