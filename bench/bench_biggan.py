"""BigGAN-deep-128 throughput on CPU: modalbridge's generator vs the reference port (pytorch_pretrained_biggan).

Both models hold the same random full-size weights (spectral-norm vectors from a power iteration, random standing
statistics) and get identical inputs in one process; runs alternate between the two so that load on the machine
hits both alike (the order rotates every repetition). Prints images/s for each (median and spread), the ratio per
repetition (goal >= 1.0x), the load average before and after, and asserts that every output of ours equals the
reference's to 1e-4 (the same function, computed with another order of operations).

    .venv/bin/python bench/bench_biggan.py [--batch 4] [--iters 5] [--truncation 0.4] [--threads N]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import interleave, loadavg, report, speedups, spread, summary  # bench/common.py

from modalbridge.generators.biggan import BigGAN, BigGANConfig, truncated_noise


def build_pair(seed: int = 0):
    import pytorch_pretrained_biggan as ppb  # test/bench-only dependency

    torch.manual_seed(seed)
    ref = ppb.BigGAN(ppb.BigGANConfig()).eval()
    with torch.no_grad():
        sd = ref.state_dict()
        for name, t in sd.items():
            if name.endswith("weight_orig"):
                mat, u, v = t.flatten(1), sd[name[:-4] + "u"], sd[name[:-4] + "v"]
                v.copy_(F.normalize(mat.t() @ u, dim=0))
                u.copy_(F.normalize(mat @ v, dim=0))
            elif name.endswith("running_means"):
                t.normal_(0.0, 0.5)
            elif name.endswith("running_vars"):
                t.uniform_(0.5, 2.0)
        ref.generator.bn.weight.fill_(1.0)  # the reference leaves these two uninitialised
        ref.generator.bn.bias.zero_()
    with torch.device("meta"):
        ours = BigGAN(BigGANConfig.published(128))
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    return ref, ours.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--truncation", type=float, default=0.4)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ref, ours = build_pair()
    labels = torch.arange(args.batch) * 97 % 1000
    z = truncated_noise(args.batch, 128, args.truncation, seed=0)
    onehot = F.one_hot(labels, 1000).float()
    runs = {
        "reference": lambda: ref(z, onehot, args.truncation),
        "modalbridge": lambda: ours(z, ours.embed(labels), args.truncation),
    }
    with torch.inference_mode():
        for fn in runs.values():  # warm-up (allocator, oneDNN primitives, weight caches)
            fn()
        before = loadavg()
        times, outs = interleave(runs, args.iters)
        after = loadavg()
    diff = max((r - o).abs().max().item() for r, o in zip(outs["reference"], outs["modalbridge"], strict=True))
    assert diff < 1e-4, f"outputs differ by {diff:.2e}"
    ratios = speedups(times["reference"], times["modalbridge"])
    print(f"BigGAN-deep-128, batch {args.batch}, truncation {args.truncation}, {torch.get_num_threads()} threads, "
          f"{args.iters} interleaved batches each; load average before {before}, after {after}")
    ips = {k: [args.batch / t for t in ts] for k, ts in times.items()}
    for k, v in ips.items():
        print(f"  {k:12s} {spread(v, fmt='.2f')} images/s")
    print(f"  speed-up     {spread(ratios, fmt='.2f')}x   max |difference| {diff:.2e} (asserted < 1e-4)")
    report("biggan", batch=args.batch, threads=torch.get_num_threads(), reps=args.iters,
           ours_images_s=summary(ips["modalbridge"]), reference_images_s=summary(ips["reference"]),
           ratio=summary(ratios), max_diff=diff, load_before=before, load_after=after)


if __name__ == "__main__":
    main()
