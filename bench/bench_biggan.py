"""BigGAN-deep-128 throughput on CPU: modalbridge's generator vs the reference port (pytorch_pretrained_biggan).

Both models hold the same random full-size weights (spectral-norm vectors from a power iteration, random standing
statistics) and get identical inputs in one process; runs alternate between the two so that load on the machine
hits both alike. Prints images/s for each, the ratio (goal >= 1.0x) and the largest output difference.

    .venv/bin/python bench/bench_biggan.py [--batch 4] [--iters 3] [--truncation 0.4] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

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
    ap.add_argument("--iters", type=int, default=3)
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
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        outs = {k: fn() for k, fn in runs.items()}  # warm-up (allocator, oneDNN primitives, weight caches)
        for _ in range(args.iters):
            for k, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    diff = (outs["reference"] - outs["modalbridge"]).abs().max().item()
    print(f"BigGAN-deep-128, batch {args.batch}, truncation {args.truncation}, {torch.get_num_threads()} threads, "
          f"{args.iters} timed batches each (median)")  # fmt: skip
    ips = {}
    for k, ts in times.items():
        ips[k] = args.batch / statistics.median(ts)
        print(f"  {k:12s} {ips[k]:7.2f} images/s   ({', '.join(f'{t:.2f}s' for t in ts)})")
    print(f"  speed-up     {ips['modalbridge'] / ips['reference']:.2f}x   max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
